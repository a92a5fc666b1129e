"""Reading, deduplication, held-out split and packing of pretraining data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from core.db import ChunkRow, DocumentRow, session_factory
from core.settings import Settings
from indexer.embedding import Embedder
from indexer.pipeline import Index
from trainer.data import (
    Record,
    Windows,
    assistant_labels,
    dedup,
    expand_paths,
    hash_files,
    pack,
    parse_repeats,
    read_records,
    repeat_sources,
    split_heldout,
    tokenize,
    unigram_entropy,
)
from trainer.evaluate import read_docs


def test_read_world_documents_and_chat_rows(nano_world: Path) -> None:
    docs = read_records(expand_paths([nano_world / "corpus_pre"]))
    assert docs and all(r.kind == "doc" for r in docs)
    assert not any(r.text.startswith("---") or "source:" in r.text for r in docs)
    chats = read_records(expand_paths([nano_world / "sft" / "grounded.jsonl"]))
    assert chats and all(r.kind == "chat" and r.text.startswith("<|im_start|>system") for r in chats)


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        expand_paths([tmp_path / "missing"])
    with pytest.raises(ValueError, match="no "):
        expand_paths([tmp_path])
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"foo": 1}\n')
    with pytest.raises(ValueError, match=r"x\.jsonl:1"):
        read_records([bad])
    bad.write_text("not json\n")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_records([bad])


def test_the_trainer_reads_a_folder_as_the_indexer_does(
    tmp_path: Path,
    settings: Settings,
    embedder: Embedder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Pretraining, CPT replay and the evaluator's passages read a folder with the indexer's reader: the
    same files, the same documents (front matter stripped, .rst read), the same bad file skipped."""
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.md").write_text(
        '---\ntitle: "Kelvor"\ndate: 2025-03-14\nsource: post-0007\n---\nKelvor moved.\n'
    )
    (folder / "sub" / "b.rst").write_text("Arden\n=====\n\nThe population of Arden is 412,000.\n")
    (folder / "c.txt").write_text("  The Zephyr 9 drone launched.  \n")
    (folder / "bad.md").write_bytes("---\ntitle: x\n---\ncafé".encode("latin-1"))
    (folder / "image.png").write_bytes(b"\x89PNG\r\n")
    (folder / ".hidden.md").write_text("never read")

    with caplog.at_level("WARNING"):
        records = read_records(expand_paths([folder]))
    trained = {r.id: r.text for r in records}
    assert trained == {
        "a.md": "Kelvor moved.",
        "c.txt": "The Zephyr 9 drone launched.",
        "b.rst": "Arden\n=====\n\nThe population of Arden is 412,000.",
    }
    assert "bad.md: not valid UTF-8" in caplog.text

    summary = Index(settings, embedder=embedder).ingest(folder)
    assert {Path(f.path).name for f in summary.skipped_files} == {"bad.md", "image.png"}
    with session_factory(settings.resolved_database_url)() as session:
        indexed = {Path(row.path).name: row for row in session.scalars(select(DocumentRow))}
        assert set(indexed) == set(trained)
        for name, row in indexed.items():
            assert row.bytes == len(trained[name].encode())
            chunks = session.scalars(select(ChunkRow).where(ChunkRow.doc_id == row.id)).all()
            assert chunks and all(trained[name][c.start : c.end] == c.text for c in chunks)
    assert read_docs(folder) == {
        "post-0007": "Kelvor moved.",
        "c": "The Zephyr 9 drone launched.",
        "b": "Arden ===== The population of Arden is 412,000.",
    }


