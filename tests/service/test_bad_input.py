"""Property tests: whatever a client sends, the answer is 2xx, or 4xx with the error envelope; never 5xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from gateway_support import make_app
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.settings import ServiceSettings

ENDPOINTS = ["/v1/chat/completions", "/ask", "/tokenize", "/feedback"]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
roles = st.sampled_from(["system", "developer", "user", "assistant", "tool", "", "USER"])
contents = (
    st.text(max_size=200)
    | st.none()
    | st.integers()
    | st.lists(
        st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url"]), "text": st.text(max_size=20)})
    )
)
messages = st.lists(st.fixed_dictionaries({"role": roles, "content": contents}), max_size=5)
numbers = st.none() | st.integers(-5, 10**12) | st.floats(allow_nan=False, allow_infinity=False) | st.text()
strategies = st.sampled_from(["closed_book", "rag", "long_context", "cpt", "compare", "", "RAG", None])
chat_bodies = st.fixed_dictionaries(
    {"messages": messages},
    optional={
        "model": st.sampled_from(["keepcurrent", "", "nope", None]) | st.text(max_size=5),
        "max_tokens": numbers,
        "max_completion_tokens": numbers,
        "temperature": numbers,
        "top_p": numbers,
        "n": numbers,
        "stop": st.none() | st.text(max_size=3) | st.lists(st.text(max_size=3), max_size=6),
        "stream": st.booleans() | st.text(max_size=3),
        "seed": numbers,
        "strategy": strategies,
        "ignore_eos": st.booleans(),
        "tools": json_values,
    },
)
ask_bodies = st.fixed_dictionaries(
    {},
    optional={
        "question": st.text(max_size=300) | json_values,
        "strategy": strategies,
        "stream": st.booleans() | numbers,
        "max_tokens": numbers,
        "k": numbers,
    },
)
other_bodies = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from(["rating", "preference", "vote"]),
        "question": st.text(max_size=50),
        "answer": st.text(max_size=50) | st.none(),
        "rating": numbers,
        "chosen": st.text(max_size=20),
        "rejected": st.text(max_size=20) | st.integers(),
        "prompt": st.text(max_size=200) | st.none() | st.integers(),
        "messages": messages,
        "model": st.sampled_from(["keepcurrent", "nope"]),
    },
)


@pytest.fixture
def fuzz_client(indexed: ServiceSettings, embedder: Any) -> Iterator[TestClient]:
    small = indexed.model_copy(update={"max_tokens_limit": 8, "default_max_tokens": 4})
    with TestClient(make_app(small, embedder)) as client:
        yield client


def check(response: Any) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["message"]
        assert isinstance(error["type"], str) and "code" in error
    elif "text/event-stream" in response.headers.get("content-type", ""):
        assert '"error"' not in response.text or '"type": "server_error"' not in response.text


FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(endpoint=st.sampled_from(ENDPOINTS), body=json_values)
def test_any_json(fuzz_client: TestClient, endpoint: str, body: Any) -> None:
    check(fuzz_client.post(endpoint, json=body))


@FUZZ
@given(raw=st.binary(max_size=200), content_type=st.sampled_from(["application/json", "text/plain", ""]))
def test_any_bytes(fuzz_client: TestClient, raw: bytes, content_type: str) -> None:
    for endpoint in ENDPOINTS:
        check(fuzz_client.post(endpoint, content=raw, headers={"content-type": content_type}))


@FUZZ
@given(body=chat_bodies)
def test_chat_shaped(fuzz_client: TestClient, body: dict[str, Any]) -> None:
    check(fuzz_client.post("/v1/chat/completions", content=json.dumps(body)))


@FUZZ
@given(body=ask_bodies)
def test_ask_shaped(fuzz_client: TestClient, body: dict[str, Any]) -> None:
    check(fuzz_client.post("/ask", json=body))


@FUZZ
@given(endpoint=st.sampled_from(["/tokenize", "/feedback"]), body=other_bodies)
def test_tokenize_and_feedback_shaped(fuzz_client: TestClient, endpoint: str, body: dict[str, Any]) -> None:
    check(fuzz_client.post(endpoint, json=body))
