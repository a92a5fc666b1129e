"""Accuracy against training budget for the tiny recipe (issue 4): how many optimizer steps the mixed
pretraining run needs before the model reads answers out of passages and recalls facts it only read.

    python bench/tiny_budget.py --out var/budget [--runs base:20000:8 wide:10000:32] \
        [--slices 2500,5000,10000,20000] [--parallel 3] [--max-minutes 30] \
        [--pretrain-flags "--chat-loss all --lr 6e-3"]

Each run `NAME:MAX_STEPS:BATCH` is one cosine schedule of MAX_STEPS steps (the tiny preset, its other
defaults), trained in slices with `--stop-at` and `--resume`, so that the checkpoint at every slice is
evaluated without changing the schedule. After each slice the checkpoint is asked, greedily:

- `grounded`: the world's `retained` questions about held-out entities, with a supporting document and two
  distractors as passages (the issue's 80% target);
- `closed_book`: the same questions without passages (the 50% target);
- `stored`: the same facts as the continuation of the sentence that states them, cut before the answer
  (whether the model holds the fact under the subject's name; closed book also needs the question to
  reach it);
- `cb_trained`: 100 of the closed-book rows it trained on (the question-answer format, memorised);
- `reading`: 300 of the world's reading drills that pretraining held out (fresh subjects: only the passage
  answers, and the model never trained on these rows), asked their last question.

Runs go side by side in processes (a GPU runs several small models at once; on a CPU give --parallel 1).
Results go to OUT/results.jsonl and a table on stdout, with the training seconds each slice took.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sh(args: list[str], log: Path) -> str:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}
    with log.open("a") as f:
        out = subprocess.run(
            args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=f, text=True, check=False
        )
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} failed ({out.returncode}); see {log}")
    return out.stdout


def heldout_reading(world: Path, out: Path) -> Path:
    """The reading drills that `trainer pretrain` holds out of the mix (its default fraction and seed)."""
    from trainer.data import read_records, split_heldout
    from trainer.pretrain import PretrainConfig

    path = out / "reading_heldout.jsonl"
    if not path.exists():
        source = world / "sft" / "reading.jsonl"
        _, held = split_heldout(read_records([source]), PretrainConfig.heldout_fraction, PretrainConfig.seed)
        lines = source.read_text(encoding="utf-8").splitlines()
        tmp = path.with_suffix(".tmp")  # written whole, then renamed: a reader never sees part of it
        tmp.write_text("".join(lines[int(r.id.rsplit(":", 1)[1]) - 1] + "\n" for r in held))
        tmp.replace(path)
    return path


def evaluate(ckpt: Path, world: Path, log: Path) -> dict[str, float]:
    py, q = sys.executable, world / "questions" / "retained.jsonl"
    probes = {
        "grounded": ["--questions", str(q), "--docs", str(world / "corpus_pre")],
        "closed_book": ["--questions", str(q)],
        "reading": ["--data", str(heldout_reading(world, log.parent)), "--limit", "300"],
        "cb_trained": ["--data", str(world / "sft" / "closed_book.jsonl"), "--limit", "100"],
    }
    scores = {}
    for name, args in probes.items():
        report = json.loads(sh([py, "-m", "trainer", "evaluate", "--model", str(ckpt), *args, "--json"], log))
        [result] = report["sets"].values()
        scores[name] = result["exact_match"]
    return {**scores, "stored": stored(ckpt, world)}


def stored(ckpt: Path, world: Path) -> float:
    """Share of the `retained` answers the model continues the sentence of its first supporting document
    with, given that sentence up to the answer and nothing before it (greedy): the fact held under the
    subject's name, where a question can reach it."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.evaluate import read_docs

    docs = read_docs(world / "corpus_pre")
    tokenizer, model = AutoTokenizer.from_pretrained(ckpt), AutoModelForCausalLM.from_pretrained(ckpt).eval()
    hits = asked = 0
    for line in (world / "questions" / "retained.jsonl").read_text().splitlines():
        q = json.loads(line)
        body = docs[q["supporting_doc_ids"][0]]
        cut = body.find(q["answers"][0])
        stem = body[: max(cut, 0)].rsplit(". ", 1)[-1].strip()
        if len(stem.split()) < 2:  # not stated, or the answer opens its sentence
            continue
        ids = tokenizer(stem, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        continuation = str(tokenizer.decode(out[0, ids.shape[1] :]))
        hits += continuation.strip().startswith(q["answers"][0])
        asked += 1
    return hits / max(asked, 1)


def run(
    spec: str, slices: list[int], world: Path, out: Path, max_minutes: float, preset: str, extra: list[str]
) -> list[dict]:
    name, max_steps, batch, *flags = spec.split(":", 3)
    extra = [*extra, *shlex.split(flags[0] if flags else "")]
    ckpt, log = out / name, out / f"{name}.log"
    rows = []
    for i, stop in enumerate(s for s in slices if s <= int(max_steps)):
        args = [sys.executable, "-m", "trainer", "pretrain", "--preset", preset,
                "--corpus", str(world / "corpus_pre"), "--mix", str(world / "sft"), "--out", str(ckpt),
                "--max-steps", max_steps, "--batch-size", batch, "--stop-at", str(stop),
                "--max-minutes", str(max_minutes), "--eval-every", "0", "--save-every", "0",
                *extra, *(["--resume"] if i else [])]  # fmt: skip
        sh(args, log)
        lineage = json.loads((ckpt / "lineage.json").read_text())
        metrics = lineage["metrics"]
        row = {"run": name, "max_steps": int(max_steps), "batch": int(batch), "step": metrics["step"],
               "train_seconds": metrics.get("elapsed_s"), **evaluate(ckpt, world, log)}  # fmt: skip
        rows.append(row)
        with (out / "results.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
        if metrics["step"] < stop:  # --max-minutes stopped it
            break
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--world", type=Path, help="a tiny world (default: generated into OUT/world)")
    p.add_argument(
        "--runs", nargs="+", default=["base:2500:8"], help="NAME:MAX_STEPS:BATCH[:PRETRAIN FLAGS of this run]"
    )
    p.add_argument("--slices", default="500,1000,2500,5000,10000,20000,40000")
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--max-minutes", type=float, default=60.0, help="training minutes per run, at most")
    p.add_argument("--preset", default="tiny", help="model preset (nano: a smoke test of this script)")
    p.add_argument("--pretrain-flags", default="", help="more `trainer pretrain` flags, for every run")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    world = a.world or a.out / "world"
    if not (world / "manifest.json").exists():
        sh(
            [
                sys.executable,
                "-m",
                "eval",
                "world",
                "--size",
                "nano" if a.preset == "nano" else "tiny",
                "--out",
                str(world),
            ],
            a.out / "world.log",
        )
    heldout_reading(world, a.out)  # once, before the runs' threads ask for it
    # transformers resolves its names lazily, and two threads importing them at once failed with
    # "cannot import name 'AutoModelForCausalLM'": resolve them here, before the threads start
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401

    slices = sorted(int(s) for s in a.slices.split(","))
    started = time.time()
    with ThreadPoolExecutor(a.parallel) as pool:
        jobs = [
            pool.submit(run, spec, slices, world, a.out, a.max_minutes, a.preset, a.pretrain_flags.split())
            for spec in a.runs
        ]
        results = [row for job in jobs for row in job.result()]
    print(
        f"\n{'run':<10} {'step':>6} {'train min':>9} {'grounded':>9} {'closed book':>11} {'reading':>8} "
        f"{'CB trained':>10} {'stored':>7}"
    )
    for r in results:
        minutes = (r["train_seconds"] or 0) / 60
        print(
            f"{r['run']:<10} {r['step']:>6} {minutes:>9.1f} {r['grounded']:>9.1%} {r['closed_book']:>11.1%} "
            f"{r['reading']:>8.1%} {r['cb_trained']:>10.1%} {r['stored']:>7.1%}"
        )
    print(f"({time.time() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
