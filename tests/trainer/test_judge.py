"""The RLAIF judge: parsing of judgments, retries and errors against a scripted HTTP server, and one run
end to end against our own gateway serving a nano chat model."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from trainer.judge import DEFAULT_CONSTITUTION, Judge, judge_messages, parse_judgment

ROOT = Path(__file__).resolve().parents[2]
PROMPT = [
    {"role": "system", "content": "Answer in a few words."},
    {"role": "user", "content": "Who leads Kelvor?"},
]


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("Score: 7\nConcise and cited.", 0.7),
        ("**Score:** 9/10", 0.9),
        ("The score is 10.", 1.0),
        ("rating: 4/5", 0.8),
        ("I would give it 3 out of 10.", 0.3),
        ("6 - concise, but no citation", 0.6),
        ("Score: 7.5", 0.75),
        ("Score (0-10): 8.", 0.8),
        ("Grade: B+", 0.75 + 1 / 12),
        ("A", 1.0),
        ("F.", 0.0),
        ("Score: 0", 0.0),
    ],
)
def test_parse_a_grade(reply: str, score: float) -> None:
    got, how = parse_judgment(reply)
    assert got == pytest.approx(score) and how


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        ("", "empty reply"),
        ("Score: N (0 to 10)", "no grade"),
        ("A good answer.", "no grade"),
        ("2025 was the year it launched", "no grade"),
        ("Score: 15", "outside 0-10"),
        ("85", "outside 0-10"),
        ("Score: -2", "no grade"),
        ("The answer is: Korme\n\nThe score is: 0 to 10.", "no grade"),  # SmolLM2-135M's reply
    ],
)
def test_no_grade_is_none_with_the_reason(reply: str, why: str) -> None:
    got, how = parse_judgment(reply)
    assert got is None and why in how


def test_the_judge_sees_principles_conversation_and_answer() -> None:
    system, user = judge_messages(DEFAULT_CONSTITUTION.read_text(), PROMPT, "Orvan Teel [1]")
    assert "Cites the passage" in system["content"] and "Score: N" in system["content"]
    assert "[user]\nWho leads Kelvor?" in user["content"] and user["content"].index("Orvan Teel [1]") > 0


class Scripted(ThreadingHTTPServer):
    """An OpenAI-shaped server that answers chat requests with a script of (status, judgment) replies."""

    def __init__(self, script: list[tuple[int, str]]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(BaseHTTPRequestHandler):
    server: Scripted

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("retry-after-ms", "10")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(200, {"object": "list", "data": [{"id": "judge", "object": "model", "created": 0,
                                                     "owned_by": "test"}]})  # fmt: skip

    def do_POST(self) -> None:
        self.server.requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        status, text = self.server.script.pop(0) if self.server.script else (200, "Score: 5")
        if status != 200:
            self._send(status, {"error": {"message": text, "type": "x", "code": str(status)}})
            return
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        self._send(200, {"id": "c", "object": "chat.completion", "created": 0, "model": "judge",
                         "choices": [choice]})  # fmt: skip

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def scripted() -> Iterator[Any]:
    servers: list[Scripted] = []

    def start(script: list[tuple[int, str]]) -> Scripted:
        servers.append(Scripted(script))
        return servers[-1]

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def test_retries_429_and_503_then_logs_every_judgment(scripted: Any, tmp_path: Path) -> None:
    server = scripted([(429, "slow down"), (503, "busy"), (200, "Score: 8\nGood."),
                       (200, "Looks fine to me."), (400, "prompt too long")])  # fmt: skip
    log = tmp_path / "logs" / "judge.jsonl"
    judge = Judge(server.url, "judge", DEFAULT_CONSTITUTION, log_path=log, workers=1)
    assert judge.score([PROMPT], ["Orvan Teel [1]"]) == [0.8]
    assert len(server.requests) == 3  # two refusals retried with backoff, then the answer
    assert server.requests[-1]["temperature"] == 0 and server.requests[-1]["model"] == "judge"
    assert judge.score([PROMPT, PROMPT], ["Orvan Teel", "Sta Ind"]) == [0.5, 0.5]  # unparseable, refused
    assert judge.counts == {"judged": 3, "parsed": 1, "unparseable": 1, "refused": 1}
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["judgment"], r["score"], r["parsed"]) for r in records] == [
        ("Score: 8\nGood.", 0.8, True), ("Looks fine to me.", 0.5, False), (None, 0.5, False)]  # fmt: skip
    assert "no grade" in records[1]["reason"] and "prompt too long" in records[2]["reason"]
    assert records[0]["messages"] == judge_messages(judge.constitution, PROMPT, "Orvan Teel [1]")


def test_clear_errors(scripted: Any, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionError, match="unreachable"):
        Judge(f"http://127.0.0.1:{port}/v1", "judge", DEFAULT_CONSTITUTION, retries=0)
    server = scripted([(503, "busy")] * 3)
    with pytest.raises(ValueError, match="does not serve 'gpt-9'"):
        Judge(server.url, "gpt-9", DEFAULT_CONSTITUTION)
    with pytest.raises(ConnectionError, match="still answers 503 after 1 retries"):
        Judge(server.url, "judge", DEFAULT_CONSTITUTION, retries=1).score([PROMPT], ["x"])
    with pytest.raises(ValueError, match=r"constitution file .* not found"):
        Judge(server.url, "judge", tmp_path / "none.md")
    (tmp_path / "blank.md").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        Judge(server.url, "judge", tmp_path / "blank.md")


@pytest.mark.slow
@pytest.mark.integration
def test_judge_against_our_gateway(gateway: str, nano_world: Path, tmp_path: Path) -> None:
    """A real model's judgments, whatever they say: every answer gets a score in [0, 1], and every judge
    prompt and raw reply is in the log. (A nano judge rarely writes a grade: the point is the pipeline.)"""
    rows = [json.loads(line) for line in (nano_world / "prefs" / "stale.jsonl").read_text().splitlines()[:2]]
    prompts = [r["prompt"] for r in rows for _ in range(2)]
    answers = [a for r in rows for a in (r["chosen"], r["rejected"])]
    # The nano model's window is 1024 tokens: short principles leave room for the passages.
    constitution = tmp_path / "short.md"
    constitution.write_text("1. Grounded in the passages.\n2. Cites the passage.\n3. Concise.\n")
    log = tmp_path / "judge.jsonl"
    judge = Judge(gateway, "keepcurrent", constitution, log_path=log, max_tokens=16)
    scores = judge.score(prompts, answers)
    assert len(scores) == 4 and all(0 <= s <= 1 for s in scores)
    assert judge.counts["judged"] == 4 and judge.counts["refused"] == 0
    assert judge.counts["parsed"] + judge.counts["unparseable"] == 4
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 4 and all(isinstance(r["judgment"], str) for r in records)
    assert all("Cites the passage" in r["messages"][0]["content"] for r in records)
    assert {r["messages"][1]["content"].rsplit("The assistant's answer:\n\n", 1)[1].split("\n\n")[0]
            for r in records} == set(answers)  # fmt: skip
