"""Ingest: scan a folder, work out what changed, chunk and embed only that, and commit atomically.

    python -m indexer ingest docs/

How a commit stays crash-safe: every commit point writes a complete new index generation directory
(`$KC_HOME/index/v000042/`: FAISS + BM25) under a temporary name and renames it into place, then, in
ONE database transaction, writes the documents and chunks and advances `index_state.version` to it.
Readers load the generation the database names, so a run killed at any moment leaves the previous
version in force; orphaned generations are removed by the next run, which then finishes the work
(files already committed are unchanged and skipped).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session
from tqdm import tqdm

from core.db import ChunkRow, DocumentRow, IndexStateRow, session_factory, utcnow
from core.loaders import SkipFile, iter_files, load_file
from core.schemas import IngestSummary, SkippedFile, SourceDocument
from core.settings import Settings
from indexer.embedding import Chunker, ChunkSpan, Embedder
from indexer.stores import DenseStore, LexicalStore, lexical_tokens

log = logging.getLogger(__name__)

GEN_PREFIX = "v"
# Why writing a generation may fail, as FAISS words it (it raises RuntimeError with the strerror).
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EIO)


class IngestError(Exception):
    """A problem the user must fix (bad path, mismatched configuration); the message says how."""


def document_id(doc: SourceDocument) -> str:
    """Content hash: the same title, date, source and text always give the same id (idempotent re-ingest)."""
    h = hashlib.sha256()
    for part in (doc.title, doc.date.isoformat(), doc.source, doc.text):
        h.update(part.encode())
        h.update(b"\x00")
    return h.hexdigest()


def chunk_id(doc_id: str, ordinal: int) -> int:
    """A stable, positive int64 FAISS id derived from the document's content hash."""
    digest = hashlib.sha256(f"{doc_id}:{ordinal}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def generation_dir(index_dir: Path, version: int) -> Path:
    return index_dir / f"{GEN_PREFIX}{version:06d}"


def read_state(session: Session) -> IndexStateRow | None:
    return session.get(IndexStateRow, 1)


def check_config(state: IndexStateRow | None, settings: Settings) -> None:
    """Refuse to mix chunks built with another embedder or chunking into one index."""
    if state is None:
        return
    wanted = (settings.embedder, settings.chunk_tokens, settings.chunk_overlap, settings.faiss_index)
    built = (state.embedder, state.chunk_tokens, state.chunk_overlap, state.faiss_index)
    if wanted != built:
        names = ("KC_EMBEDDER", "KC_CHUNK_TOKENS", "KC_CHUNK_OVERLAP", "KC_FAISS_INDEX")
        pairs = zip(names, wanted, built, strict=True)
        diffs = ", ".join(f"{n}={w!r} (index built with {b!r})" for n, w, b in pairs if w != b)
        raise IngestError(
            f"settings differ from the existing index: {diffs}. Set them back, or start a new index with "
            f"another KC_HOME (or delete {settings.index_dir} and the database)."
        )


@dataclass
class _NewDoc:
    id: str
    doc: SourceDocument
    file_hash: str
    spans: list[ChunkSpan] = field(default_factory=list)
    replaces: str | None = None  # id of the document this one replaces at the same uri


@dataclass
class _Plan:
    adds: list[_NewDoc] = field(default_factory=list)
    moves: list[_NewDoc] = field(default_factory=list)  # same content at a new uri: no re-embedding
    removes: set[str] = field(default_factory=set)  # doc ids removed outright (pruned, vanished, replaced)
    file_hashes: dict[str, str] = field(default_factory=dict)  # doc id -> new file hash (content unchanged)

    def empty(self) -> bool:
        return not (self.adds or self.moves or self.removes or self.file_hashes)


class Index:
    """The index under one KC_HOME: ingest, delete, and the commit protocol they share."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None) -> None:
        self.settings = settings
        settings.ensure_home()
        self.dir = settings.index_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.embedder = embedder or Embedder(settings.embedder, settings.embed_batch_size)
        self.chunker = Chunker(self.embedder, settings.chunk_tokens, settings.chunk_overlap)
        self.sessions = session_factory(settings.resolved_database_url)
        self._tokens: dict[int, list[str]] = {}  # BM25 tokens per chunk id, reused across commits of a run
        self._dense: DenseStore | None = None  # the store as last committed by this object
        self._dense_version = -1

    # ---- public operations -------------------------------------------------------------------------

    def ingest(self, path: Path, prune: bool = True, progress: bool = True) -> IngestSummary:
        """Bring the index in line with `path` (a folder or one file). See the module docstring."""
        t0 = time.perf_counter()
        root = path.expanduser().resolve()
        if not root.exists():
            raise IngestError(f"{path}: no such file or directory")
        summary = IngestSummary()
        with self._lock():
            with self.sessions() as session:
                state = read_state(session)
                check_config(state, self.settings)
                summary.index_version = state.version if state else 0
                plan = self._plan(session, root, prune, summary)
            self._chunk(plan.adds)
            self._apply(plan, summary, progress)
        summary.seconds = round(time.perf_counter() - t0, 3)
        return summary

    def delete(self, selector: str) -> IngestSummary:
        """Remove every document whose uri, file, folder or source is `selector`."""
        t0 = time.perf_counter()
        summary = IngestSummary()
        as_path = str(Path(selector).expanduser().resolve())
        conditions = [DocumentRow.source == selector, DocumentRow.uri == selector]
        for p in {selector, as_path}:
            conditions += [DocumentRow.path == p, DocumentRow.path.startswith(p.rstrip("/") + "/")]
        with self._lock():
            with self.sessions() as session:
                ids = set(session.scalars(select(DocumentRow.id).where(or_(*conditions))))
            if not ids:
                raise IngestError(f"no indexed document matches {selector!r} (see `python -m indexer stats`)")
            self._apply(_Plan(removes=ids), summary, progress=False)
        summary.removed = len(ids)
        summary.seconds = round(time.perf_counter() - t0, 3)
        return summary

    # ---- planning ----------------------------------------------------------------------------------

    def _plan(self, session: Session, root: Path, prune: bool, summary: IngestSummary) -> _Plan:
        under = or_(DocumentRow.path == str(root), DocumentRow.path.startswith(str(root).rstrip("/") + "/"))
        existing = {row.uri: row for row in session.scalars(select(DocumentRow).where(under))}
        by_path: dict[str, list[DocumentRow]] = {}
        for row in existing.values():
            by_path.setdefault(row.path, []).append(row)

        plan = _Plan()
        seen: set[str] = set()
        parsed: list[_NewDoc] = []
        for file in tqdm(iter_files(root), desc="scan", unit="file", disable=None, leave=False):
            olds = by_path.get(str(file), [])
            try:
                size = file.stat().st_size
                if size > self.settings.max_file_bytes:
                    raise SkipFile(
                        f"{size:,} bytes is over KC_MAX_FILE_BYTES={self.settings.max_file_bytes:,}"
                    )
                data = file.read_bytes()
                file_hash = hashlib.sha256(data).hexdigest()
                if olds and all(o.file_hash == file_hash for o in olds):
                    summary.unchanged += len(olds)
                    seen.update(o.uri for o in olds)
                    continue
                docs = load_file(file, data)
            except (SkipFile, OSError) as e:
                # Keep whatever was indexed from this file before: bad input loses nothing.
                seen.update(o.uri for o in olds)
                summary.skipped += 1
                summary.skipped_files.append(SkippedFile(path=str(file), reason=str(e)))
                log.warning("skip %s: %s", file, e)
                continue
            for doc in docs:
                seen.add(doc.uri)
                new = _NewDoc(document_id(doc), doc, file_hash)
                old = existing.get(doc.uri)
                if old is not None and old.id == new.id:
                    summary.unchanged += 1
                    plan.file_hashes[old.id] = file_hash
                    continue
                if old is not None:
                    new.replaces = old.id
                parsed.append(new)

        for uri, row in existing.items():
            # A record gone from a file that was read again is gone; a file gone from disk is pruned.
            vanished = uri not in seen and (prune or Path(row.path).exists())
            if vanished:
                plan.removes.add(row.id)
                summary.removed += 1

        replaced = {n.replaces for n in parsed if n.replaces} | plan.removes
        planned: set[str] = set()
        for new in parsed:
            holder = session.get(DocumentRow, new.id)
            if new.id in planned or (holder is not None and holder.id not in replaced):
                where = holder.uri if holder is not None else "another document of this run"
                summary.skipped += 1
                summary.skipped_files.append(SkippedFile(path=new.doc.uri, reason=f"duplicate of {where}"))
                if new.replaces:
                    plan.removes.add(new.replaces)
                    summary.removed += 1
                continue
            planned.add(new.id)
            if new.replaces:
                summary.changed += 1
            else:
                summary.added += 1
            if holder is not None:
                # Identical content already embedded under a uri that is going away: move it.
                plan.moves.append(new)
                plan.removes.discard(new.id)
            else:
                plan.adds.append(new)

        # A moved document keeps its chunks and vectors: its old uri is freed in the first commit, and
        # whatever replaces it at that uri must not delete it.
        moved = {m.id for m in plan.moves}
        plan.removes.update(m.replaces for m in plan.moves if m.replaces)
        for new in plan.adds:
            if new.replaces in moved:
                new.replaces = None
        plan.removes -= moved
        return plan

    def _chunk(self, adds: list[_NewDoc]) -> None:
        for new in tqdm(adds, desc="chunk", unit="doc", disable=None, leave=False):
            new.spans = self.chunker.split(new.doc.text)

    # ---- committing ---------------------------------------------------------------------------------

    def _apply(self, plan: _Plan, summary: IngestSummary, progress: bool) -> None:
        if plan.empty():
            return
        batches = list(self._batches(plan))
        total = sum(len(n.spans) for n in plan.adds)
        with tqdm(total=total, desc="embed", unit="chunk", disable=not progress or None) as bar:
            for batch in batches:
                texts = [embed_text(n.doc.title, s.text) for n in batch.adds for s in n.spans]
                # A commit that only removes embeds nothing: no embedder loaded for a delete.
                vectors = self.embedder.encode(texts, progress=bar) if texts else None
                summary.index_version = self._commit(batch, vectors, summary)
                summary.chunks_embedded += len(texts)

    def _batches(self, plan: _Plan) -> Iterator[_Plan]:
        """Commit points: outright removals and moves go first; each new document lands in the same
        commit as the removal of the version it replaces, and a commit holds about `commit_every` chunks."""
        first = _Plan(moves=plan.moves, removes=set(plan.removes), file_hashes=plan.file_hashes)
        current, size = first, 0
        for new in plan.adds:
            if size and size + len(new.spans) > self.settings.commit_every:
                yield current
                current, size = _Plan(), 0
            current.adds.append(new)
            if new.replaces:
                current.removes.add(new.replaces)
            size += len(new.spans)
        yield current

    def _commit(self, batch: _Plan, vectors: np.ndarray | None, summary: IngestSummary) -> int:
        with self.sessions.begin() as session:
            state = read_state(session)
            version = (state.version if state else 0) + 1
            dense = self._load_dense(state)
            moved = {n.id: n for n in batch.moves}
            # Plain tuples, not ORM objects: the rows are deleted and inserted again under the same ids.
            copies = session.execute(
                select(
                    ChunkRow.doc_id,
                    ChunkRow.id,
                    ChunkRow.ordinal,
                    ChunkRow.start,
                    ChunkRow.end,
                    ChunkRow.text,
                )
                .where(ChunkRow.doc_id.in_(moved))
                .order_by(ChunkRow.doc_id, ChunkRow.ordinal)
            ).all()
            gone = set(session.scalars(select(ChunkRow.id).where(ChunkRow.doc_id.in_(batch.removes))))
            summary.chunks_removed += len(gone)
            # The database cascades chunk deletes (ON DELETE CASCADE).
            session.execute(delete(DocumentRow).where(DocumentRow.id.in_(batch.removes | set(moved))))
            session.flush()
            now = utcnow()
            for new in batch.moves:
                session.add(self._row(new, now, [tuple(c[1:]) for c in copies if c[0] == new.id]))
            new_ids: list[int] = []
            for new in batch.adds:
                spans = [(chunk_id(new.id, s.ordinal), s.ordinal, s.start, s.end, s.text) for s in new.spans]
                new_ids += [s[0] for s in spans]
                session.add(self._row(new, now, spans))
            for doc_id, file_hash in batch.file_hashes.items():
                session.execute(
                    update(DocumentRow).where(DocumentRow.id == doc_id).values(file_hash=file_hash)
                )
            session.flush()

            if dense is None:
                dense = DenseStore.empty(self.embedder.dim, self.settings.faiss_index, self.settings.hnsw_m)
            dense.remove(np.fromiter(gone, dtype=np.int64, count=len(gone)))
            if vectors is not None:
                dense.add(np.asarray(new_ids, dtype=np.int64), vectors)
            lexical = self._build_lexical(session)
            if len(lexical) != len(dense):
                raise RuntimeError(
                    f"index out of step: {len(dense)} vectors but {len(lexical)} chunks in SQL"
                )
            self._write_generation(version, dense, lexical)

            if state is None:
                state = IndexStateRow(
                    id=1,
                    embedder=self.settings.embedder,
                    dim=dense.dim,
                    faiss_index=self.settings.faiss_index,
                    chunk_tokens=self.settings.chunk_tokens,
                    chunk_overlap=self.settings.chunk_overlap,
                )
                session.add(state)
            state.version = version
            state.updated_at = now
        self._dense = dense
        self._dense_version = version
        self._remove_stale_generations(keep={version, version - 1})
        log.info("committed index version %d: %d vectors", version, len(dense))
        return version

    @staticmethod
    def _row(new: _NewDoc, now: dt.datetime, spans: list[tuple[int, int, int, int, str]]) -> DocumentRow:
        d = new.doc
        return DocumentRow(
            id=new.id,
            uri=d.uri,
            path=d.path,
            file_hash=new.file_hash,
            source=d.source,
            title=d.title,
            date=d.date,
            bytes=len(d.text.encode()),
            n_chunks=len(spans),
            ingested_at=now,
            chunks=[ChunkRow(id=i, ordinal=o, start=s, end=e, text=t) for i, o, s, e, t in spans],
        )

    def _load_dense(self, state: IndexStateRow | None) -> DenseStore | None:
        if state is None or state.version == 0:
            return None
        if self._dense is not None and self._dense_version == state.version:
            return self._dense
        return DenseStore.load(
            generation_dir(self.dir, state.version), self.settings.faiss_index, self.settings.hnsw_m
        )

    def _build_lexical(self, session: Session) -> LexicalStore:
        rows = session.execute(
            select(ChunkRow.id, ChunkRow.text, DocumentRow.title).join(DocumentRow).order_by(ChunkRow.id)
        ).all()
        tokens = []
        for cid, text, title in rows:
            if cid not in self._tokens:
                self._tokens[cid] = lexical_tokens(embed_text(title, text))
            tokens.append(self._tokens[cid])
        return LexicalStore.build(np.asarray([r[0] for r in rows], dtype=np.int64), tokens)

    def _write_generation(self, version: int, dense: DenseStore, lexical: LexicalStore) -> None:
        """Write the generation under a temporary name and rename it into place. A write that fails (a full
        disk) removes what it wrote, so as to give the space back, and raises OSError naming the cause."""
        final = generation_dir(self.dir, version)
        tmp = self.dir / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)  # an orphan of a killed run, never committed
        try:
            tmp.mkdir()
            try:
                dense.save(tmp)
            except RuntimeError as e:  # FAISS reports a failed write as a RuntimeError with strerror in it
                code = next((c for c in _WRITE_ERRNOS if os.strerror(c) in str(e)), errno.EIO)
                raise OSError(code, os.strerror(code), str(tmp / DenseStore.FILE)) from e
            lexical.save(tmp)
            for f in tmp.rglob("*"):
                if f.is_file():
                    with open(f, "rb") as fh:
                        os.fsync(fh.fileno())
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _remove_stale_generations(self, keep: set[int]) -> None:
        """Drop generations no reader can need: older than the previous one, or never committed."""
        for d in self.dir.iterdir():
            is_generation = d.name.startswith(GEN_PREFIX) and d.name[1:].isdigit()
            if d.name.startswith(".tmp-") or (is_generation and int(d.name[1:]) not in keep):
                shutil.rmtree(d, ignore_errors=True)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One writer at a time per index (readers never wait)."""
        with open(self.dir / ".lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("another ingest holds %s; waiting for it", self.dir / ".lock")
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                with self.sessions() as session:
                    state = read_state(session)
                    current = state.version if state else 0
                self._remove_stale_generations(keep={current, current - 1})
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def embed_text(title: str, text: str) -> str:
    """What is embedded and BM25-indexed for a chunk: its document title gives the chunk its context."""
    return f"{title}\n\n{text}"
