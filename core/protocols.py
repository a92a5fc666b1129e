"""Interfaces the other packages depend on, so that the service never imports a concrete indexer class."""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

from core.schemas import SearchHit, SearchMode


class Retrieval(NamedTuple):
    """One search with what it was made of: the hits; the dense cosine similarity of each hit that the
    dense half ranked (chunk id → cosine; none for a hit only BM25 found, nor in mode "bm25"); and the
    index version searched (0: the index is empty)."""

    hits: list[SearchHit]
    cosines: dict[int, float]
    version: int


@runtime_checkable
class Retriever(Protocol):
    """Finds the chunks most relevant to a query."""

    @property
    def version(self) -> int:
        """The index version the next search will read (bumped by every ingest commit)."""
        ...

    def search(self, query: str, k: int = 5, mode: SearchMode = "hybrid") -> list[SearchHit]:
        """`retrieve(query, k, mode).hits`."""
        ...

    def retrieve(
        self, query: str, k: int = 5, mode: SearchMode = "hybrid", *, version: int | None = None
    ) -> Retrieval:
        """The search, the cosines and the version in one call: the index state is read once.

        `version`, one the caller read earlier in the same request, is searched without reading the
        state again while it is the one loaded (a newer commit is picked up by the next request)."""
        ...
