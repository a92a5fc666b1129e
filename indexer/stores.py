"""The two search structures over chunks: FAISS (dense vectors) and BM25 (lexical), each keyed by chunk id.

Both are immutable files inside one index generation directory; an ingest builds the next generation
beside the current one (see `indexer.pipeline`).
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import faiss as _faiss
import numpy as np

# faiss's bundled stubs describe its SWIG layer, not the numpy API it patches in at import time.
faiss: Any = _faiss

DenseKind = Literal["flat", "hnsw"]


class DenseStore:
    """FAISS inner-product search over unit vectors, with stable int64 ids (`IndexIDMap2`).

    `flat` is exact. `hnsw` is approximate and fast on large corpora; HNSW graphs cannot delete, so a
    removal rebuilds the graph from the stored vectors.
    """

    FILE = "dense.faiss"

    def __init__(self, index: Any, kind: DenseKind, hnsw_m: int = 32) -> None:
        self.index = index
        self.kind = kind
        self.hnsw_m = hnsw_m

    @classmethod
    def empty(cls, dim: int, kind: DenseKind, hnsw_m: int = 32) -> DenseStore:
        return cls(cls._new_index(dim, kind, hnsw_m), kind, hnsw_m)

    @staticmethod
    def _new_index(dim: int, kind: DenseKind, hnsw_m: int) -> Any:
        if kind == "flat":
            inner = faiss.IndexFlatIP(dim)
        elif kind == "hnsw":
            inner = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        else:
            raise ValueError(f"unknown FAISS index kind {kind!r}: use 'flat' or 'hnsw'")
        return faiss.IndexIDMap2(inner)

    @classmethod
    def load(cls, directory: Path, kind: DenseKind, hnsw_m: int = 32) -> DenseStore:
        return cls(faiss.read_index(str(directory / cls.FILE)), kind, hnsw_m)

    def save(self, directory: Path) -> None:
        faiss.write_index(self.index, str(directory / self.FILE))

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))

    def remove(self, ids: np.ndarray) -> None:
        if not len(ids) or not len(self):
            return
        if self.kind == "flat":
            self.index.remove_ids(ids.astype(np.int64))
            return
        current = self.ids()
        keep = current[~np.isin(current, ids)]
        vectors = np.stack([self.index.reconstruct(int(i)) for i in keep]) if len(keep) else None
        self.index = self._new_index(self.dim, self.kind, self.hnsw_m)
        if vectors is not None:
            self.add(keep, vectors)

    def search(self, query: np.ndarray, k: int, ef_search: int = 64) -> list[tuple[int, float]]:
        if not len(self):
            return []
        params = faiss.SearchParametersHNSW(efSearch=max(ef_search, k)) if self.kind == "hnsw" else None
        scores, ids = self.index.search(
            query.reshape(1, -1).astype(np.float32), min(k, len(self)), params=params
        )
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]


_TOKEN = re.compile(r"[a-z0-9_]+(?:[.\-][a-z0-9_]+)*")
_PART = re.compile(r"[.\-_]+")


@cache
def _bm25s() -> ModuleType:
    import logging

    import bm25s

    # bm25s sets its own logger to DEBUG on import; keep our logs readable.
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


@cache
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


@cache
def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


def lexical_tokens(text: str) -> list[str]:
    """Stemmed words, plus whole identifiers and versions kept intact.

    `sys.remote_exec()` gives `sys.remote_exec`, `sys`, `remot`, `exec`; `3.14` gives `3.14`, `3`, `14`.
    Dense MiniLM embeddings blur exactly these invented names and version numbers, so the lexical side
    keeps them whole as well as in parts.
    """
    wholes: list[str] = []
    words: list[str] = []
    stop = _stopwords()
    for token in _TOKEN.findall(text.lower()):
        parts = [p for p in _PART.split(token) if p]
        if len(parts) > 1:
            wholes.append(token)
        words.extend(p for p in parts if p not in stop)
    return wholes + _stemmer().stemWords(words)


class LexicalStore:
    """BM25 (bm25s, Lucene scoring) over chunk texts, rebuilt at each commit (cheap next to embedding)."""

    DIR = "bm25"
    IDS = "bm25_ids.npy"

    def __init__(self, retriever: Any, ids: np.ndarray) -> None:
        self.retriever = retriever
        self.ids = ids

    @classmethod
    def build(cls, ids: np.ndarray, token_lists: list[list[str]]) -> LexicalStore:
        if not len(ids):
            return cls(None, np.zeros(0, dtype=np.int64))
        retriever = _bm25s().BM25(method="lucene")
        # bm25s cannot index an empty token list; a placeholder keeps row numbers aligned with ids.
        retriever.index([t or ["\x00"] for t in token_lists], show_progress=False)
        return cls(retriever, ids.astype(np.int64))

    @classmethod
    def load(cls, directory: Path) -> LexicalStore:
        ids = np.load(directory / cls.IDS)
        if not len(ids):
            return cls(None, ids)
        return cls(_bm25s().BM25.load(str(directory / cls.DIR)), ids)

    def save(self, directory: Path) -> None:
        np.save(directory / self.IDS, self.ids)
        if self.retriever is not None:
            self.retriever.save(str(directory / self.DIR))

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        tokens = lexical_tokens(query)
        if self.retriever is None or not tokens:
            return []
        rows, scores = self.retriever.retrieve(
            [tokens], k=min(k, len(self.ids)), show_progress=False, n_threads=1
        )
        return [(int(self.ids[r]), float(s)) for r, s in zip(rows[0], scores[0], strict=True) if s > 0]
