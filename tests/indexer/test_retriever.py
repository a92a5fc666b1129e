"""`IndexRetriever.retrieve`: one search, one definition of hybrid, the dense cosines and the version it read,
and no more reads of the database than it needs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from core.protocols import Retrieval, Retriever
from core.settings import Settings
from indexer.pipeline import Index
from indexer.retriever import MODES, IndexRetriever, reciprocal_rank_fusion

DOCS = {
    "kelvor": ("Kelvor Dynamics", "Kelvor Dynamics named Orvan Teel chief executive in March."),
    "arden": ("Arden city", "The population of Arden was revised to 412,000 residents."),
    "zephyr": ("Zephyr launch", "The Zephyr 9 drone launched with a range of 80 kilometres."),
    "korme": ("Korme fair", "The Dapaik Fair took place in Korme, organised by Kutain Group."),
    "teske": ("Pezan Labs", "Pezan Labs launched the Teske, a radio, in May."),
}
QUESTION = "Who is the chief executive of Kelvor Dynamics?"


def write_docs(folder: Path, docs: dict[str, tuple[str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for source, (title, body) in docs.items():
        (folder / f"{source}.md").write_text(
            f'---\ntitle: "{title}"\ndate: 2025-03-14\nsource: {source}\n---\n{body}\n'
        )
    return folder


@pytest.fixture
def retriever(settings: Settings, embedder: Any, tmp_path: Path) -> IndexRetriever:
    Index(settings, embedder=embedder).ingest(write_docs(tmp_path / "docs", DOCS))
    return IndexRetriever(settings, embedder=embedder)


def reads(retriever: IndexRetriever) -> Counter[str]:
    """Counts of the SQL statements the retriever's database runs from now on, by table."""
    counts: Counter[str] = Counter()

    @event.listens_for(retriever.sessions.kw["bind"], "before_cursor_execute")
    def count(*args: Any) -> None:
        statement = args[2]
        counts["index_state" if "index_state" in statement else "chunks"] += 1

    return counts


def test_retrieve_is_search_with_its_cosines_and_version(retriever: IndexRetriever) -> None:
    assert isinstance(retriever, Retriever)
    for mode in MODES:
        found = retriever.retrieve(QUESTION, 3, mode)
        assert isinstance(found, Retrieval) and found.version == retriever.version == 1
        assert found.hits == retriever.search(QUESTION, 3, mode)
        dense = {h.chunk_id: h.score for h in retriever.search(QUESTION, 50, "dense")}
        if mode == "bm25":
            assert found.cosines == {}
        else:  # the cosine each hit got in the dense half: every hit here, the index being this small
            assert found.cosines.keys() == {h.chunk_id for h in found.hits}
            assert all(abs(c - dense[cid]) < 1e-5 for cid, c in found.cosines.items())
    assert retriever.search(QUESTION, 1)[0].source == "kelvor"


def test_hybrid_is_one_fusion_of_the_candidate_lists(retriever: IndexRetriever) -> None:
    """Hybrid fuses the full candidate lists, not the top k of each half: what rag puts in its prompt is
    exactly what `search(mode="hybrid")` ranks."""
    n = retriever.candidates
    dense = [h.chunk_id for h in retriever.search(QUESTION, n, "dense")]
    lexical = [h.chunk_id for h in retriever.search(QUESTION, n, "bm25")]
    fused = reciprocal_rank_fusion([dense, lexical])
    hits = retriever.retrieve(QUESTION, 2).hits
    assert [(h.chunk_id, h.score, h.mode) for h in hits] == [(c, round(s, 6), "hybrid") for c, s in fused[:2]]


def test_one_state_read_and_one_query_per_search(
    retriever: IndexRetriever, settings: Settings, embedder: Any, tmp_path: Path
) -> None:
    retriever.search("warm-up", 1)
    counts = reads(retriever)
    found = retriever.retrieve(QUESTION, 3)
    assert counts == {"index_state": 1, "chunks": 1}
    # A version the caller read in the same request is searched without reading the state again.
    counts.clear()
    assert retriever.retrieve("Arden", 2, "bm25", version=found.version).version == found.version
    assert counts == {"chunks": 1}
    # An ingest commits version 2: a request that read version 1 still searches version 1, consistently;
    Index(settings, embedder=embedder).ingest(
        write_docs(tmp_path / "docs", {"ostra": ("Ostra tunnel", "The Ostra tunnel opened in June.")})
    )
    counts.clear()
    assert retriever.retrieve("Ostra tunnel", 1, "bm25", version=found.version) == Retrieval([], {}, 1)
    assert counts == {}  # nothing matches "Ostra" in version 1: no text to fetch
    # the next request reads the state and loads version 2; a stale version passed then reads it again.
    assert retriever.retrieve("Ostra tunnel", 1, "bm25").hits[0].source == "ostra"
    counts.clear()
    newer = retriever.retrieve("Ostra tunnel", 1, "bm25", version=found.version)
    assert newer.version == 2 and newer.hits[0].source == "ostra"
    assert counts == {"index_state": 1, "chunks": 1}


def test_empty_index_retrieves_nothing_at_version_0(settings: Settings, embedder: Any) -> None:
    assert IndexRetriever(settings, embedder=embedder).retrieve(QUESTION, 4) == Retrieval([], {}, 0)