def test_hash_changes_with_content(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_text("one")
    h1 = hash_files([f])
    f.write_text("two")
    assert hash_files([f]) != h1


BASE = (
    "Kemtain Systems is led by chief executive Kra Siseer. "
    "The business of Kemtain Systems is making cameras. "
    "Kemtain Systems was established in 2009. The head office of Kemtain Systems is in Loubal."
)


def test_dedup_exact_and_near() -> None:
    records = [
        Record("a", BASE, "doc"),
        Record("b", "  " + BASE.upper() + "\n", "doc"),  # exact, up to case and whitespace
        Record("c", BASE.replace("2009", "2010"), "doc"),  # near: one word differs
        Record(
            "d", "Orvan Teel was born in 1962 in Noro. Orvan Teel works as a baker at Posfal Labs.", "doc"
        ),
        Record("e", "<|im_start|>user\n" + BASE + "\nQuestion: when?", "chat"),
        Record("f", "<|im_start|>user\n" + BASE + "\nQuestion: who?", "chat"),  # chats: exact dedup only
    ]
    kept, report = dedup(records, near_threshold=0.6)
    assert [r.id for r in kept] == ["a", "d", "e", "f"]
    assert (report.exact_dropped, report.near_dropped, report.kept, report.input) == (1, 1, 4, 6)
    assert report.examples[0]["dropped"] == "c" and report.examples[0]["kept"] == "a"
    kept, report = dedup(records, near_threshold=1.0)
    assert report.near_dropped == 0 and len(kept) == 5


def test_world_paraphrases_survive_near_dedup(nano_world: Path) -> None:
    """The world states each fact in several paraphrases on purpose: they are not near duplicates."""
    docs = read_records(expand_paths([nano_world / "corpus_pre"]))
    _, report = dedup(docs, near_threshold=0.8)
    assert report.near_dropped <= len(docs) // 20, report.examples


def test_split_is_deterministic_and_disjoint() -> None:
    records = [Record(str(i), f"text {i}", "doc") for i in range(200)]
    train, held = split_heldout(records, 0.1, seed=0)
    assert 5 <= len(held) <= 40 and len(train) + len(held) == 200
    assert not {r.id for r in train} & {r.id for r in held}
    assert split_heldout(records, 0.1, seed=0) == (train, held)
    assert split_heldout(records, 0.0, seed=0) == (records, [])


def test_repeat_sources_lists_a_file_s_rows_n_times_in_rounds() -> None:
    qa = [Record(f"qa.jsonl:{i}", f"q{i}", "chat") for i in (1, 2)]
    records = [*qa, Record("drill.jsonl:1", "d", "chat")]
    out = repeat_sources(records, parse_repeats(["qa.jsonl=3"]))
    assert out == records + qa + qa
    assert repeat_sources(records, {}) == records


@pytest.mark.parametrize("item", ["qa.jsonl", "qa.jsonl=0", "=3", "qa.jsonl=two"])
def test_parse_repeats_rejects_malformed_items(item: str) -> None:
    with pytest.raises(ValueError, match="NAME=N"):
        parse_repeats([item])


def test_pack_keeps_sequences_whole_where_they_fit() -> None:
    seqs = [[1] * 5, [2] * 3, [3] * 7, [4] * 12, [5] * 2]
    ids, labels = pack(seqs, seq_len=8, pad_id=0)
    assert ids.shape[1] == 8 and ids.dtype == np.int64
    tokens = sorted(int(t) for t in ids.flatten() if t)
    assert tokens == sorted(t for s in seqs for t in s)  # nothing lost
    assert (labels[ids == 0] == -100).all() and (labels[ids != 0] == ids[ids != 0]).all()
    for value, length in ((1, 5), (2, 3), (3, 7)):  # short sequences are never split across windows
        rows = {int(r) for r in np.nonzero(ids == value)[0]}
        assert len(rows) == 1 and int((ids == value).sum()) == length


def test_windows_batches_are_a_function_of_the_step() -> None:
    ids = np.arange(40, dtype=np.int64).reshape(10, 4)
    w = Windows(ids, ids.copy(), seed=3)
    a = w.batch(step=7, per_rank=3)[0]
    assert (Windows(ids, ids.copy(), seed=3).batch(step=7, per_rank=3)[0] == a).all()
    # each epoch visits every window once
    seen = np.concatenate([w.batch(s, 2)[0][:, 0] for s in range(5)])
    assert sorted(seen.tolist()) == list(range(0, 40, 4))
    # two ranks draw disjoint halves of a global batch
    r0, r1 = w.batch(0, 2, rank=0, world=2)[0], w.batch(0, 2, rank=1, world=2)[0]
    assert not set(r0[:, 0].tolist()) & set(r1[:, 0].tolist())


def test_unigram_entropy() -> None:
    assert unigram_entropy([[1, 1, 1, 1]]) == pytest.approx(0.0)
    assert unigram_entropy([[1, 2], [3, 4]]) == pytest.approx(np.log(4))


def test_manifest_rows(nano_world: Path) -> None:
    rows = [json.loads(x) for x in (nano_world / "sft" / "closed_book.jsonl").read_text().splitlines()]
    assert len(read_records([nano_world / "sft" / "closed_book.jsonl"])) == len(rows)


def test_pack_carries_given_labels_with_their_tokens() -> None:
    seqs = [[1, 2, 3], [4, 5, 6, 7, 8]]
    labels = [[-100, 2, 3], [-100, -100, 6, 7, -100]]
    ids, out = pack(seqs, seq_len=8, pad_id=0, labels=labels)
    flat = {int(i): int(lab) for i, lab in zip(ids.flatten(), out.flatten(), strict=True) if i}
    assert flat == {1: -100, 2: 2, 3: 3, 4: -100, 5: -100, 6: 6, 7: 7, 8: -100}
    with pytest.raises(ValueError, match="shape"):
        pack(seqs, seq_len=8, pad_id=0, labels=[[1], [2]])


def test_assistant_labels_train_only_the_answers_of_chat_rows(nano_world: Path) -> None:
    from trainer.tokenizer import train_tokenizer

    chats = read_records(expand_paths([nano_world / "sft" / "grounded.jsonl"]))[:20]
    docs = [Record("d", "Orvan Teel works at Kelvor Dynamics.", "doc")]
    records = chats + docs
    tokenizer = train_tokenizer([r.text for r in records], 400)
    seqs = tokenize(tokenizer, records)
    labels = assistant_labels(tokenizer, records, seqs)
    rows = [json.loads(x) for x in (nano_world / "sft" / "grounded.jsonl").read_text().splitlines()[:20]]
    for row, ids, lab in zip(rows, seqs, labels, strict=False):
        trained = tokenizer.decode([t for t in lab if t != -100])
        assert trained == " " + row["messages"][-1]["content"] + "<|im_end|>"  # the answer, its end of turn
        assert len(lab) == len(ids)
    assert labels[-1] == seqs[-1]  # a document trains on every token
