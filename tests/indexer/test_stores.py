from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexer.retriever import reciprocal_rank_fusion
from indexer.stores import DenseStore, LexicalStore, lexical_tokens


def unit(rng: np.random.Generator, n: int, d: int = 16) -> np.ndarray:
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_dense_add_search_remove_roundtrip(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(0)
    vectors = unit(rng, 50)
    ids = np.arange(1_000, 1_050, dtype=np.int64) * 7_919_000_000  # large, sparse int64 ids
    store = DenseStore.empty(16, kind)  # type: ignore[arg-type]
    store.add(ids, vectors)
    assert store.search(vectors[3], 1)[0][0] == ids[3]

    store.remove(ids[:10])
    assert len(store) == 40
    found = {i for i, _ in store.search(vectors[3], 40)}
    assert not found & set(ids[:10].tolist())
    assert store.search(vectors[20], 1)[0][0] == ids[20]

    store.save(tmp_path)
    again = DenseStore.load(tmp_path, kind)  # type: ignore[arg-type]
    assert sorted(again.ids().tolist()) == sorted(ids[10:].tolist())


def test_lexical_tokens_keep_identifiers_and_versions_whole() -> None:
    tokens = lexical_tokens("Python 3.14 adds sys.remote_exec() and PEP-750 t-strings")
    for expected in ("3.14", "3", "14", "sys.remote_exec", "sys", "remot", "exec", "pep-750", "750"):
        assert expected in tokens
    assert "and" not in tokens  # stop word


def test_lexical_store_ranks_exact_identifier_first(tmp_path: Path) -> None:
    texts = [
        "The garbage collector is now incremental.",
        "sys.remote_exec lets a debugger run code in another process.",
        "Template strings are written with a t prefix.",
    ]
    ids = np.array([11, 22, 33], dtype=np.int64)
    store = LexicalStore.build(ids, [lexical_tokens(t) for t in texts])
    assert store.search("remote_exec", 3)[0][0] == 22
    assert store.search("zzz unknown words", 3) == []
    store.save(tmp_path)
    assert LexicalStore.load(tmp_path).search("template strings", 1)[0][0] == 33
    empty = LexicalStore.build(np.zeros(0, dtype=np.int64), [])
    assert empty.search("anything", 5) == []


def test_rrf_rewards_agreement_between_rankings() -> None:
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 4, 1]])
    assert [i for i, _ in fused][:2] == [1, 3]  # in both lists beats top of one
    assert fused[0][1] == pytest.approx(1 / 11 + 1 / 13)
    assert {i for i, _ in fused} == {1, 2, 3, 4}
