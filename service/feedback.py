"""User feedback (ratings and pairwise preferences) in the `feedback` table, for later reward-model training.

Same database as the index and the checkpoint registry (`Settings().resolved_database_url`), through
SQLAlchemy: SQLite under KC_HOME by default, PostgreSQL in compose.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from indexer.db import get_engine
from service.protocol import PreferenceFeedback, RatingFeedback


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


class FeedbackStore:
    def __init__(self, database_url: str) -> None:
        engine = get_engine(database_url)
        Base.metadata.create_all(engine)
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    def add(self, item: RatingFeedback | PreferenceFeedback) -> FeedbackRow:
        row = FeedbackRow(
            created_at=dt.datetime.now(dt.UTC),
            kind=item.kind,
            question=item.question,
            strategy=item.strategy,
            model=item.model,
            checkpoint_id=item.checkpoint_id,
            comment=item.comment,
        )
        if isinstance(item, RatingFeedback):
            row.answer, row.rating = item.answer, item.rating
        else:
            row.chosen, row.rejected = item.chosen, item.rejected
        with self.sessions() as session, session.begin():
            session.add(row)
        return row

    def all(self) -> list[FeedbackRow]:
        with self.sessions() as session:
            return list(session.query(FeedbackRow).order_by(FeedbackRow.id))
