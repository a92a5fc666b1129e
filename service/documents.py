"""Whole documents from the index's database, newest first, for the long_context strategy.

The database keeps chunks, not documents; chunks are verbatim, in-order substrings with character offsets,
so a document is their union (overlaps removed). Documents are read a page at a time and cached until an
ingest commits a new index version.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from sqlalchemy import func, select

from core.db import ChunkRow, DocumentRow, session_factory

PAGE = 64


@dataclass(frozen=True)
class Document:
    doc_id: str
    source: str
    title: str
    date: dt.date
    text: str


def join_chunks(chunks: list[tuple[int, int, str]]) -> str:
    """(start, end, text) chunks in order -> the document text, overlaps removed, gaps as one newline."""
    out: list[str] = []
    covered = -1
    for start, end, text in chunks:
        if covered < 0:
            out.append(text)
        elif start < covered:
            out.append(text[covered - start :])
        else:
            out.append("\n" + text)
        covered = max(covered, end)
    return "".join(out)


class DocumentStore:
    def __init__(self, database_url: str) -> None:
        self.sessions = session_factory(database_url)
        self._lock = threading.Lock()
        self._version = -1
        self._pages: dict[int, list[Document]] = {}
        self._total = 0

    def _reset(self, version: int) -> None:
        if version != self._version:
            self._version, self._pages = version, {}
            with self.sessions() as session:
                self._total = session.scalar(select(func.count(DocumentRow.id))) or 0

    def count(self, version: int) -> int:
        with self._lock:
            self._reset(version)
            return self._total

    def newest_first(self, version: int) -> Iterator[Document]:
        """Documents by date, newest first (then by id, so that the order is stable)."""
        page = 0
        while True:
            with self._lock:
                self._reset(version)
                if page not in self._pages:
                    self._pages[page] = self._read_page(page)
                docs = self._pages[page]
            yield from docs
            if len(docs) < PAGE:
                return
            page += 1

    def _read_page(self, page: int) -> list[Document]:
        with self.sessions() as session:
            rows = session.scalars(
                select(DocumentRow)
                .order_by(DocumentRow.date.desc(), DocumentRow.id)
                .offset(page * PAGE)
                .limit(PAGE)
            ).all()
            ids = [r.id for r in rows]
            chunks: dict[str, list[tuple[int, int, int, str]]] = {i: [] for i in ids}
            for c in session.execute(
                select(ChunkRow.doc_id, ChunkRow.ordinal, ChunkRow.start, ChunkRow.end, ChunkRow.text).where(
                    ChunkRow.doc_id.in_(ids)
                )
            ):
                chunks[c.doc_id].append((c.ordinal, c.start, c.end, c.text))
        docs = []
        for r in rows:
            parts = [(s, e, t) for _, s, e, t in sorted(chunks[r.id])]
            docs.append(Document(r.id, r.source, r.title, r.date, join_chunks(parts)))
        return docs
