"""`POST /ask {question, strategy}`: one strategy, `auto` (routed per question), or `compare` for all of
them side by side.

With `stream: true` the answer comes as server-sent events, sources before the first token:

    event: route     auto only, first: {chosen, tried, reason} (service.api_schemas.Route)
    event: sources   {strategy, model, checkpoint_id, index_version, retrieve_ms, sources, coverage}
    event: token     {"text": "..."}                  (repeated)
    event: answer    the full Answer: final text, citations, usage, latency, abstained
    event: error     the error envelope, if generation fails midway

For rag the final `answer` may differ from the streamed tokens: the support check runs on the whole
answer and may replace it with ABSTAIN_ANSWER (`abstained`, and the model's text in `model_text`); so
may auto's check of its long-context fallback, whose final `answer.route` adds that try's outcome.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from service.api_schemas import Answer, AskRequest, CompareResponse
from service.deps import MetricsDep, SettingsDep, StrategiesDep
from service.errors import APIError, BadRequest
from service.security import ApiKey, resolve_max_tokens

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
            raise BadRequest("compare does not stream: send stream=false", param="stream")
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
    p = stream.prepared
    sources = {
        "strategy": p.strategy,
        "model": p.model,
        "checkpoint_id": stream.checkpoint_id,
        "index_version": p.index_version,
        "retrieve_ms": round(p.retrieve_ms, 3),
        "sources": [c.model_dump(mode="json") for c in p.sources],
        "coverage": p.coverage.model_dump(mode="json") if p.coverage else None,
    }

    route = stream.route

    async def events() -> AsyncIterator[bytes]:
        try:
            if route is not None:
                yield event("route", route.model_dump_json())
            yield event("sources", json.dumps(sources))
            async for piece in stream:
                yield event("token", json.dumps({"text": piece}))
            answer = stream.answer
            metrics.record_answer(answer)
            yield event("answer", answer.model_dump_json())
        except APIError as e:
            yield event("error", json.dumps(e.body()))
        finally:
            await stream.aclose()

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)
