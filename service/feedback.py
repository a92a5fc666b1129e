"""User feedback (ratings and pairwise preferences) stored in the `feedback` table, for reward-model training.

The table is `core.db.FeedbackRow`, so that the trainer reads it (`core.feedback`) without importing the
service. Same database as the index and the checkpoint registry (`Settings().resolved_database_url`),
through SQLAlchemy: SQLite under KC_HOME by default, PostgreSQL in compose. One INSERT in one transaction:
a row is whole or absent, and a 201 means it is committed; a database that cannot take it (down,
restarting, its disk full) is a 503 naming it (`service.errors`' handler for database errors).
"""

from __future__ import annotations

from core.db import FeedbackRow, session_factory, utcnow
from service.api_schemas import PreferenceFeedback, RatingFeedback


class FeedbackStore:
    def __init__(self, database_url: str) -> None:
        self.sessions = session_factory(database_url)  # creates every table, this one too

    def add(self, item: RatingFeedback | PreferenceFeedback) -> FeedbackRow:
        row = FeedbackRow(
            created_at=utcnow(),
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
