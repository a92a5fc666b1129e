"""The HTTP surface in-process: chat, models, tokenize, feedback, health, metrics, auth and limits."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from gateway_support import make_app
from pydantic import SecretStr

from service.feedback import FeedbackStore
from service.settings import ServiceSettings

CHAT = {"model": "keepcurrent", "messages": [{"role": "user", "content": "Who leads Kelvor Dynamics?"}]}


def assert_envelope(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"} and error["message"]
    if code is not None:
        assert error["code"] == code, error
    return dict(error)


def test_chat_completion(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 5, "seed": 1, "temperature": 0.7})
    body = r.json()
    assert r.status_code == 200 and body["object"] == "chat.completion" and body["model"] == "keepcurrent"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] in ("stop", "length")
    assert body["usage"]["completion_tokens"] <= 5
    assert (
        body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )
    assert body["keepcurrent"] is None  # no strategy: plain chat


def test_chat_stream(client: TestClient) -> None:
    body = {**CHAT, "max_tokens": 6, "stream": True, "stream_options": {"include_usage": True}}
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        datas = [line[len("data: ") :] for line in r.iter_lines() if line.startswith("data: ")]
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(d) for d in datas[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    finish = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finish) == 1
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] <= 6
    plain = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 6}).json()
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == plain["choices"][0]["message"]["content"]  # greedy: the same answer either way


def test_models_tokenize_health(client: TestClient, nano_model: Path) -> None:
    window = json.loads((nano_model / "config.json").read_text())["max_position_embeddings"]
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["keepcurrent"]
    meta = models["data"][0]["keepcurrent"]
    assert meta == {
        "role": "chat",
        "checkpoint_id": "sft/nano-service",
        "context_window": window,
        "phase": "sft",
    }
    tok = client.post("/tokenize", json={"prompt": "Kelvor Dynamics"}).json()
    assert tok["count"] == len(tok["tokens"]) > 0 and tok["max_model_len"] == window
    chat = client.post("/tokenize", json={"messages": CHAT["messages"]}).json()
    assert chat["count"] > tok["count"]
    assert_envelope(client.post("/tokenize", json={}), 400, "invalid_request")
    assert_envelope(client.post("/tokenize", json={"prompt": "x", "model": "nope"}), 404, "model_not_found")
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["index_version"] >= 1 and ready["queue_depth"] == 0


def test_feedback_is_stored(client: TestClient, indexed: ServiceSettings) -> None:
    r = client.post(
        "/feedback",
        json={"kind": "rating", "question": "q", "answer": "a", "rating": 4, "strategy": "rag"},
    )
    assert r.status_code == 201 and r.json()["kind"] == "rating"
    pref = {
        "kind": "preference",
        "question": "q",
        "chosen": "good",
        "rejected": "bad",
        "model": "keepcurrent",
    }
    assert client.post("/feedback", json=pref).status_code == 201
    rows = FeedbackStore(indexed.resolved_database_url).all()
    assert [(r.kind, r.rating, r.chosen, r.rejected, r.strategy) for r in rows] == [
        ("rating", 4, None, None, "rag"),
        ("preference", None, "good", "bad", None),
    ]
    assert_envelope(client.post("/feedback", json={**pref, "kind": "vote"}), 400)
    assert_envelope(client.post("/feedback", json={"kind": "rating", "question": "q", "answer": "a"}), 400)


def test_metrics(client: TestClient) -> None:
    client.post("/ask", json={"question": "Who leads Kelvor Dynamics?", "strategy": "rag", "max_tokens": 3})
    client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 3})
    client.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
    text = client.get("/metrics").text
    assert 'kc_requests_total{method="POST",route="/ask",status="200"} 1.0' in text
    assert 'kc_requests_total{method="POST",route="/v1/chat/completions",status="404"} 1.0' in text
    assert 'kc_request_duration_seconds_bucket{le="0.005",route="/ask"}' in text
    assert 'kc_tokens_total{kind="completion",model="keepcurrent"}' in text
    assert 'kc_strategy_phase_seconds_count{phase="retrieve",strategy="rag"} 1.0' in text
    assert "kc_queue_depth 0.0" in text and "kc_running_requests 0.0" in text


def test_api_key(indexed: ServiceSettings, embedder: Any, caplog: pytest.LogCaptureFixture) -> None:
    secret = "kc-test-secret-123"
    settings = indexed.model_copy(update={"api_key": SecretStr(secret)})
    caplog.set_level(logging.DEBUG)
    with TestClient(make_app(settings, embedder)) as client:
        assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
        for path in ("/v1/models", "/metrics"):
            r = client.get(path)
            assert_envelope(r, 401, "missing_api_key")
            assert r.headers["www-authenticate"] == "Bearer"
        wrong = client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer nope"})
        assert_envelope(wrong, 401, "invalid_api_key")
        assert secret not in wrong.text
        assert_envelope(client.get("/v1/models", headers={"Authorization": secret}), 401)
        ok = {"Authorization": f"Bearer {secret}"}
        assert client.get("/v1/models", headers=ok).status_code == 200
        assert (
            client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 2}, headers=ok).status_code == 200
        )
    assert secret not in caplog.text and secret not in repr(settings)


def test_limits(indexed: ServiceSettings, embedder: Any) -> None:
    settings = indexed.model_copy(
        update={"max_body_bytes": 2048, "max_messages": 3, "max_tokens_limit": 16, "max_prompt_tokens": 64}
    )
    with TestClient(make_app(settings, embedder)) as client:
        huge = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
        assert_envelope(client.post("/v1/chat/completions", json=huge), 413, "request_too_large")
        chunked = client.post(
            "/v1/chat/completions",
            content=iter([json.dumps(huge).encode()]),
            headers={"content-type": "application/json"},
        )
        assert_envelope(chunked, 413, "request_too_large")
        many = {**CHAT, "messages": CHAT["messages"] * 4}
        assert (
            "KC_MAX_MESSAGES"
            in assert_envelope(client.post("/v1/chat/completions", json=many), 400)["message"]
        )
        over = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 17})
        assert "KC_MAX_TOKENS_LIMIT" in assert_envelope(over, 400)["message"]
        long_prompt = {**CHAT, "messages": [{"role": "user", "content": "word " * 300}]}
        error = assert_envelope(client.post("/v1/chat/completions", json=long_prompt), 400)
        assert error["code"] == "context_length_exceeded" and "KC_MAX_PROMPT_TOKENS" in error["message"]


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"temperature": 3}, "temperature"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"strategy": "magic"}, "strategy"),
        ({"max_tokens": 0}, "max_tokens"),
    ],
)
def test_bad_chat_requests(client: TestClient, change: dict[str, Any], param: str) -> None:
    error = assert_envelope(
        client.post("/v1/chat/completions", json={**CHAT, **change}), 400, "invalid_request"
    )
    assert error["param"] == param


def test_bad_requests_in_general(client: TestClient) -> None:
    assert_envelope(client.get("/nowhere"), 404)
    assert_envelope(client.get("/v1/chat/completions"), 405)
    bad_json = client.post("/ask", content=b"{not json", headers={"content-type": "application/json"})
    assert "not valid JSON" in assert_envelope(bad_json, 400)["message"]
    assert_envelope(client.post("/ask", json={"question": "  "}), 400)
    assert_envelope(client.post("/ask", json={"question": "q", "strategy": "everything"}), 400)
    strategy_on_assistant = {
        **CHAT,
        "strategy": "rag",
        "messages": [*CHAT["messages"], {"role": "assistant"}],
    }
    assert_envelope(client.post("/v1/chat/completions", json=strategy_on_assistant), 400)
