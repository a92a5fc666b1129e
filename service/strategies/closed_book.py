"""closed_book: the chat model alone, as trained (the baseline: what the model knew at its cutoff)."""

from __future__ import annotations

from core.answers import is_abstention
from core.prompts import closed_book_messages
from service.api_schemas import StrategyName
from service.strategies.base import Finished, Prepared, StrategyContext


class ClosedBook:
    name: StrategyName = "closed_book"

    def __init__(self, ctx: StrategyContext) -> None:
        self.ctx = ctx

    def model(self, requested: str | None) -> str:
        return requested or self.ctx.chat_model

    async def prepare(self, question: str, *, model: str | None, k: int | None, max_tokens: int) -> Prepared:
        return Prepared(self.name, question, self.model(model), closed_book_messages(question), max_tokens)

    def finish(self, prepared: Prepared, text: str) -> Finished:
        return Finished(text.strip(), [], is_abstention(text))
