"""The checkpoint registry: one table that lists every checkpoint by phase and tag.

The trainer registers each checkpoint it writes (`python -m trainer list` reads them back); the service can
ask for the latest checkpoint of a phase. The checkpoint directory itself (with its `lineage.json`) is the
source of truth; a row here only points at it.

    from core.registry import latest, list_checkpoints, register_checkpoint
    url = Settings().resolved_database_url
    register_checkpoint(url, tag="tiny-1a2b", phase="base", path="/var/checkpoints/base/tiny-1a2b")
    latest(url, "base")
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, UniqueConstraint, create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.engine.url import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

PHASES = ("tokenizer", "base", "sft", "reward", "rl", "cpt", "merged", "import")


class Base(DeclarativeBase):
    pass


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


@dataclass(frozen=True)
class CheckpointEntry:
    """A registry row, detached from the database session."""

    id: int
    tag: str
    phase: str
    path: str
    parent: str | None
    created_at: dt.datetime
    metrics: dict[str, Any]

    @classmethod
    def from_row(cls, row: CheckpointRow) -> CheckpointEntry:
        return cls(row.id, row.tag, row.phase, row.path, row.parent, row.created_at, dict(row.metrics or {}))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["created_at"] = self.created_at.isoformat()
        return out


@lru_cache(maxsize=8)
def _engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        # The default database lives under KC_HOME, which may not exist yet on a fresh machine.
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    return engine


def register_checkpoint(
    url: str,
    *,
    tag: str,
    phase: str,
    path: str | Path,
    parent: str | Path | None = None,
    metrics: dict[str, Any] | None = None,
    created_at: dt.datetime | None = None,
) -> CheckpointEntry:
    """Add the checkpoint, or update the row of the same (phase, tag): re-saving a run refreshes it."""
    if phase not in PHASES:
        raise ValueError(f"phase {phase!r} is not one of {', '.join(PHASES)}")
    if not tag or "/" in tag:
        raise ValueError(f"checkpoint tag {tag!r} must be non-empty and contain no '/'")
    when = created_at or dt.datetime.now(dt.UTC)
    with Session(_engine(url), expire_on_commit=False) as session, session.begin():
        row = session.scalar(
            select(CheckpointRow).where(CheckpointRow.phase == phase, CheckpointRow.tag == tag)
        )
        if row is None:
            row = CheckpointRow(tag=tag, phase=phase)
            session.add(row)
        row.path = str(path)
        row.parent = str(parent) if parent is not None else None
        row.created_at = when
        row.metrics = dict(metrics or {})
        session.flush()
        return CheckpointEntry.from_row(row)


def list_checkpoints(url: str, phase: str | None = None) -> list[CheckpointEntry]:
    """Checkpoints, newest first; only those of `phase` when given."""
    query = select(CheckpointRow).order_by(CheckpointRow.created_at.desc(), CheckpointRow.id.desc())
    if phase is not None:
        query = query.where(CheckpointRow.phase == phase)
    with Session(_engine(url)) as session:
        return [CheckpointEntry.from_row(r) for r in session.scalars(query)]


def latest(url: str, phase: str) -> CheckpointEntry | None:
    """The most recently registered checkpoint of a phase, or None."""
    found = list_checkpoints(url, phase)
    return found[0] if found else None


def find_checkpoint(url: str, tag: str, phase: str | None = None) -> CheckpointEntry | None:
    """The checkpoint with this tag (newest first if several phases use it), or None."""
    query = select(CheckpointRow).where(CheckpointRow.tag == tag)
    if phase is not None:
        query = query.where(CheckpointRow.phase == phase)
    query = query.order_by(CheckpointRow.created_at.desc())
    with Session(_engine(url)) as session:
        row = session.scalars(query).first()
        return CheckpointEntry.from_row(row) if row else None
