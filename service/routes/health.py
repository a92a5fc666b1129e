"""`GET /healthz` (the process answers), `GET /readyz` (engine, database, index reachable), `GET /metrics`."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.db import database_unreachable, db_error_reason
from service.api_schemas import Health, Readiness
from service.deps import EngineDep, MetricsDep, RetrieverDep, SettingsDep
from service.errors import EngineUnavailable, database_unavailable
from service.security import ApiKey

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Health:
    return Health()


@router.get(
    "/readyz", responses={503: {"description": "the engine, the database or the index is unreachable"}}
)
async def readyz(engine: EngineDep, retriever: RetrieverDep, settings: SettingsDep) -> Readiness:
    details = await engine.ready()
    try:  # one query: the index state lives in the database that also holds documents and feedback
        version = await asyncio.to_thread(lambda: retriever.version)
    except Exception as e:  # any failure to read the index means not ready, with the reason
        if database_unreachable(e):
            raise database_unavailable(settings.resolved_database_url, e) from e
        raise EngineUnavailable(
            f"the index is unreachable: {db_error_reason(e)}", code="index_unavailable"
        ) from e
    return Readiness(engine=details, index_version=version, queue_depth=engine.queue_depth())


@router.get("/metrics", dependencies=[ApiKey], response_class=Response)
async def metrics(m: MetricsDep) -> Response:
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
