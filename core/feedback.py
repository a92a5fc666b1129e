"""User feedback (ratings of an answer, preferences between two answers) in the `feedback` table.

The gateway's `POST /feedback` writes the rows (`service.feedback.FeedbackStore`); the trainer reads them
back as preference pairs for the reward model (`python -m trainer reward-model`). Same database as the
index and the checkpoint registry (`Settings().resolved_database_url`): SQLite under KC_HOME by default,
PostgreSQL in compose.

    from core.feedback import read_feedback
    rows = read_feedback(Settings().resolved_database_url)
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import DateTime, Integer, String, Text, create_engine, inspect, select
from sqlalchemy.engine.url import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


class Base(DeclarativeBase):
    pass


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


def read_feedback(url: str, kind: str | None = None) -> list[FeedbackRow]:
    """Feedback rows (only those of `kind` when given), oldest first, detached from the session. A database
    that has no feedback yet (no file, no table) has no rows: reading creates nothing."""
    parsed = make_url(url)
    on_disk = parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:")
    if on_disk and not Path(str(parsed.database)).expanduser().exists():
        return []
    engine = create_engine(url)
    try:
        if not inspect(engine).has_table(FeedbackRow.__tablename__):
            return []
        query = select(FeedbackRow).order_by(FeedbackRow.id)
        if kind is not None:
            query = query.where(FeedbackRow.kind == kind)
        with Session(engine, expire_on_commit=False) as session:
            return list(session.scalars(query))
    finally:
        engine.dispose()
