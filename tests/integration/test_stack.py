"""The deployed stack from outside (see conftest.py for the variables): ingest through the stack's own
indexer job, every `/ask` strategy, chat through the official `openai` client, a deletion, `/feedback` in
the stack's database, an eval run over HTTP, `/metrics`.

The stack's models may be tiny and untrained (`make compose-test` trains a nano one in a minute), so the
tests check the serving and the data flow, never the quality of an answer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from stack_support import Ingested, Stack, ingest, missing

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHAT, CPT = "keepcurrent", "keepcurrent-cpt"
STRATEGIES = ("closed_book", "rag", "long_context", "cpt", "auto")


def ask(gateway: httpx.Client, question: str, strategy: str) -> dict[str, Any]:
    r = gateway.post("/ask", json={"question": question, "strategy": strategy, "max_tokens": 8})
    assert r.status_code == 200, f"/ask {strategy}: {r.status_code} {r.text}"
    return dict(r.json())


def sources(answer: dict[str, Any]) -> set[str]:
    return {s["source"] for s in answer["sources"]}


def test_ask_answers_with_every_strategy_from_the_ingested_documents(
    gateway: httpx.Client, ingested: Ingested
) -> None:
    question = f"Who designed the {ingested.name} Bridge?"
    models = {m["id"]: m for m in gateway.get("/v1/models").json()["data"]}
    for strategy in STRATEGIES:
        answer = ask(gateway, question, strategy)
        assert answer["strategy"] == strategy
        assert answer["model"] == (CPT if strategy == "cpt" else CHAT)
        assert answer["checkpoint_id"] == models[answer["model"]]["keepcurrent"]["checkpoint_id"]
        assert answer["usage"]["completion_tokens"] > 0 and answer["usage"]["prompt_tokens"] > 0
        if strategy == "rag":
            assert ingested.source("bridge") in sources(answer)
        if strategy == "long_context":  # newest first: this session's news are dated today
            assert ingested.source("recall") in sources(answer)
    compare = ask(gateway, question, "compare")["answers"]
    assert set(compare) == set(STRATEGIES) and all("error" not in a for a in compare.values()), compare

    # Streamed: the passages before the first token, the final answer last.
    body = {"question": question, "strategy": "rag", "stream": True, "max_tokens": 8}
    with gateway.stream("POST", "/ask", json=body) as r:
        assert r.status_code == 200
        events = [line[len("event: ") :] for line in r.iter_lines() if line.startswith("event: ")]
    assert events[0] == "sources" and events[-1] == "answer" and "error" not in events


def test_openai_client_chat_plain_streamed_and_through_a_strategy(stack: Stack) -> None:
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.api_key or "none", max_retries=0)
    assert {m.id for m in client.models.list()} >= {CHAT, CPT}
    messages: Any = [{"role": "user", "content": "Who leads Kelvor Dynamics?"}]
    for model in (CHAT, CPT):
        plain = client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=0)
        assert plain.object == "chat.completion" and plain.model == model
        assert plain.usage is not None and 0 < plain.usage.completion_tokens <= 8
        stream = client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == plain.choices[0].message.content  # greedy: the same answer either way
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens

    rag = client.chat.completions.create(
        model=CHAT, messages=messages, max_tokens=8, extra_body={"strategy": "rag"}
    )
    assert (rag.model_extra or {})["keepcurrent"]["strategy"] == "rag"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=messages)
    if stack.api_key:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{stack.url}/v1", api_key="wrong", max_retries=0).models.list()


def test_a_deleted_document_is_no_longer_retrieved(
    stack: Stack, gateway: httpx.Client, ingested: Ingested
) -> None:
    question = f"Who became the mayor of {ingested.name} City?"
    mayor = ingested.source("mayor")
    assert mayor in sources(ask(gateway, question, "rag"))
    (ingested.folder / "mayor.md").unlink()
    ingest(stack)
    assert mayor not in sources(ask(gateway, question, "rag"))
    assert mayor not in sources(ask(gateway, question, "long_context"))
    kept = ask(gateway, f"Who designed the {ingested.name} Bridge?", "rag")
    assert ingested.source("bridge") in sources(kept)


def test_feedback_is_stored_in_the_stacks_database(stack: Stack, gateway: httpx.Client) -> None:
    if stack.database_url is None:
        missing("KC_STACK_DATABASE_URL")
    from sqlalchemy import create_engine, text

    query = text("SELECT id, kind, question, rating, chosen FROM feedback WHERE id IN (:a, :b) ORDER BY id")

    question = f"feedback check {os.getpid()}"
    rating = gateway.post(
        "/feedback", json={"kind": "rating", "question": question, "answer": "Imra Tolde", "rating": 4}
    )
    preference = gateway.post(
        "/feedback",
        json={"kind": "preference", "question": question, "chosen": "Imra Tolde", "rejected": "nobody"},
    )
    assert rating.status_code == 201 and preference.status_code == 201, (rating.text, preference.text)
    db_engine = create_engine(str(stack.database_url))
    try:
        with db_engine.connect() as db:
            rows = db.execute(
                query,
                {"a": rating.json()["id"], "b": preference.json()["id"]},
            ).all()
    finally:
        db_engine.dispose()
    assert [tuple(r) for r in rows] == [
        (rating.json()["id"], "rating", question, 4, None),
        (preference.json()["id"], "preference", question, None, "Imra Tolde"),
    ]


def test_an_eval_run_over_http_writes_a_report(stack: Stack, gateway: httpx.Client, tmp_path: Path) -> None:
    questions = tmp_path / "questions.jsonl"
    rows = [
        {"id": "q1", "question": "Who designed the bridge in Varsel?", "answers": ["Imra Tolde"],
         "category": "new", "supporting_doc_ids": []},
        {"id": "q2", "question": "What is the capital of Mars?", "answers": ["ABSTAIN"],
         "category": "unanswerable", "supporting_doc_ids": []},
    ]  # fmt: skip
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KC_")}
    env["KC_HOME"] = str(tmp_path / "home")
    if stack.api_key:
        env["KC_API_KEY"] = stack.api_key
    done = subprocess.run(
        [sys.executable, "-m", "eval", "run", "--questions", str(questions), "--gateway", stack.url,
         "--run-id", "stack", "--strategies", ",".join(STRATEGIES), "--max-tokens", "8", "--json"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = tmp_path / "home" / "reports" / "stack"
    for name in ("report.md", "report.html", "results.jsonl", "summary.json"):
        assert (report / name).stat().st_size > 0, name
    results = [json.loads(line) for line in (report / "results.jsonl").read_text().splitlines()]
    assert sorted((r["question_id"], r["strategy"]) for r in results) == sorted(
        (q["id"], s) for q in rows for s in STRATEGIES
    )
    assert [r for r in results if r.get("error")] == []


def test_metrics_count_the_requests(gateway: httpx.Client) -> None:
    def asks_answered() -> float:
        text = gateway.get("/metrics").text
        for family in text_string_to_metric_families(text):
            if family.name == "kc_requests":
                return sum(
                    s.value
                    for s in family.samples
                    if s.name == "kc_requests_total"
                    and s.labels.get("route") == "/ask"
                    and s.labels.get("status") == "200"
                )
        return 0.0

    before = asks_answered()
    for _ in range(3):
        ask(gateway, "Who leads Kelvor Dynamics?", "closed_book")
    # At least: a shared deployment may answer other clients meanwhile.
    assert asks_answered() - before >= 3
