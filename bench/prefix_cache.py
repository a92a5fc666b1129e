"""The embedded engine's prefix cache on long_context's workload, measured side by side in one run:

    python bench/prefix_cache.py --model DIR --docs WORLD/docs_post --questions WORLD/questions/new.jsonl \
        [--window 2048] [--limit 12] [--concurrency 4] [--max-tokens 16]

Each question is asked as long_context asks it: the documents newest first, as dated numbered passages,
packed into `--window` prompt tokens, the question after them. The same questions go to two engines on
the same model, one with `KC_PREFIX_CACHE_MB=0` (the plain batched prefill: every request prefills its
whole prompt) and one with the cache on, in alternating order (off, on, on, off) to cancel drift on a
shared machine. Printed: wall time per side, p50 latency, the tokens the cache skipped, the ratio, and
whether the greedy answers agree (they must: the cached rows are the same keys and values).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from core.engine import SamplingParams, complete
from core.loaders import read_files
from core.prompts import Message, grounded_messages, passage
from service.engines.embedded import EmbeddedEngine
from service.served_models import ModelSpec


def packed_messages(engine: EmbeddedEngine, question: str, docs: list[Any], window: int) -> list[Message]:
    """The documents, newest first, as many as fit the window (whole ones only), then the question."""
    worker = engine.worker("m")
    shown: list[str] = []
    for doc in docs:
        trial = [*shown, passage(doc.text, doc.title, doc.date)]
        if len(worker.encode(grounded_messages(question, trial), None, True)) > window:
            break
        shown = trial
    return grounded_messages(question, shown)


async def one_side(
    model: Path, cache_mb: int, questions: list[str], docs: list[Any], args: argparse.Namespace
) -> dict[str, Any]:
    engine = EmbeddedEngine([ModelSpec("m", "chat", path=model)], max_batch=8, prefix_cache_mb=cache_mb)
    await engine.start()
    try:
        prompts = [packed_messages(engine, q, docs, args.window) for q in questions]
        tokens = [len(engine.worker("m").encode(p, None, True)) for p in prompts]
        gate = asyncio.Semaphore(args.concurrency)
        latencies: list[float] = []

        async def ask(messages: list[Message]) -> str:
            async with gate:
                start = time.perf_counter()
                params = SamplingParams(max_tokens=args.max_tokens)
                answer = await complete(engine, "m", messages, params)
                latencies.append(time.perf_counter() - start)
                return answer.text

        start = time.perf_counter()
        answers = await asyncio.gather(*(ask(p) for p in prompts))
        wall = time.perf_counter() - start
        cache = engine.worker("m").prefix
        return {
            "cache_mb": cache_mb,
            "wall_s": wall,
            "p50_s": statistics.median(latencies),
            "prompt_tokens": statistics.mean(tokens),
            "reused_tokens": cache.reused_tokens if cache else 0,
            "hits": cache.hits if cache else 0,
            "answers": answers,
        }
    finally:
        await engine.aclose()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="a chat checkpoint directory")
    ap.add_argument("--docs", type=Path, required=True, help="the documents long_context packs")
    ap.add_argument("--questions", type=Path, required=True, help="a questions .jsonl")
    ap.add_argument("--window", type=int, default=2048, help="prompt tokens (KC_MAX_PROMPT_TOKENS)")
    ap.add_argument("--limit", type=int, default=12)
    ap.add_argument("--concurrency", type=int, default=4, help="questions in flight (the eval's default)")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--cache-mb", type=int, default=1024)
    ap.add_argument("--out", type=Path, default=Path("bench/out/prefix_cache.json"))
    args = ap.parse_args()

    docs = [d for read in read_files([args.docs]) for d in read.documents]
    docs.sort(key=lambda d: (d.date, d.uri), reverse=True)
    rows = [json.loads(line) for line in args.questions.read_text().splitlines() if line.strip()]
    questions = [r["question"] for r in rows[: args.limit]]

    sides: dict[int, list[dict[str, Any]]] = {0: [], args.cache_mb: []}
    for cache_mb in (0, args.cache_mb, args.cache_mb, 0):
        result = await one_side(args.model, cache_mb, questions, docs, args)
        sides[cache_mb].append(result)
        print(f"  cache {cache_mb:>5} MB: {result['wall_s']:6.1f} s wall, p50 {result['p50_s']:5.1f} s, "
              f"{result['hits']} hits, {result['reused_tokens']} tokens reused", flush=True)  # fmt: skip

    off, on = sides[0], sides[args.cache_mb]
    wall_off = statistics.mean(r["wall_s"] for r in off)
    wall_on = statistics.mean(r["wall_s"] for r in on)
    same = sum(a == b for a, b in zip(off[0]["answers"], on[0]["answers"], strict=True))
    print()
    print(f"long_context, {len(questions)} questions, ~{off[0]['prompt_tokens']:.0f} prompt tokens each, "
          f"concurrency {args.concurrency}, {args.max_tokens} new tokens at most")  # fmt: skip
    print("| prefix cache | wall (mean of 2) | p50 latency | prompt tokens prefilled |")
    print("|---|---|---|---|")
    prefilled_on = len(questions) * on[0]["prompt_tokens"] - on[0]["reused_tokens"]
    print(f"| off | {wall_off:.1f} s | {statistics.mean(r['p50_s'] for r in off):.1f} s | "
          f"{len(questions) * off[0]['prompt_tokens']:.0f} |")  # fmt: skip
    print(f"| on ({args.cache_mb} MB) | {wall_on:.1f} s | {statistics.mean(r['p50_s'] for r in on):.1f} s | "
          f"{prefilled_on:.0f} |")  # fmt: skip
    print(f"speed-up: {wall_off / wall_on:.2f}x wall; greedy answers identical: {same} of {len(questions)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "questions": len(questions), "window": args.window, "wall_off_s": wall_off, "wall_on_s": wall_on,
        "speedup": wall_off / wall_on, "identical_answers": same, "sides": sides,
    }  # fmt: skip
    args.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
