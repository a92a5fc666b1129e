"""`POST /feedback`: a rating of an answer, or a preference between two, stored for reward modelling."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter

from service.api_schemas import Feedback, FeedbackResponse
from service.deps import FeedbackDep
from service.security import ApiKey

router = APIRouter(tags=["feedback"], dependencies=[ApiKey])


@router.post("/feedback", status_code=201)
async def add_feedback(body: Feedback, store: FeedbackDep) -> FeedbackResponse:
    row = await asyncio.to_thread(store.add, body)
    return FeedbackResponse(id=row.id, kind=body.kind, created_at=row.created_at)
