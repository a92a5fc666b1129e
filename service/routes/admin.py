"""`POST /admin/reload`: serve the newest CPT checkpoint without restarting the gateway.

    curl -X POST -H "Authorization: Bearer $KC_API_KEY" http://127.0.0.1:8000/admin/reload

Admin endpoints exist only when `KC_API_KEY` is set (403 otherwise): loading a model is not for anyone who
can reach the port. The CPT model is resolved as at start-up (`KC_CPT_MODEL`, else the newest registered
`merged`, else `cpt` checkpoint); with the embedded engine it is loaded beside the running models, new
requests go to it, and the model it replaces stops after finishing the answers it had started. With the
vllm engine a model is a server: start one for the checkpoint (`vllm serve DIR --served-model-name
keepcurrent-cpt`), add it to `KC_VLLM_URLS` and restart the gateway.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request

from service.deps import EngineDep, SettingsDep, StrategiesDep
from service.errors import BadRequest, Forbidden, NotFound
from service.protocol import ReloadResult
from service.registry import ConfigError, cpt_spec, resolve_cpt
from service.security import require_api_key
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
async def reload_cpt(engine: EngineDep, strategies: StrategiesDep, settings: SettingsDep) -> ReloadResult:
    load = getattr(engine, "load", None)
    if load is None:
        raise BadRequest(
            f"the {engine.kind} engine does not load checkpoints: start a vLLM server for the new "
            f"checkpoint (--served-model-name {settings.cpt_model_name}), add it to KC_VLLM_URLS and "
            "restart the gateway",
            code="reload_unsupported",
        )
    async with _reload_lock:  # two reloads at once would load the same model twice
        try:
            path = await asyncio.to_thread(resolve_cpt, settings)
        except ConfigError as e:
            raise BadRequest(str(e), code="invalid_cpt_model") from e
        if path is None:
            raise NotFound(NO_CPT, code="no_cpt_checkpoint")
        from service.engines.embedded import checkpoint_stamp

        current = next((c for c in engine.models() if c.name == settings.cpt_model_name), None)
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
