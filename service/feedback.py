"""User feedback (ratings and pairwise preferences) stored in the `feedback` table, for reward-model training.

The table is `core.feedback.FeedbackRow`, so that the trainer reads it without importing the service. Same
database as the index and the checkpoint registry (`Settings().resolved_database_url`), through
SQLAlchemy: SQLite under KC_HOME by default, PostgreSQL in compose.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import sessionmaker

from core.schema import Base, FeedbackRow, get_engine
from service.protocol import PreferenceFeedback, RatingFeedback


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
