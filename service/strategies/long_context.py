"""long_context: the documents themselves, newest first, packed into the model's window as numbered passages.

No retrieval: the prompt holds every document that fits (the window less the question, the prompt
format and max_tokens), newest first; the first one that does not fit is cut to the space left and
packing stops there, so the prompt covers one contiguous stretch of time. The answer reports `coverage`:
how many of the corpus's documents fit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

from core.prompts import ABSTAIN_ANSWER, citations, grounded_messages, passage
from service.api_schemas import Citation, Coverage, StrategyName
from service.documents import Document
from service.engines import find_card
from service.errors import BadRequest
from service.strategies.base import Finished, Prepared, StrategyContext, is_abstention

PASSAGE_OVERHEAD = 4  # "[12] " and the newline around a passage, in tokens, to be safe
MIN_CUT_TOKENS = 32  # a cut document shorter than this is not worth its place
SNIPPET = 300


def _shown(doc: Document, text: str) -> str:
    """The document (or the part of it that fits) as a dated passage."""
    return passage(text, doc.title, doc.date)


class LongContext:
    name: StrategyName = "long_context"

    def __init__(self, ctx: StrategyContext) -> None:
        self.ctx = ctx
        self._counts: dict[tuple[str, str], int] = {}

    async def _count(self, model: str, doc: Document) -> int:
        key = (model, doc.doc_id)
        if key not in self._counts:
            if len(self._counts) > 100_000:
                self._counts.clear()
            tokens = await self.ctx.engine.tokenize(model, text=" ".join(_shown(doc, doc.text).split()))
            self._counts[key] = len(tokens) + PASSAGE_OVERHEAD
        return self._counts[key]

    def documents(self, question: str, version: int) -> Iterator[Document]:
        """The documents in packing order: newest first. The eval harness overrides it to place the
        answer's document at a chosen position among a chosen number of others ("lost in the middle")."""
        return self.ctx.documents.newest_first(version)

    async def prepare(self, question: str, *, model: str | None, k: int | None, max_tokens: int) -> Prepared:
        start = time.perf_counter()
        model = model or self.ctx.chat_model
        engine = self.ctx.engine
        version = await asyncio.to_thread(lambda: self.ctx.retriever.version)
        total = await asyncio.to_thread(self.ctx.documents.count, version)
        base = len(await engine.tokenize(model, messages=grounded_messages(question, [])))
        window = find_card(engine.models(), model).context_window  # after a tokenize: vllm learns it then
        limit = min(window - max_tokens, self.ctx.settings.max_prompt_tokens)  # prompt tokens allowed
        budget = limit - base
        if budget <= 0:
            raise BadRequest(
                f"the question ({base} tokens with the prompt format) and max_tokens ({max_tokens}) leave no "
                f"room for documents in the {window}-token window (KC_MAX_PROMPT_TOKENS="
                f"{self.ctx.settings.max_prompt_tokens}): shorten the question or lower max_tokens",
                code="context_length_exceeded",
            )
        packed: list[tuple[Document, str]] = []
        truncated = False
        used = 0
        docs = self.documents(question, version)
        while budget > 0:
            doc = await asyncio.to_thread(next, docs, None)
            if doc is None:
                break
            need = await self._count(model, doc)
            if used + need <= budget:
                packed.append((doc, doc.text))
                used += need
                continue
            room = budget - used - PASSAGE_OVERHEAD
            if room >= MIN_CUT_TOKENS:
                # Characters in proportion to the tokens left, with a margin; checked exactly below.
                keep = int(len(doc.text) * room / need * 0.9)
                packed.append((doc, doc.text[:keep]))
                truncated = True
            break
        messages = grounded_messages(question, [_shown(d, text) for d, text in packed])
        # The per-document counts are close but not exact (tokens may merge across a boundary): check.
        while packed and len(await engine.tokenize(model, messages=messages)) > limit:
            packed.pop()
            truncated = False
            messages = grounded_messages(question, [_shown(d, text) for d, text in packed])
        full = len(packed) - (1 if truncated else 0)
        sources = [
            Citation(n=n, doc_id=d.doc_id, source=d.source, title=d.title, date=d.date, text=text[:SNIPPET])
            for n, (d, text) in enumerate(packed, start=1)
        ]
        coverage = Coverage(
            documents_packed=full,
            documents_total=total,
            fraction=round(full / total, 4) if total else 1.0,
            truncated_document=truncated,
            oldest_packed=packed[-1][0].date if packed else None,
            prompt_budget_tokens=max(budget, 0),
        )
        reason = None
        if total == 0:
            reason = "the index is empty: ingest documents first (python -m indexer ingest DIR)"
        elif not packed:
            reason = f"no document fits in the {limit}-token prompt budget beside the question"
        return Prepared(
            self.name, question, model, messages, max_tokens, sources=sources,
            retrieve_ms=(time.perf_counter() - start) * 1000, index_version=version, coverage=coverage,
            abstain_reason=reason,
        )  # fmt: skip

    def finish(self, prepared: Prepared, text: str) -> Finished:
        text = text.strip()
        if is_abstention(text):
            return Finished(ABSTAIN_ANSWER, [], True, "the model said the documents do not say")
        by_n = {c.n: c for c in prepared.sources}
        cited = [by_n[n] for n in dict.fromkeys(citations(text)) if n in by_n]
        return Finished(text, cited, False)
