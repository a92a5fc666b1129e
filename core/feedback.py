"""User feedback (ratings of an answer, preferences between two answers) in the `feedback` table
(`core.db.FeedbackRow`).

The gateway's `POST /feedback` writes the rows (`service.feedback.FeedbackStore`); the trainer reads them
back as preference pairs for the reward model (`python -m trainer reward-model`). Same database as the
index and the checkpoint registry (`Settings().resolved_database_url`): SQLite under KC_HOME by default,
PostgreSQL in compose.

    from core.feedback import read_feedback
    rows = read_feedback(Settings().resolved_database_url)
"""

from __future__ import annotations

from sqlalchemy import select

from core.db import FeedbackRow, session_factory, sqlite_file

__all__ = ["FeedbackRow", "read_feedback"]


def read_feedback(url: str, kind: str | None = None) -> list[FeedbackRow]:
    """Feedback rows (only those of `kind` when given), oldest first, detached from the session. A SQLite
    database that does not exist yet has no feedback: reading does not create the file."""
    if (path := sqlite_file(url)) is not None and not path.exists():
        return []
    query = select(FeedbackRow).order_by(FeedbackRow.id)
    if kind is not None:
        query = query.where(FeedbackRow.kind == kind)
    with session_factory(url)() as session:
        return list(session.scalars(query))
