"""Data shapes that cross package boundaries (indexer -> service -> eval)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, Field

SearchMode = Literal["dense", "bm25", "hybrid"]


class SourceDocument(BaseModel):
    """One document as a loader produced it, before chunking."""

    uri: str = Field(description="Where it was read: an absolute file path, with '#<id>' for a jsonl line.")
    path: str = Field(description="The file it came from (absolute).")
    source: str = Field(description="Provenance shown in citations: the jsonl 'source' field, else the path.")
    title: str
    date: dt.date
    text: str


class SearchHit(BaseModel):
    """One retrieved chunk with everything a citation needs."""

    chunk_id: int
    doc_id: str
    source: str
    title: str
    date: dt.date
    ordinal: int
    start: int = Field(description="Character offset of the chunk in its document's text.")
    end: int
    text: str
    score: float
    mode: SearchMode


class SkippedFile(BaseModel):
    path: str
    reason: str


class IngestSummary(BaseModel):
    """What one `indexer ingest` run did; counts are documents unless named otherwise."""

    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: int = 0
    chunks_embedded: int = 0
    chunks_removed: int = 0
    seconds: float = 0.0
    index_version: int = 0
    skipped_files: list[SkippedFile] = Field(default_factory=list)


class IndexStats(BaseModel):
    documents: int
    chunks: int
    vectors: int
    index_version: int
    embedder: str
    dim: int | None
    faiss_index: str
    chunk_tokens: int
    chunk_overlap: int
    oldest: dt.date | None
    newest: dt.date | None
    database: str
    index_dir: str
