"""`POST /admin/reload`: serve the newest CPT checkpoint without restarting the gateway.

    curl -X POST -H "Authorization: Bearer $KC_API_KEY" http://127.0.0.1:8000/admin/reload

Admin endpoints exist only when `KC_API_KEY` is set (403 otherwise): loading a model is not for anyone who
can reach the port. The CPT model is resolved as at start-up (`KC_CPT_MODEL`, else the newest registered
`merged`, else `cpt` checkpoint); with the embedded engine it is loaded beside the running models, new
requests go to it, and the model it replaces stops after finishing the answers it had started. With the
vllm engine a model is a server: start one for the new checkpoint (`--served-model-name keepcurrent-cpt`)
and post its URL, `{"url": "http://HOST:PORT/v1"}`; the gateway checks that it serves that name and routes
the `cpt` strategy to it. Without a URL, the server it routes to now is asked again (restarted on a new
checkpoint).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request

from core.engine import Engine, ModelCard
from service.api_schemas import ReloadRequest, ReloadResult
from service.deps import EngineDep, SettingsDep, StrategiesDep
from service.engines.vllm import VLLMEngine
from service.errors import BadRequest, Forbidden, NotFound
from service.security import require_api_key
from service.served_models import ModelSpec, SettingsError, cpt_spec, resolve_cpt
from service.settings import ServiceSettings
from service.strategies import Strategies
from service.strategies.cpt import NO_CPT


async def require_admin(request: Request, settings: SettingsDep) -> None:
    if settings.api_key is None:
        raise Forbidden(
            "admin endpoints are off: set KC_API_KEY to enable them (they need a key)", code="admin_disabled"
        )
    await require_api_key(request, settings)


router = APIRouter(tags=["admin"], dependencies=[Depends(require_admin)])
_reload_lock = asyncio.Lock()


@router.post("/admin/reload")
async def reload_cpt(
    engine: EngineDep, strategies: StrategiesDep, settings: SettingsDep, body: ReloadRequest | None = None
) -> ReloadResult:
    if isinstance(engine, VLLMEngine):
        return await _route_vllm(engine, strategies, settings, body.url if body else None)
    load = getattr(engine, "load", None)
    if load is None:
        raise BadRequest(f"the {engine.kind} engine does not load checkpoints", code="reload_unsupported")
    async with _reload_lock:  # two reloads at once would load the same model twice
        try:
            path = await asyncio.to_thread(resolve_cpt, settings)
        except SettingsError as e:
            raise BadRequest(str(e), code="invalid_cpt_model") from e
        if path is None:
            raise NotFound(NO_CPT, code="no_cpt_checkpoint")
        from service.engines.embedded import checkpoint_stamp

        current = _card(engine, settings.cpt_model_name)
        previous = current.checkpoint_id if current else None
        if current is not None and current.extra.get("stamp") == checkpoint_stamp(path):
            return ReloadResult(
                reloaded=False, model=current.name, checkpoint_id=current.checkpoint_id, path=str(path),
                previous_checkpoint_id=previous,
            )  # fmt: skip
        try:
            card = await load(cpt_spec(settings, path))
        except (ValueError, OSError) as e:  # not a model directory, no chat template, unreadable weights
            raise BadRequest(f"cannot serve {path}: {e}", code="invalid_cpt_model") from e
        strategies.ctx.cpt_model = card.name
    return ReloadResult(
        reloaded=True, model=card.name, checkpoint_id=card.checkpoint_id, path=str(path),
        previous_checkpoint_id=previous,
    )  # fmt: skip


async def _route_vllm(
    engine: VLLMEngine, strategies: Strategies, settings: ServiceSettings, url: str | None
) -> ReloadResult:
    """A vLLM server is a model: the operator starts one for the new checkpoint and posts its URL."""
    name = settings.cpt_model_name
    current = _card(engine, name)
    url = (url or (current.extra["url"] if current else None) or "").rstrip("/")
    if not url:
        raise BadRequest(
            f"no vLLM server for {name!r}: start one on the new checkpoint (--served-model-name {name}) and "
            'POST {"url": "http://HOST:PORT/v1"}',
            code="reload_needs_url",
        )
    async with _reload_lock:
        previous = current.checkpoint_id if current else None
        card = await engine.load(ModelSpec(name, "cpt", url=url))  # unreachable or wrong name: 503/404
        strategies.ctx.cpt_model = card.name
    return ReloadResult(
        reloaded=card.checkpoint_id != previous or current is None or current.extra["url"] != url,
        model=card.name, checkpoint_id=card.checkpoint_id, path=url, previous_checkpoint_id=previous,
    )  # fmt: skip


def _card(engine: Engine, name: str) -> ModelCard | None:
    return next((c for c in engine.models() if c.name == name), None)
