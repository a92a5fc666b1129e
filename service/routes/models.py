"""`GET /v1/models`: the served models, OpenAI-style, with where each comes from (extension)."""

from __future__ import annotations

import time

from fastapi import APIRouter

from service.api_schemas import ModelList, ModelMeta, ModelObject
from service.deps import EngineDep
from service.security import ApiKey

router = APIRouter(tags=["models"], dependencies=[ApiKey])
STARTED = int(time.time())


@router.get("/v1/models")
async def list_models(engine: EngineDep) -> ModelList:
    return ModelList(
        data=[
            ModelObject(
                id=card.name,
                created=STARTED,
                max_model_len=card.context_window or None,
                keepcurrent=ModelMeta(
                    role=card.role,
                    checkpoint_id=card.checkpoint_id,
                    context_window=card.context_window,
                    phase=card.phase,
                ),
            )
            for card in engine.models()
        ]
    )
