"""The same index on a real PostgreSQL server (started by the `postgres_url` fixture)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import Settings
from indexer.pipeline import Index
from indexer.retriever import IndexRetriever


@pytest.mark.integration
def test_ingest_update_delete_on_postgres(postgres_url: str, kc_home: Path, tmp_path: Path, embedder) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(home=kc_home, database_url=postgres_url)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text(
        "---\ntitle: Ferro\ndate: 2025-02-02\nsource: a\n---\nFerro Labs hired Anka Dess."
    )
    (docs / "b.md").write_text(
        "---\ntitle: Quill\ndate: 2025-03-03\nsource: b\n---\nQuill Bay hosts the regatta."
    )
    index, retriever = Index(settings, embedder=embedder), IndexRetriever(settings, embedder=embedder)

    assert index.ingest(docs).added == 2
    assert index.ingest(docs).unchanged == 2
    (docs / "a.md").write_text(
        "---\ntitle: Ferro\ndate: 2025-09-09\nsource: a\n---\nFerro Labs hired Mel Ort."
    )
    assert index.ingest(docs).changed == 1
    texts = " ".join(h.text for h in retriever.search("Ferro Labs hired", k=5))
    assert "Mel Ort" in texts and "Anka Dess" not in texts

    stats = retriever.stats()
    assert stats.database.startswith("postgresql+psycopg://kc@")
    assert (stats.documents, stats.chunks, stats.vectors) == (2, 2, 2)
    assert index.delete("b").removed == 1
    assert [h.source for h in retriever.search("regatta", k=5, mode="bm25")] == []
