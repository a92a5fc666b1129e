"""Interfaces the other packages depend on, so that the service never imports a concrete indexer class."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from core.schemas import SearchHit, SearchMode


@runtime_checkable
class Retriever(Protocol):
    """Finds the chunks most relevant to a query."""

    @property
    def version(self) -> int:
        """The index version the next search will read (bumped by every ingest commit)."""
        ...

    def search(self, query: str, k: int = 5, mode: SearchMode = "hybrid") -> list[SearchHit]: ...
