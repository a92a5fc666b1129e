"""Many requests at once: every one is answered or refused with 429 (Retry-After), none is lost or hangs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from gateway_support import make_app, running_app

from service.settings import ServiceSettings

pytestmark = pytest.mark.anyio


def chat(i: int, max_tokens: int) -> dict[str, Any]:
    return {
        "model": "keepcurrent",
        "messages": [{"role": "user", "content": f"Tell me about city {i}."}],
        "max_tokens": max_tokens,
        "ignore_eos": True,  # every answer takes max_tokens steps: the queue really fills
    }


async def test_overload_refuses_with_429_and_loses_nothing(indexed: ServiceSettings, embedder: Any) -> None:
    settings = indexed.model_copy(update={"max_batch_size": 2, "queue_size": 2, "retry_after_s": 2})
    n = 12
    async with running_app(make_app(settings, embedder)) as client:
        responses = await asyncio.wait_for(
            asyncio.gather(*(client.post("/v1/chat/completions", json=chat(i, 150)) for i in range(n))),
            timeout=120,
        )
        statuses = [r.status_code for r in responses]
        assert len(statuses) == n and set(statuses) <= {200, 429}, statuses
        answered = [r.json() for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code == 429]
        assert len(answered) >= 2 and refused, statuses  # batch of 2 + queue of 2 fit; the rest do not
        for r in refused:
            assert r.headers["retry-after"] == "2"
            assert (
                r.json()["error"]["type"] == "rate_limit_error"
                and "KC_QUEUE_SIZE" in r.json()["error"]["message"]
            )
        assert all(a["usage"]["completion_tokens"] == 150 for a in answered)
        # Afterwards the gateway is idle again and answers.
        assert (await client.post("/v1/chat/completions", json=chat(0, 2))).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert (
            f'kc_requests_total{{method="POST",route="/v1/chat/completions",status="429"}} {len(refused)}.0'
            in metrics
        )


async def test_concurrent_requests_within_capacity_all_answered(
    indexed: ServiceSettings, embedder: Any
) -> None:
    settings = indexed.model_copy(update={"max_batch_size": 4, "queue_size": 16})
    n = 16
    async with running_app(make_app(settings, embedder)) as client:

        async def one(i: int) -> Any:
            if i % 4 == 3:
                return await client.post("/ask", json={"question": f"city {i}?", "strategy": "closed_book"})
            return await client.post("/v1/chat/completions", json=chat(i, 10 + i))

        responses = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(n))), timeout=120)
        assert [r.status_code for r in responses] == [200] * n
        for i, r in enumerate(responses):
            if i % 4 != 3:
                assert r.json()["usage"]["completion_tokens"] == 10 + i  # each its own max_tokens


async def test_a_full_engine_refuses_rag_before_it_retrieves(indexed: ServiceSettings, embedder: Any) -> None:
    """Under overload the refused requests must not do the expensive part: retrieval for a request the
    engine then refuses made throughput collapse at 128 clients (bench/load.py)."""
    settings = indexed.model_copy(update={"max_batch_size": 1, "queue_size": 0, "retry_after_s": 3})
    app = make_app(settings, embedder)
    async with running_app(app) as client:
        retrieved: list[str] = []
        retrieve = app.state.retriever.retrieve

        def spy(question: str, *args: Any, **kwargs: Any) -> Any:
            retrieved.append(question)
            return retrieve(question, *args, **kwargs)

        app.state.retriever.retrieve = spy
        busy = asyncio.create_task(client.post("/v1/chat/completions", json=chat(0, 150)))
        while app.state.engine.running() == 0:  # the one batch slot is taken
            assert not busy.done(), busy.result().text
            await asyncio.sleep(0.01)
        for strategy in ("rag", "long_context", "auto"):
            refused = await client.post(
                "/ask", json={"question": "Who leads Kelvor Dynamics?", "strategy": strategy}
            )
            assert refused.status_code == 429 and refused.headers["retry-after"] == "3", refused.text
        assert retrieved == []
        assert (await busy).status_code == 200
        answered = await client.post(
            "/ask", json={"question": "Who leads Kelvor Dynamics?", "strategy": "rag"}
        )
        assert answered.status_code == 200 and retrieved
