"""The four ways to answer a question about knowledge newer than the model, `auto` that routes between them,
and the runner that drives them.

    strategies = Strategies(StrategyContext(engine, retriever, documents, settings, "keepcurrent", None))
    answer = await strategies.answer("rag", "Who leads Kelvor Dynamics?")
    answer = await strategies.answer("auto", "Who leads Kelvor Dynamics?")   # answer.route says which

The HTTP routes and the eval harness both go through `Strategies`, so what is measured is what users get.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from core.engine import Chunk, Generation, SamplingParams
from core.prompts import ABSTAIN_ANSWER
from service.api_schemas import (
    STRATEGIES,
    Answer,
    CompareResponse,
    Latency,
    Route,
    StrategyError,
    StrategyName,
    Usage,
)
from service.engines import find_card
from service.errors import APIError, BadRequest, database_errors
from service.strategies.auto import Auto, Routed
from service.strategies.base import (
    Finished,
    Finisher,
    Prepared,
    Spent,
    Strategy,
    StrategyContext,
    with_history,
)
from service.strategies.closed_book import ClosedBook
from service.strategies.cpt import ContinuedPretraining
from service.strategies.long_context import LongContext
from service.strategies.rag import Rag

__all__ = ["AnswerStream", "Auto", "Prepared", "Strategies", "StrategyContext"]


class AnswerStream:
    """A started answer: iterate it for the text as it is generated, then read `answer`.

    `routed` (auto) is the route taken: `route` is known before the first token, and what the routes tried
    before it spent is added to the answer's usage and latency."""

    def __init__(
        self,
        strategy: Finisher,
        prepared: Prepared,
        generation: Generation | None,
        checkpoint_id: str,
        t0: float,
        routed: Routed | None = None,
    ) -> None:
        self.strategy = strategy
        self.prepared = prepared
        self.generation = generation
        self.checkpoint_id = checkpoint_id
        self.routed = routed
        self._t0 = t0
        self._t_generate = time.perf_counter()
        self._answer: Answer | None = None

    @property
    def route(self) -> Route | None:
        """auto: the route as known before the first token (the answer's adds the fallback's outcome)."""
        return self.routed.route if self.routed is not None else None

    async def __aiter__(self) -> AsyncIterator[str]:
        p = self.prepared
        if self.generation is None:
            yield ABSTAIN_ANSWER
            self._answer = self._build(ABSTAIN_ANSWER, Chunk("", "stop"), abstain_reason=p.abstain_reason)
            return
        parts: list[str] = []
        last = Chunk("")
        try:
            async for chunk in self.generation:
                if chunk.text:
                    parts.append(chunk.text)
                    yield chunk.text
                last = chunk
        finally:
            await self.generation.aclose()
        self._answer = self._build("".join(parts), last)

    def _build(self, text: str, last: Chunk, abstain_reason: str | None = None) -> Answer:
        p = self.prepared
        now = time.perf_counter()
        generate_ms = (now - self._t_generate) * 1000 if self.generation is not None else 0.0
        if abstain_reason is None:
            done = self.strategy.finish(p, text)
        else:
            done = Finished(ABSTAIN_ANSWER, [], True, abstain_reason)
        spent = self.routed.spent if self.routed is not None else Spent()
        prompt_tokens = last.prompt_tokens + spent.prompt_tokens
        completion_tokens = last.completion_tokens + spent.completion_tokens
        return Answer(
            text=done.text,
            strategy=p.strategy,
            model=p.model,
            checkpoint_id=self.checkpoint_id,
            abstained=done.abstained,
            abstain_reason=done.abstain_reason,
            citations=done.citations,
            sources=p.sources,
            usage=Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            ),
            latency=Latency(
                retrieve_ms=round(p.retrieve_ms + spent.retrieve_ms, 3),
                generate_ms=round(generate_ms + spent.generate_ms, 3),
                total_ms=round((now - self._t0) * 1000, 3),
            ),
            index_version=p.index_version,
            coverage=p.coverage,
            finish_reason="length" if last.finish_reason == "length" else "stop",
            model_text=done.model_text,
            route=self.routed.final_route(done, last) if self.routed is not None else None,
        )

    async def result(self) -> Answer:
        """Read the stream to its end without showing it and return the answer: the one drain loop, behind
        `Strategies.answer` (/ask without `stream`, and every answer of `compare`)."""
        try:
            async for _ in self:
                pass
        finally:
            await self.aclose()
        return self.answer

    async def aclose(self) -> None:
        """Cancel the generation if nobody reads it to the end (e.g. the client went away)."""
        if self.generation is not None:
            await self.generation.aclose()

    @property
    def answer(self) -> Answer:
        if self._answer is None:
            raise RuntimeError("the answer is not finished: iterate the stream first")
        return self._answer


