"""`POST /v1/chat/completions`: OpenAI-compatible, plain or streamed (SSE), optionally through a strategy.

`model` picks the model (GET /v1/models). The extension field `strategy` answers the last user turn
through closed_book, rag, long_context, cpt or auto: the strategy builds the prompt for that turn (earlier
turns are kept before it) and the response carries `keepcurrent` with citations, latencies and versions.
With auto, `keepcurrent.route` says which route answered and why; streamed, the first chunk (the
assistant role, before any content) already carries it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from core.engine import Chunk, Generation, SamplingParams
from core.prompts import Message
from service.api_schemas import (
    AnswerMeta,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionMessage,
    ChatCompletionRequest,
    Choice,
    ChoiceDelta,
    ChunkChoice,
    FinishReason,
    Usage,
    completion_id,
)
from service.deps import EngineDep, MetricsDep, SettingsDep, StrategiesDep
from service.engines import find_card
from service.errors import APIError, BadRequest
from service.metrics import Metrics
from service.routes.ask import STREAMED
from service.security import ApiKey, check_messages, resolve_max_tokens
from service.strategies import AnswerStream

router = APIRouter(tags=["chat"], dependencies=[ApiKey])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _refuse_unsupported(body: ChatCompletionRequest) -> None:
    """Refuse what this server cannot honour, rather than silently ignore it."""
    problems = {
        "n": body.n not in (None, 1),
        "tools": bool(body.tools) or body.tool_choice not in (None, "none", "auto"),
        "logprobs": bool(body.logprobs) or body.top_logprobs is not None,
        "logit_bias": bool(body.logit_bias),
        "frequency_penalty": bool(body.frequency_penalty),
        "presence_penalty": bool(body.presence_penalty),
        "response_format": body.response_format is not None and body.response_format.type != "text",
    }
    for field, bad in problems.items():
        if bad:
            raise BadRequest(f"{field} is not supported by this server: leave it unset", param=field)


def _messages(body: ChatCompletionRequest) -> list[Message]:
    return [
        {"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages
    ]


def sse(data: str) -> bytes:
    return f"data: {data}\n\n".encode()


def _error_event(err: APIError) -> bytes:
    return sse(json.dumps(err.body()))


class _Reply:
    """One chat completion in progress: a plain generation, or a strategy's answer stream."""

    def __init__(self, model: str, generation: Generation | None, answer: AnswerStream | None) -> None:
        self.model = model
        self.generation = generation
        self.answer = answer
        self.last = Chunk("")  # plain generation: the last chunk has the finish reason and token counts

    async def pieces(self) -> AsyncIterator[str]:
        if self.answer is not None:
            async for text in self.answer:
                yield text
            return
        assert self.generation is not None
        async for chunk in self.generation:
            self.last = chunk
            if chunk.text:
                yield chunk.text

    async def aclose(self) -> None:
        for handle in (self.answer, self.generation):
            if handle is not None:
                await handle.aclose()

    def usage(self) -> Usage:
        if self.answer is not None:
            return self.answer.answer.usage
        c = self.last
        return Usage(
            prompt_tokens=c.prompt_tokens,
            completion_tokens=c.completion_tokens,
            total_tokens=c.prompt_tokens + c.completion_tokens,
        )

    def finish_reason(self) -> FinishReason:
        if self.answer is not None:
            return self.answer.answer.finish_reason
        return "length" if self.last.finish_reason == "length" else "stop"

    def meta(self) -> AnswerMeta | None:
        if self.answer is None:
            return None
        a = self.answer.answer
        return AnswerMeta(
            strategy=a.strategy, checkpoint_id=a.checkpoint_id, abstained=a.abstained, citations=a.citations,
            sources=a.sources, latency=a.latency, index_version=a.index_version, coverage=a.coverage,
            route=a.route,
        )  # fmt: skip

    def route_meta(self, checkpoint_id: str) -> AnswerMeta | None:
        """auto: the route, known before the first token (the first streamed chunk carries it)."""
        if self.answer is None or self.answer.route is None:
            return None
        return AnswerMeta(strategy="auto", checkpoint_id=checkpoint_id, route=self.answer.route)

    def record(self, metrics: Metrics) -> None:
        if self.answer is not None:
            metrics.record_answer(self.answer.answer)
        else:
            u = self.usage()
            metrics.record_tokens(self.model, u.prompt_tokens, u.completion_tokens)


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses=STREAMED)
async def chat_completions(
    body: ChatCompletionRequest,
    engine: EngineDep,
    strategies: StrategiesDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> ChatCompletion | StreamingResponse:
    _refuse_unsupported(body)
    check_messages(settings, len(body.messages))
    max_tokens = resolve_max_tokens(settings, body.max_completion_tokens, body.max_tokens)
    find_card(engine.models(), body.model)
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=body.temperature if body.temperature is not None else 0.0,
        top_p=body.top_p if body.top_p is not None else 1.0,
        stop=tuple(s for s in body.stop_list() if s),
        seed=body.seed,
        ignore_eos=body.ignore_eos,
    )
    messages = _messages(body)
    if body.strategy is None:
        reply = _Reply(body.model, await engine.submit(body.model, messages, params), None)
    else:
        if messages[-1]["role"] != "user":
            raise BadRequest(
                "a strategy answers the last user turn, but the last message is from "
                f"{messages[-1]['role']!r}",
                param="messages",
            )
        answer = await strategies.start(
            body.strategy, messages[-1]["content"], max_tokens=max_tokens, model=body.model, params=params,
            history=[m for m in messages[:-1] if m["role"] != "system"],
        )  # fmt: skip
        reply = _Reply(answer.prepared.model, None, answer)
    checkpoint_id = find_card(engine.models(), reply.model).checkpoint_id
    cid, created = completion_id(), int(time.time())

    if not body.stream:
        try:
            text = "".join([piece async for piece in reply.pieces()])
        finally:
            await reply.aclose()
        reply.record(metrics)
        if reply.answer is not None:
            text = reply.answer.answer.text  # after the strategy's checks (rag may abstain)
        choice = Choice(
            index=0, message=ChatCompletionMessage(content=text), finish_reason=reply.finish_reason()
        )
        return ChatCompletion(
            id=cid, created=created, model=reply.model, choices=[choice], usage=reply.usage(),
            system_fingerprint=checkpoint_id, keepcurrent=reply.meta(),
        )  # fmt: skip

    include_usage = bool(body.stream_options and body.stream_options.include_usage)

    def chunk(
        delta: ChoiceDelta, finish: FinishReason | None = None, meta: AnswerMeta | None = None
    ) -> bytes:
        c = ChatCompletionChunk(
            id=cid, created=created, model=reply.model,
            choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish)], keepcurrent=meta,
        )  # fmt: skip
        return sse(c.model_dump_json())

    async def events() -> AsyncIterator[bytes]:
        try:
            yield chunk(ChoiceDelta(role="assistant", content=""), meta=reply.route_meta(checkpoint_id))
            async for piece in reply.pieces():
                yield chunk(ChoiceDelta(content=piece))
            reply.record(metrics)
            yield chunk(ChoiceDelta(), reply.finish_reason(), reply.meta())
            if include_usage:
                c = ChatCompletionChunk(
                    id=cid, created=created, model=reply.model, choices=[], usage=reply.usage()
                )
                yield sse(c.model_dump_json())
            yield sse("[DONE]")
        except APIError as e:
            yield _error_event(e)
        finally:
            await reply.aclose()

    return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)
