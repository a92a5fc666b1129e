"""The checkpoint registry: the `checkpoints` table (`core.db`) lists every checkpoint by phase and tag.

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
from pathlib import Path
from typing import Any

from sqlalchemy import select

from core.db import CheckpointRow, session_factory

PHASES = ("tokenizer", "base", "sft", "reward", "rl", "cpt", "merged", "import")


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
    with session_factory(url)() as session, session.begin():
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
    with session_factory(url)() as session:
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
    with session_factory(url)() as session:
        row = session.scalars(query).first()
        return CheckpointEntry.from_row(row) if row else None
