"""Search the committed index: dense (FAISS), lexical (BM25) or hybrid (reciprocal-rank fusion).

python -m indexer search "what changed in the garbage collector" -k 5 --mode hybrid
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import func, select

from core.db import ChunkRow, DocumentRow, session_factory
from core.protocols import Retrieval
from core.schemas import IndexStats, SearchHit, SearchMode
from core.settings import Settings
from indexer.embedding import Embedder
from indexer.pipeline import check_config, generation_dir, read_state
from indexer.stores import DenseStore, LexicalStore

log = logging.getLogger(__name__)

# Cormack et al. (2009) use 60 over deep TREC runs. With two lists and a top-5 cut, that lets a chunk
# ranked middling by both outrank one ranked first by one, which is how identifier queries are lost:
# bench/recall.py measured recall@5 0.800 with 60, 0.867 with 10 (dense 0.683, BM25 0.833).
RRF_K = 10
MODES: tuple[SearchMode, ...] = ("dense", "bm25", "hybrid")


def reciprocal_rank_fusion(rankings: list[list[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Fuse ranked id lists: score(id) = sum over lists of 1 / (k + rank), rank starting at 1."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, cid in enumerate(ranking, start=1):
            scores[cid] = scores.get(cid, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


class IndexRetriever:
    """Implements `core.protocols.Retriever`. Reloads by itself when an ingest commits a new version."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None, candidates: int = 50) -> None:
        self.settings = settings
        settings.ensure_home()
        self.embedder = embedder or Embedder(settings.embedder, settings.embed_batch_size)
        self.sessions = session_factory(settings.resolved_database_url)
        self.candidates = candidates
        self._lock = threading.Lock()
        self._loaded = 0
        self._dense: DenseStore | None = None
        self._lexical: LexicalStore | None = None

    @property
    def version(self) -> int:
        with self.sessions() as session:
            state = read_state(session)
            check_config(state, self.settings)
            return state.version if state else 0

    def _stores(self, version: int | None = None) -> tuple[int, DenseStore | None, LexicalStore | None]:
        """The version searched and its stores. A `version` the caller read is trusted while it is the
        one loaded; otherwise the index state is read (one query) and a newer generation loaded."""
        with self._lock:
            for attempt in range(3):
                if version is None or version != self._loaded or attempt:
                    version = self.version
                if version == self._loaded:
                    break
                try:
                    self._load(version)
                    break
                except (FileNotFoundError, RuntimeError):
                    # An ingest committed twice while we read and dropped this generation: read again.
                    if attempt == 2:
                        raise
            return self._loaded, self._dense, self._lexical

    def _load(self, version: int) -> None:
        if version == 0:
            self._dense, self._lexical = None, None
        else:
            gen = generation_dir(self.settings.index_dir, version)
            self._dense = DenseStore.load(gen, self.settings.faiss_index, self.settings.hnsw_m)
            self._lexical = LexicalStore.load(gen)
            log.info("loaded index version %d (%d chunks)", version, len(self._dense))
        self._loaded = version

    def search(self, query: str, k: int = 5, mode: SearchMode = "hybrid") -> list[SearchHit]:
        return self.retrieve(query, k, mode).hits

    def retrieve(
        self, query: str, k: int = 5, mode: SearchMode = "hybrid", *, version: int | None = None
    ) -> Retrieval:
        """The top k in `mode`, the dense cosine of each hit the dense half ranked and the version searched,
        from one read of the index state (none when `version` is the one loaded) and one query for the
        text. Hybrid fuses the top `candidates` (at least k) of both halves by reciprocal rank."""
        if mode not in MODES:
            raise ValueError(f"unknown search mode {mode!r}: use one of {', '.join(MODES)}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not query.strip():
            raise ValueError("the query is empty")
        version, dense, lexical = self._stores(version)
        if dense is None or lexical is None:
            return Retrieval([], {}, version)
        n = max(self.candidates, k)
        dense_hits: list[tuple[int, float]] = []
        lexical_hits: list[tuple[int, float]] = []
        if mode in ("dense", "hybrid"):
            vector = self.embedder.encode([query])[0]
            dense_hits = dense.search(vector, n)
        if mode in ("bm25", "hybrid"):
            lexical_hits = lexical.search(query, n)
        if mode == "dense":
            ranked = dense_hits
        elif mode == "bm25":
            ranked = lexical_hits
        else:
            ranked = reciprocal_rank_fusion([[i for i, _ in dense_hits], [i for i, _ in lexical_hits]])
        hits = self._hydrate(ranked, k, mode)
        cosine = dict(dense_hits)
        return Retrieval(
            hits, {h.chunk_id: cosine[h.chunk_id] for h in hits if h.chunk_id in cosine}, version
        )

    def _hydrate(self, ranked: list[tuple[int, float]], k: int, mode: SearchMode) -> list[SearchHit]:
        """Attach text and citation metadata. Ids the database no longer has are dropped: the database
        is the source of truth, so deleted text never comes back even from a stale store."""
        head = ranked[: k * 2]
        ids = [cid for cid, _ in head]
        if not ids:
            return []
        with self.sessions() as session:
            rows = session.execute(
                select(ChunkRow, DocumentRow).join(DocumentRow).where(ChunkRow.id.in_(ids))
            ).all()
        found = {chunk.id: (chunk, doc) for chunk, doc in rows}
        hits = []
        for cid, score in head:
            if cid not in found:
                continue
            chunk, doc = found[cid]
            hits.append(
                SearchHit(
                    chunk_id=cid,
                    doc_id=doc.id,
                    source=doc.source,
                    title=doc.title,
                    date=doc.date,
                    ordinal=chunk.ordinal,
                    start=chunk.start,
                    end=chunk.end,
                    text=chunk.text,
                    score=round(score, 6),
                    mode=mode,
                )
            )
            if len(hits) == k:
                break
        return hits

    def stats(self) -> IndexStats:
        with self.sessions() as session:
            state = read_state(session)
            docs, oldest, newest = session.execute(
                select(func.count(DocumentRow.id), func.min(DocumentRow.date), func.max(DocumentRow.date))
            ).one()
            chunks = session.scalar(select(func.count(ChunkRow.id))) or 0
        _, dense, _ = self._stores()
        return IndexStats(
            documents=docs,
            chunks=chunks,
            vectors=len(dense) if dense is not None else 0,
            index_version=state.version if state else 0,
            embedder=state.embedder if state else self.settings.embedder,
            dim=state.dim if state else None,
            faiss_index=state.faiss_index if state else self.settings.faiss_index,
            chunk_tokens=state.chunk_tokens if state else self.settings.chunk_tokens,
            chunk_overlap=state.chunk_overlap if state else self.settings.chunk_overlap,
            oldest=oldest,
            newest=newest,
            database=_redact(self.settings.resolved_database_url),
            index_dir=str(self.settings.index_dir),
        )


def _redact(url: str) -> str:
    """Never show a database password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
