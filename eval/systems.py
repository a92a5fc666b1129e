"""Systems the eval harness runs beside the gateway's strategies, built from the same parts.

- `NaiveRag`, the reference system: plain dense top-3 retrieval with the same embedder, index and model,
  no hybrid search, no relevance gate, no support check. Every gain `rag` claims over it is then a ratio
  measured in one run. It uses the same grounded prompt format as `rag` (the one the model was trained
  on), so what differs is exactly retrieval and the abstention logic. It lives here, not in the gateway:
  it is a yardstick, not a way users should be answered.
- `PlacedLongContext`, `long_context` with the answer's document placed at a chosen position among a
  chosen number of documents, for the "lost in the middle" sweep (Liu et al. 2023). It reuses the
  strategy's packing and prompt; only the order of the documents differs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, NamedTuple

from core.prompts import citations, grounded_messages
from core.protocols import Retriever
from service.api_schemas import Citation
from service.documents import Document
from service.strategies import StrategyContext
from service.strategies.base import is_abstention
from service.strategies.long_context import LongContext

NAIVE_K = 3


class NaivePrompt(NamedTuple):
    """What `NaiveRag.prepare` made: the messages, the retrieved passages as citations, the retrieval
    milliseconds and the index version searched (0: empty index, no passages)."""

    messages: list[dict[str, str]]
    sources: list[Citation]
    retrieve_ms: float
    index_version: int


class NaiveRag:
    name = "naive_rag"

    def __init__(self, retriever: Retriever, k: int = NAIVE_K) -> None:
        self.retriever = retriever
        self.k = k

    def prepare(self, question: str) -> NaivePrompt:
        """The prompt over the top k dense passages, from one read of the index state."""
        start = time.perf_counter()
        found = self.retriever.retrieve(question, self.k, "dense")
        sources = [
            Citation(n=n, doc_id=h.doc_id, source=h.source, title=h.title, date=h.date, chunk_id=h.chunk_id,
                     score=h.score, text=h.text)
            for n, h in enumerate(found.hits, start=1)
        ]  # fmt: skip
        messages = grounded_messages(question, [h.text for h in found.hits])
        return NaivePrompt(messages, sources, (time.perf_counter() - start) * 1000, found.version)

    @staticmethod
    def finish(text: str, sources: list[Citation]) -> dict[str, Any]:
        """The answer fields: the model's text as it is, and the passages it cites."""
        by_n = {c.n: c for c in sources}
        cited = [by_n[n] for n in dict.fromkeys(citations(text)) if n in by_n]
        return {
            "text": text.strip(),
            "abstained": is_abstention(text),
            "citations": [c.model_dump(mode="json") for c in cited],
            "sources": [c.model_dump(mode="json") for c in sources],
        }


class PlacedLongContext(LongContext):
    """`long_context` over `n_docs` documents with the gold one at `position` (0 = first, 1 = last).

    `gold` maps a question's text to the sources of its supporting documents; the distractors are the
    newest other documents. The packing may still drop documents that do not fit the window: the result
    rows record where the answer actually was."""

    def __init__(self, ctx: StrategyContext, n_docs: int, position: float, gold: dict[str, set[str]]) -> None:
        super().__init__(ctx)
        self.n_docs = n_docs
        self.position = position
        self.gold = gold

    def documents(self, question: str, version: int) -> Iterator[Document]:
        want = self.gold.get(question, set())
        docs = list(self.ctx.documents.newest_first(version))
        golds = [d for d in docs if d.source in want][:1]
        others = [d for d in docs if d.source not in want][: self.n_docs - len(golds)]
        at = round(self.position * len(others))
        return iter([*others[:at], *golds, *others[at:]])
