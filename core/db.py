"""The database: every table of keepcurrent's one database on one `DeclarativeBase` (the schema), and the
one place that makes SQLAlchemy engines and sessions (SQLite under KC_HOME by default, any SQLAlchemy URL,
PostgreSQL in compose: `Settings().resolved_database_url`). "Engine" elsewhere means a model engine
(`core.engine.Engine`); the SQLAlchemy one is always a `db_engine` here.

    documents, chunks, index_state   the indexer's metadata (written by `indexer.pipeline`)
    checkpoints                      the checkpoint registry (`core.registry`)
    feedback                         users' ratings and preferences (`service.feedback`, `core.feedback`)

`get_db_engine(url)` creates every table (one `Base.metadata.create_all`) the first time a process uses a
URL, so whichever part of the system touches the database first, the schema is whole.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine as DbEngine
from sqlalchemy.engine.url import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, sessionmaker


class Base(DeclarativeBase):
    pass


# -- the indexer's metadata ---------------------------------------------------------------------------


class DocumentRow(Base):
    __tablename__ = "documents"

    id: Mapped[str] = mapped_column(
        String(64), primary_key=True, comment="sha256 of title, date, source, text"
    )
    uri: Mapped[str] = mapped_column(String(2048), unique=True, index=True)
    path: Mapped[str] = mapped_column(String(2048), index=True)
    file_hash: Mapped[str] = mapped_column(String(64), comment="sha256 of the file's bytes when last read")
    source: Mapped[str] = mapped_column(String(2048), index=True)
    title: Mapped[str] = mapped_column(Text)
    date: Mapped[dt.date] = mapped_column(Date, index=True)
    bytes: Mapped[int] = mapped_column(Integer)
    n_chunks: Mapped[int] = mapped_column(Integer)
    ingested_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))

    chunks: Mapped[list[ChunkRow]] = relationship(
        back_populates="document", cascade="all, delete-orphan", passive_deletes=True
    )


class ChunkRow(Base):
    __tablename__ = "chunks"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False, comment="FAISS id")
    doc_id: Mapped[str] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"), index=True)
    ordinal: Mapped[int] = mapped_column(Integer)
    start: Mapped[int] = mapped_column(Integer)
    end: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)

    document: Mapped[DocumentRow] = relationship(back_populates="chunks")


class IndexStateRow(Base):
    """One row: the committed index version and the configuration the index was built with."""

    __tablename__ = "index_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    embedder: Mapped[str] = mapped_column(String(1024))
    dim: Mapped[int] = mapped_column(Integer)
    faiss_index: Mapped[str] = mapped_column(String(16))
    chunk_tokens: Mapped[int] = mapped_column(Integer)
    chunk_overlap: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


# -- the checkpoint registry --------------------------------------------------------------------------


class CheckpointRow(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("phase", "tag", name="uq_checkpoints_phase_tag"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tag: Mapped[str] = mapped_column(String(256), index=True)
    phase: Mapped[str] = mapped_column(String(32), index=True)
    path: Mapped[str] = mapped_column(String(2048))
    parent: Mapped[str | None] = mapped_column(String(2048), nullable=True, comment="parent checkpoint path")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


# -- user feedback ------------------------------------------------------------------------------------


class FeedbackRow(Base):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    kind: Mapped[str] = mapped_column(String(16), index=True, comment="rating | preference")
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text, nullable=True, comment="rating: the rated answer")
    rating: Mapped[int | None] = mapped_column(Integer, nullable=True, comment="rating: 1 (bad) to 5 (good)")
    chosen: Mapped[str | None] = mapped_column(Text, nullable=True, comment="preference: the better answer")
    rejected: Mapped[str | None] = mapped_column(Text, nullable=True, comment="preference: the worse answer")
    strategy: Mapped[str | None] = mapped_column(String(32), nullable=True)
    model: Mapped[str | None] = mapped_column(String(256), nullable=True)
    checkpoint_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)


# -- SQLAlchemy engines and sessions ------------------------------------------------------------------


def sqlite_file(url: str) -> Path | None:
    """The database file of an SQLite URL; None for an in-memory database or another backend."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(str(parsed.database)).expanduser()


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    cur = dbapi_connection.cursor()
    # WAL lets the service read while an ingest writes; foreign keys make chunk deletes cascade.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


@lru_cache(maxsize=8)
def get_db_engine(url: str) -> DbEngine:
    """One SQLAlchemy engine per URL per process, with every table created on first use."""
    if (path := sqlite_file(url)) is not None:
        # The default database lives under KC_HOME, which may not exist yet on a fresh machine.
        path.parent.mkdir(parents=True, exist_ok=True)
    db_engine = create_engine(url, pool_pre_ping=True)
    if db_engine.dialect.name == "sqlite":
        event.listen(db_engine, "connect", _sqlite_pragmas)
    Base.metadata.create_all(db_engine)
    return db_engine


def redact_url(url: str) -> str:
    """The URL with any password hidden: what messages and logs may show of a database."""
    return make_url(url).render_as_string(hide_password=True)


def db_error_reason(e: BaseException) -> str:
    """The driver's own message (SQLAlchemy's wrapper adds a background link), its first line, with its
    class: what an error message may say of a database failure."""
    cause = getattr(e, "orig", None) or e
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0][:300]}" if lines else type(cause).__name__


def database_unreachable(e: BaseException) -> bool:
    """Whether `e` says the database cannot answer now (down, restarting, its disk full), rather than that
    a query or the schema is wrong."""
    from sqlalchemy.exc import DBAPIError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(e, OperationalError | PoolTimeout):
        return True
    return isinstance(e, DBAPIError) and e.connection_invalidated


def session_factory(url: str) -> sessionmaker:
    return sessionmaker(get_db_engine(url), expire_on_commit=False)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
