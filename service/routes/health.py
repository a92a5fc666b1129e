"""`GET /healthz` (the process answers), `GET /readyz` (engine, database, index reachable), `GET /metrics`."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from core.db import check_database, db_error_reason
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
    url = settings.resolved_database_url
    try:  # one `SELECT 1`: feedback, documents and the index state all live in this database
        await asyncio.to_thread(check_database, url)
    except Exception as e:
        raise database_unavailable(url, e) from e
    try:
        version = await asyncio.to_thread(lambda: retriever.version)
    except Exception as e:  # any failure to read the index means not ready, with the reason
        raise EngineUnavailable(
            f"the index is unreachable: {db_error_reason(e)}", code="index_unavailable"
        ) from e
    return Readiness(engine=details, index_version=version, queue_depth=engine.queue_depth())


@router.get("/metrics", dependencies=[ApiKey], response_class=Response)
async def metrics(m: MetricsDep) -> Response:
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
