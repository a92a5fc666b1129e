"""`POST /ask {question, strategy}`: one strategy, `auto` (routed per question), or `compare` for all of
them side by side.

With `stream: true` the answer comes as server-sent events, sources before the first token:

    event: route     auto only, first: {chosen, tried, reason} (service.api_schemas.Route)
    event: sources   {strategy, model, checkpoint_id, index_version, retrieve_ms, sources, coverage}
    event: token     {"text": "..."}                  (repeated)
    event: answer    the full Answer: final text, citations, usage, latency, abstained
    event: error     the error envelope, if generation fails midway

`compare` with `stream: true` runs every strategy at once and interleaves their events on one stream, each
event's data carrying `"strategy"`; a strategy that cannot start sends its own `error` event, and the
others go on.

For rag the final `answer` may differ from the streamed tokens: the support check runs on the whole
answer and may replace it with ABSTAIN_ANSWER (`abstained`, and the model's text in `model_text`); so
may auto's check of its long-context fallback, whose final `answer.route` adds that try's outcome.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from service.api_schemas import STRATEGIES, Answer, AskRequest, CompareResponse, StrategyName
from service.deps import MetricsDep, SettingsDep, StrategiesDep
from service.errors import APIError
from service.metrics import Metrics
from service.security import ApiKey, resolve_max_tokens
from service.strategies import AnswerStream, Strategies

router = APIRouter(tags=["ask"], dependencies=[ApiKey])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event(name: str, data: str) -> bytes:
    return f"event: {name}\ndata: {data}\n\n".encode()


# Documented, so that a client (and schemathesis) expects the event stream that `stream: true` returns:
# the schema is one event's (chat completions send `data:` lines only).
SSE_EVENT = {
    "type": "object",
    "required": ["data"],
    "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
}
SSE = {"text/event-stream": {"schema": SSE_EVENT}}
STREAMED: dict[int | str, dict[str, Any]] = {200: {"content": SSE}}


@router.post("/ask", response_model=Answer | CompareResponse, responses=STREAMED)
async def ask(
    body: AskRequest, strategies: StrategiesDep, settings: SettingsDep, metrics: MetricsDep
) -> Answer | CompareResponse | StreamingResponse:
    max_tokens = resolve_max_tokens(settings, body.max_tokens)
    if body.strategy == "compare":
        if body.stream:
            merged = compare_events(strategies, metrics, body.question, max_tokens, body.k)
            return StreamingResponse(merged, media_type="text/event-stream", headers=SSE_HEADERS)
        result = await strategies.compare(body.question, max_tokens=max_tokens, k=body.k)
        for answer in result.answers.values():
            if isinstance(answer, Answer):
                metrics.record_answer(answer)
        return result
    if not body.stream:
        answer = await strategies.answer(body.strategy, body.question, max_tokens=max_tokens, k=body.k)
        metrics.record_answer(answer)
        return answer

    stream = await strategies.start(body.strategy, body.question, max_tokens=max_tokens, k=body.k)

    async def events() -> AsyncIterator[bytes]:
        async for name, data in answer_events(stream, metrics):
            yield event(name, json.dumps(data))

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)


async def answer_events(stream: AnswerStream, metrics: Metrics) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """One answer's events, as (name, data): route (auto), sources, tokens, the answer or an error."""
    p = stream.prepared
    try:
        if stream.route is not None:
            yield "route", stream.route.model_dump(mode="json")
        yield (
            "sources",
            {
                "strategy": p.strategy,
                "model": p.model,
                "checkpoint_id": stream.checkpoint_id,
                "index_version": p.index_version,
                "retrieve_ms": round(p.retrieve_ms, 3),
                "sources": [c.model_dump(mode="json") for c in p.sources],
                "coverage": p.coverage.model_dump(mode="json") if p.coverage else None,
            },
        )
        async for piece in stream:
            yield "token", {"text": piece}
        answer = stream.answer
        metrics.record_answer(answer)
        yield "answer", answer.model_dump(mode="json")
    except APIError as e:
        yield "error", e.body()
    finally:
        await stream.aclose()


async def compare_events(
    strategies: Strategies, metrics: Metrics, question: str, max_tokens: int, k: int | None
) -> AsyncIterator[bytes]:
    """Every strategy's events as they come, each tagged with its strategy."""
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def pump(name: StrategyName) -> None:
        try:
            stream = await strategies.start(name, question, max_tokens=max_tokens, k=k)
            async for kind, data in answer_events(stream, metrics):
                await queue.put(event(kind, json.dumps({"strategy": name, **data})))
        except APIError as e:
            await queue.put(event("error", json.dumps({"strategy": name, **e.body()})))
        finally:
            await queue.put(None)

    tasks = [asyncio.create_task(pump(name)) for name in STRATEGIES]
    try:
        for _ in tasks:
            while (item := await queue.get()) is not None:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
