"""bench/load.py: how it classifies a response (answered, refused, lost), on canned streams; then the script
itself at toy scale against the embedded target, as a subprocess: it must exit 0, lose nothing and write
every figure. No timing thresholds: what the figures say is for a quiet machine."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "load.py"
sys.path.insert(0, str(ROOT))

from bench.load import Outcome, one_request, request_body, summarise  # noqa: E402

ASK_OK = (
    b'event: sources\ndata: {"sources": []}\n\n'
    b'event: token\ndata: {"text": "Korme"}\n\n'
    b'event: answer\ndata: {"text": "Korme", "usage": {"completion_tokens": 3}}\n\n'
)
CHAT_OK = (
    b'data: {"choices": [{"delta": {"role": "assistant", "content": ""}}]}\n\n'
    b'data: {"choices": [{"delta": {"content": "Kor"}}]}\n\n'
    b'data: {"choices": [{"delta": {"content": "me"}}]}\n\n'
    b'data: {"choices": [{"delta": {}, "finish_reason": "length"}]}\n\n'
    b'data: {"choices": [], "usage": {"completion_tokens": 2}}\n\n'
    b"data: [DONE]\n\n"
)
SSE = {"content-type": "text/event-stream"}


def outcome(workload: str, respond: Callable[[httpx.Request], httpx.Response]) -> Outcome:
    async def go() -> Outcome:
        async with httpx.AsyncClient(transport=httpx.MockTransport(respond)) as http:
            return await one_request(http, "http://gateway", workload, request_body(workload, "q?", 4))

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("workload", "status", "headers", "body", "kind", "tokens"),
    [
        ("ask", 200, SSE, ASK_OK, "answered", 3),
        ("chat", 200, SSE, CHAT_OK, "answered", 2),
        ("ask", 429, {"Retry-After": "2"}, b'{"error": {}}', "refused", 0),
        ("chat", 429, {}, b'{"error": {}}', "lost", 0),  # a 429 must say when to come back
        ("chat", 503, {}, b'{"error": {}}', "lost", 0),
        ("ask", 200, SSE, ASK_OK.rsplit(b"event: answer", 1)[0], "lost", 0),  # cut before its answer
        ("chat", 200, SSE, CHAT_OK.replace(b"data: [DONE]\n\n", b""), "lost", 0),
        ("ask", 200, SSE, b'event: error\ndata: {"error": {"message": "boom"}}\n\n', "lost", 0),
        ("chat", 200, SSE, b'data: {"error": {"message": "boom"}}\n\n', "lost", 0),
    ],
)
def test_one_request_classifies(
    workload: str, status: int, headers: dict[str, str], body: bytes, kind: str, tokens: int
) -> None:
    got = outcome(workload, lambda request: httpx.Response(status, headers=headers, content=body))
    assert got.kind == kind, got
    assert got.tokens == tokens
    if kind == "refused":
        assert got.retry_after == 2
    if kind == "answered":
        assert got.ttft is not None and 0 < got.ttft <= got.e2e


def test_a_dropped_connection_is_lost() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("connection reset", request=request)

    assert outcome("chat", respond).kind == "lost"


def test_summary_counts_and_percentiles() -> None:
    out = [Outcome("answered", 0.005 * i, 0.01 * i, 4) for i in range(101)]  # e2e 0, 10, ..., 1000 ms
    out += [Outcome("refused", retry_after=1), Outcome("lost", reason="ReadError")]
    s = summarise(out, 2.0)
    assert (s["sent"], s["answered"], s["refused"], s["lost"]) == (103, 101, 1, 1)
    assert s["lost_reasons"] == {"ReadError": 1}
    assert s["requests_per_s"] == 50.5 and s["tokens_per_s"] == 202
    assert s["e2e_ms"] == {"p50": 500.0, "p95": 950.0, "p99": 990.0}
    assert s["ttft_ms"] == {"p50": 250.0, "p95": 475.0, "p99": 495.0}


def run(out: Path, *flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(SCRIPT), "--targets", "embedded", "--max-tokens", "4", "--out", str(out)]
    proc = subprocess.run([*command, *flags], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n")
    return proc


def ordered(p: dict[str, Any]) -> None:
    assert None not in p.values(), p
    assert 0 < p["p50"] <= p["p95"] <= p["p99"], p


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for both runs: the second reuses the first's world, index and model."""
    return tmp_path_factory.mktemp("load")


@pytest.mark.slow
@pytest.mark.integration
def test_levels_at_toy_scale(out: Path) -> None:
    # Two generation slots and no queue: at 4 clients some requests get 429, and must count as refused.
    env = {**os.environ, "KC_QUEUE_SIZE": "0", "KC_MAX_BATCH_SIZE": "2"}
    proc = run(out, "--levels", "1,4", "--seconds", "4", env=env)
    assert proc.returncode == 0
    result = json.loads((out / "results.json").read_text())
    runs = result["runs"]
    assert sorted((r["target"], r["workload"], r["clients"]) for r in runs) == [
        ("embedded", w, n) for w in ("ask", "chat") for n in (1, 4)
    ]
    for r in runs:
        assert r["lost"] == 0 and r["answered"] > 0, r
        assert r["sent"] == r["answered"] + r["refused"]
        assert r["requests_per_s"] > 0 and r["tokens_per_s"] > 0
        ordered(r["ttft_ms"])
        ordered(r["e2e_ms"])
        assert all(r["ttft_ms"][q] <= r["e2e_ms"][q] for q in ("p50", "p95", "p99")), r
    assert sum(r["refused"] for r in runs if r["clients"] == 4) > 0
    assert set(result["p95_doubles_at"]) == {"embedded/ask", "embedded/chat"}
    assert result["gateway_cost"] == []
    report = (out / "report.md").read_text()
    assert report.count("| embedded ") == 4 and "p95 doubles at" in report


@pytest.mark.slow
@pytest.mark.integration
def test_soak_at_toy_scale(out: Path) -> None:
    proc = run(out, "--soak", "10", "--rate", "2")
    soak = json.loads((out / "soak.json").read_text())
    # exit 3 means that memory grew by 5% or more after the warm-up: a finding, not a broken bench
    assert proc.returncode == 0 or (proc.returncode == 3 and soak["rss_growth_pct"] >= 5)
    assert soak["lost"] == 0 and soak["answered"] > 0
    for reading in (soak["after_warmup"], soak["end"]):
        assert reading["rss_kb"] > 0 and reading["fds"] > 0
    assert isinstance(soak["rss_growth_pct"], float | int) and isinstance(soak["fd_growth_pct"], float | int)
    assert "VmRSS" in (out / "soak.md").read_text()