class Strategies:
    def __init__(self, ctx: StrategyContext) -> None:
        self.ctx = ctx
        closed_book, rag, long_context, cpt = (
            ClosedBook(ctx), Rag(ctx), LongContext(ctx), ContinuedPretraining(ctx)
        )  # fmt: skip
        self.by_name: dict[StrategyName, Strategy] = {
            s.name: s for s in (closed_book, rag, long_context, cpt)
        }
        # auto composes the same instances (long_context's token counts are cached once for both).
        self.auto = Auto(ctx, rag=rag, long_context=long_context, closed_book=closed_book, cpt=cpt)

    def get(self, name: str) -> Strategy | Auto:
        if name == "auto":
            return self.auto
        if name not in self.by_name:
            raise BadRequest(
                f"unknown strategy {name!r}: use one of {', '.join(STRATEGIES)}", param="strategy"
            )
        return self.by_name[name]

    async def start(
        self,
        strategy: str | Strategy | Auto,
        question: str,
        *,
        max_tokens: int,
        model: str | None = None,
        k: int | None = None,
        params: SamplingParams | None = None,
        history: list[dict[str, str]] | None = None,
    ) -> AnswerStream:
        """Prepare the prompt and queue the generation; refusals (bad model, full queue, a database that
        cannot answer) raise here.

        `strategy` is a name, or a strategy object (the eval harness's variants of one). `history`
        (earlier chat turns) goes between the strategy's system prompt and its question. `auto` decides its
        route here: the tries before the chosen route run to their end before this returns."""
        t0 = time.perf_counter()
        if isinstance(strategy, str):
            strategy = self.get(strategy)
        if not isinstance(strategy, ClosedBook):  # no retrieval for a request the engine would refuse
            self.ctx.engine.check_room(model or self.ctx.chat_model)
        if isinstance(strategy, Auto):
            with database_errors(self.ctx.settings.resolved_database_url):
                routed = await strategy.route(
                    question, model=model, k=k, max_tokens=max_tokens, params=params, history=history
                )
            card = find_card(self.ctx.engine.models(), routed.prepared.model)
            return AnswerStream(
                routed.finisher, routed.prepared, routed.generation, card.checkpoint_id, t0, routed
            )
        with database_errors(self.ctx.settings.resolved_database_url):
            prepared = await strategy.prepare(question, model=model, k=k, max_tokens=max_tokens)
        prepared.messages = with_history(prepared.messages, history)
        card = find_card(self.ctx.engine.models(), prepared.model)
        generation = None
        if prepared.abstain_reason is None:
            generation = await self.ctx.engine.submit(
                prepared.model, prepared.messages, prepared.sampling(params)
            )
        return AnswerStream(strategy, prepared, generation, card.checkpoint_id, t0)

    async def answer(
        self,
        name: StrategyName,
        question: str,
        *,
        max_tokens: int,
        model: str | None = None,
        k: int | None = None,
    ) -> Answer:
        """`start`, then the whole answer (what /ask without `stream` returns)."""
        stream = await self.start(name, question, max_tokens=max_tokens, model=model, k=k)
        return await stream.result()

    async def compare(self, question: str, *, max_tokens: int, k: int | None = None) -> CompareResponse:
        """Every strategy and auto on the same question, side by side (one failing does not fail the
        others)."""

        async def one(name: StrategyName) -> Answer | StrategyError:
            try:
                return await self.answer(name, question, max_tokens=max_tokens, k=k)
            except APIError as e:
                return StrategyError(error=e.body()["error"])

        results = await asyncio.gather(*(one(name) for name in STRATEGIES))
        return CompareResponse(question=question, answers=dict(zip(STRATEGIES, results, strict=True)))
