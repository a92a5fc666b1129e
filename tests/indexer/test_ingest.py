"""Ingest end to end on real files with the real embedder: incremental, idempotent, crash-safe."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from core.db import ChunkRow, DocumentRow, session_factory
from core.settings import Settings
from indexer.pipeline import Index, IngestError, generation_dir
from indexer.retriever import MODES, IndexRetriever
from indexer.stores import DenseStore, LexicalStore

FACTS = {
    "kelvor.md": (
        "Kelvor Dynamics",
        "2025-03-14",
        "Kelvor Dynamics named Orvan Teel chief executive in March.",
    ),
    "arden.md": ("Arden city", "2025-04-02", "The population of Arden was revised to 412,000 residents."),
    "zephyr.md": (
        "Zephyr launch",
        "2025-05-20",
        "The Zephyr 9 drone launched with a range of 80 kilometres.",
    ),
}


def write_doc(folder: Path, name: str, title: str, date: str, body: str) -> Path:
    path = folder / name
    path.write_text(f'---\ntitle: "{title}"\ndate: {date}\nsource: {path.stem}\n---\n{body}\n')
    return path


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, (title, date, body) in FACTS.items():
        write_doc(folder, name, title, date, body)
    return folder


@pytest.fixture
def index(settings: Settings, embedder) -> Index:  # type: ignore[no-untyped-def]
    return Index(settings, embedder=embedder)


@pytest.fixture
def retriever(settings: Settings, embedder) -> IndexRetriever:  # type: ignore[no-untyped-def]
    return IndexRetriever(settings, embedder=embedder)


def all_texts(retriever: IndexRetriever, query: str) -> str:
    return "\n".join(h.text for mode in MODES for h in retriever.search(query, k=10, mode=mode))


def assert_consistent(settings: Settings) -> None:
    """SQL, FAISS and BM25 of the committed version hold exactly the same chunk ids."""
    sessions = session_factory(settings.resolved_database_url)
    with sessions() as s:
        sql_ids = sorted(s.scalars(select(ChunkRow.id)))
        from indexer.pipeline import read_state

        state = read_state(s)
    if state is None:
        assert sql_ids == []
        return
    gen = generation_dir(settings.index_dir, state.version)
    assert sorted(DenseStore.load(gen, "flat").ids().tolist()) == sql_ids
    assert sorted(LexicalStore.load(gen).ids.tolist()) == sql_ids


def test_ingest_then_search_every_mode(index: Index, retriever: IndexRetriever, docs: Path) -> None:
    summary = index.ingest(docs)
    assert (summary.added, summary.changed, summary.removed, summary.skipped) == (3, 0, 0, 0)
    assert summary.chunks_embedded == 3 and summary.index_version == 1
    for mode in MODES:
        top = retriever.search("Who is the chief executive of Kelvor Dynamics?", k=2, mode=mode)[0]
        assert top.source == "kelvor" and top.title == "Kelvor Dynamics"
        assert str(top.date) == "2025-03-14" and "Orvan Teel" in top.text and top.mode == mode
    assert retriever.search("Zephyr 9", k=1, mode="bm25")[0].source == "zephyr"
    assert_consistent(index.settings)


def test_reingest_unchanged_embeds_nothing(index: Index, docs: Path) -> None:
    index.ingest(docs)
    again = index.ingest(docs)
    assert (again.added, again.changed, again.removed, again.unchanged) == (0, 0, 0, 3)
    assert again.chunks_embedded == 0 and again.index_version == 1


def test_changed_file_replaces_its_chunks(index: Index, retriever: IndexRetriever, docs: Path) -> None:
    index.ingest(docs)
    write_doc(
        docs, "kelvor.md", "Kelvor Dynamics", "2025-09-01", "Kelvor Dynamics appointed Mira Solt as chief."
    )
    summary = index.ingest(docs)
    assert (summary.added, summary.changed, summary.unchanged, summary.chunks_embedded) == (0, 1, 2, 1)
    text = all_texts(retriever, "Kelvor Dynamics chief executive Orvan Teel")
    assert "Mira Solt" in text and "Orvan Teel" not in text
    assert_consistent(index.settings)


def test_removed_file_is_pruned_unless_no_prune(index: Index, retriever: IndexRetriever, docs: Path) -> None:
    index.ingest(docs)
    (docs / "zephyr.md").unlink()
    kept = index.ingest(docs, prune=False)
    assert kept.removed == 0 and kept.unchanged == 2
    assert "Zephyr 9" in all_texts(retriever, "Zephyr 9 drone range")

    pruned = index.ingest(docs)
    assert pruned.removed == 1 and pruned.chunks_removed == 1
    assert "Zephyr" not in all_texts(retriever, "Zephyr 9 drone range")
    assert_consistent(index.settings)


def test_renamed_file_moves_without_reembedding(index: Index, retriever: IndexRetriever, docs: Path) -> None:
    index.ingest(docs)
    (docs / "arden.md").rename(docs / "arden-city.md")
    summary = index.ingest(docs)
    assert (summary.added, summary.removed, summary.chunks_embedded) == (1, 1, 0)
    hit = retriever.search("Arden population", k=1, mode="bm25")[0]
    with session_factory(index.settings.resolved_database_url)() as s:
        assert s.get(DocumentRow, hit.doc_id).path.endswith("arden-city.md")  # type: ignore[union-attr]
    assert_consistent(index.settings)


def test_swapped_contents_move_both(index: Index, retriever: IndexRetriever, docs: Path) -> None:
    index.ingest(docs)
    a, b = (docs / "kelvor.md").read_text(), (docs / "arden.md").read_text()
    (docs / "kelvor.md").write_text(b)
    (docs / "arden.md").write_text(a)
    summary = index.ingest(docs)
    assert summary.changed == 2 and summary.chunks_embedded == 0
    with session_factory(index.settings.resolved_database_url)() as s:
        uris = {d.source: Path(d.uri).name for d in s.scalars(select(DocumentRow))}
    assert uris == {"kelvor": "arden.md", "arden": "kelvor.md", "zephyr": "zephyr.md"}
    assert_consistent(index.settings)


def test_jsonl_record_removed_from_file(index: Index, retriever: IndexRetriever, tmp_path: Path) -> None:
    feed = tmp_path / "feed" / "news.jsonl"
    feed.parent.mkdir()
    rows = [
        {"id": f"n{i}", "text": f"Bulletin {i}: the Quillon bridge reopened on day {i}."} for i in range(3)
    ]
    feed.write_text("\n".join(json.dumps(r) for r in rows))
    assert index.ingest(feed.parent).added == 3
    feed.write_text("\n".join(json.dumps(r) for r in rows[:2]))
    summary = index.ingest(feed.parent, prune=False)  # a record gone from a re-read file is gone regardless
    assert (summary.removed, summary.unchanged, summary.chunks_embedded) == (1, 2, 0)
    assert "day 2" not in all_texts(retriever, "Quillon bridge reopened day 2")


def test_duplicate_content_is_skipped(index: Index, docs: Path) -> None:
    shutil.copy(docs / "arden.md", docs / "arden-copy.md")
    summary = index.ingest(docs)
    assert summary.added == 3 and summary.skipped == 1
    assert "duplicate of" in summary.skipped_files[0].reason


def test_bad_files_skipped_with_reason_and_nothing_lost(
    index: Index, retriever: IndexRetriever, docs: Path
) -> None:
    index.ingest(docs)
    (docs / "empty.md").write_text("")
    (docs / "blob.bin").write_bytes(b"\x00\x01")
    (docs / "zephyr.md").write_bytes(b"\xff\xfe broken now")  # an indexed file turns undecodable
    summary = index.ingest(docs)
    reasons = {Path(f.path).name: f.reason for f in summary.skipped_files}
    assert set(reasons) == {"empty.md", "blob.bin", "zephyr.md"} and summary.skipped == 3
    assert "not valid UTF-8" in reasons["zephyr.md"]
    assert summary.removed == 0
    assert "Zephyr 9" in all_texts(retriever, "Zephyr 9 drone")  # the last good version stays


def test_oversized_file_skipped(settings: Settings, embedder, docs: Path) -> None:  # type: ignore[no-untyped-def]
    small = Index(settings.model_copy(update={"max_file_bytes": 300}), embedder=embedder)
    (docs / "big.md").write_text("x" * 500)
    summary = small.ingest(docs)
    assert summary.added == 3 and summary.skipped == 1
    assert "over KC_MAX_FILE_BYTES" in summary.skipped_files[0].reason


def test_missing_path_is_a_clear_error(index: Index, tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="no such file or directory"):
        index.ingest(tmp_path / "nope")


def test_delete_by_source_file_or_folder(index: Index, retriever: IndexRetriever, docs: Path) -> None:
    index.ingest(docs)
    assert index.delete("zephyr").removed == 1
    assert "Zephyr" not in all_texts(retriever, "Zephyr drone")
    assert index.delete(str(docs / "arden.md")).removed == 1
    assert index.delete(str(docs)).removed == 1
    assert retriever.stats().documents == 0
    with pytest.raises(IngestError, match="no indexed document matches"):
        index.delete("zephyr")
    assert_consistent(index.settings)


def test_a_delete_does_not_load_the_embedding_model(index: Index, settings: Settings, docs: Path) -> None:
    from indexer.embedding import Embedder

    index.ingest(docs)
    fresh = Embedder(settings.embedder, settings.embed_batch_size)
    assert Index(settings, embedder=fresh).delete("zephyr").removed == 1
    assert "model" not in vars(fresh)  # a cached_property: loading it would have put it there
    assert_consistent(settings)


def test_settings_mismatch_refused(settings: Settings, embedder, docs: Path) -> None:  # type: ignore[no-untyped-def]
    Index(settings, embedder=embedder).ingest(docs)
    other = Index(settings.model_copy(update={"chunk_tokens": 128}), embedder=embedder)
    with pytest.raises(IngestError, match="KC_CHUNK_TOKENS=128"):
        other.ingest(docs)


def test_hnsw_index_supports_removal(settings: Settings, embedder, docs: Path) -> None:  # type: ignore[no-untyped-def]
    hnsw = settings.model_copy(update={"faiss_index": "hnsw"})
    index, retriever = Index(hnsw, embedder=embedder), IndexRetriever(hnsw, embedder=embedder)
    index.ingest(docs)
    (docs / "kelvor.md").unlink()
    index.ingest(docs)
    assert retriever.stats().vectors == 2
    assert "Orvan" not in all_texts(retriever, "Kelvor chief executive")


@pytest.mark.parametrize("fail_at", ["write_generation", "database_commit"])
def test_crash_mid_commit_keeps_previous_version(
    index: Index, retriever: IndexRetriever, docs: Path, monkeypatch: pytest.MonkeyPatch, fail_at: str
) -> None:
    index.ingest(docs)
    write_doc(
        docs, "kelvor.md", "Kelvor Dynamics", "2025-09-01", "Kelvor Dynamics appointed Mira Solt as chief."
    )
    write_doc(docs, "new.md", "Brand new", "2025-10-01", "The Ostra tunnel opened to traffic.")

    class Killed(BaseException):
        pass

    def boom(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise Killed

    if fail_at == "write_generation":
        monkeypatch.setattr(DenseStore, "save", boom)
    else:
        real = index._write_generation

        def write_then_die(*args, **kwargs):  # type: ignore[no-untyped-def]
            real(*args, **kwargs)  # the new generation is on disk, the database never hears of it
            raise Killed

        monkeypatch.setattr(index, "_write_generation", write_then_die)
    with pytest.raises(Killed):
        index.ingest(docs)
    assert retriever.version == 1
    assert "Orvan Teel" in all_texts(retriever, "Kelvor chief executive")
    assert "Ostra" not in all_texts(retriever, "Ostra tunnel")
    assert_consistent(index.settings)

    monkeypatch.undo()
    summary = Index(index.settings, embedder=index.embedder).ingest(docs)
    assert (summary.added, summary.changed, summary.unchanged) == (1, 1, 2)
    assert "Ostra tunnel" in all_texts(retriever, "Ostra tunnel")
    assert sorted(p.name for p in index.dir.iterdir() if not p.name.startswith(".")) == ["v000001", "v000002"]
    assert_consistent(index.settings)


def test_commit_points_split_a_large_ingest(settings: Settings, embedder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(7):
        write_doc(folder, f"d{i}.md", f"Doc {i}", "2025-01-01", f"Fact number {i} about the Vell river.")
    summary = Index(settings.model_copy(update={"commit_every": 3}), embedder=embedder).ingest(folder)
    assert summary.index_version == 3 and summary.chunks_embedded == 7
    assert_consistent(settings)


def test_empty_index_searches_return_nothing(retriever: IndexRetriever) -> None:
    assert retriever.version == 0
    assert retriever.search("anything", k=3) == []
    with pytest.raises(ValueError, match="empty"):
        retriever.search("  ")
    with pytest.raises(ValueError, match="unknown search mode"):
        retriever.search("x", mode="sparse")  # type: ignore[arg-type]


def test_vectors_are_the_real_embeddings(index: Index, embedder, docs: Path) -> None:  # type: ignore[no-untyped-def]
    index.ingest(docs)
    gen = generation_dir(index.settings.index_dir, 1)
    store = DenseStore.load(gen, "flat")
    with session_factory(index.settings.resolved_database_url)() as s:
        cid, text, title = s.execute(
            select(ChunkRow.id, ChunkRow.text, DocumentRow.title).join(DocumentRow).limit(1)
        ).one()
        assert s.scalar(select(func.count(ChunkRow.id))) == 3
    expected = embedder.encode([f"{title}\n\n{text}"])[0]
    np.testing.assert_allclose(store.index.reconstruct(int(cid)), expected, atol=1e-5)
