"""Which model name serves what: the chat model and the CPT model, from settings and the checkpoint registry.

The chat model is `KC_MODEL`, else the newest registered rl, sft or import checkpoint. The CPT model is
`KC_CPT_MODEL`, else the newest registered `merged` checkpoint (CPT + chat vector, `python -m trainer
merge`), else the newest raw `cpt` one, else none (the `cpt` strategy then answers with a clear error).
`POST /admin/reload` resolves it again and loads a new one without a restart. With the vllm engine the
names are the keys of `KC_VLLM_URLS`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from core.registry import list_checkpoints
from service.settings import ServiceSettings

log = logging.getLogger(__name__)

CHAT_PHASES = ("rl", "sft", "import")
CPT_PHASES = ("merged", "cpt")  # in order of preference: the chat-vector merge follows the chat template


class SettingsError(ValueError):
    """The gateway cannot start with these settings; the message names the setting and the fix."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    role: Literal["chat", "cpt"]
    path: Path | None = None  # embedded: the checkpoint directory
    url: str | None = None  # vllm: the server's base URL
    checkpoint_id: str | None = None
    phase: str | None = None


def lineage_of(path: Path) -> tuple[str, str | None]:
    """(checkpoint id, phase) from the directory's lineage.json; the directory name without one."""
    file = path / "lineage.json"
    if file.exists():
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
            tag, phase = data.get("tag"), data.get("phase")
            if tag:
                return (f"{phase}/{tag}" if phase else str(tag)), phase
        except (OSError, ValueError):
            log.warning("unreadable %s; naming the checkpoint after its directory", file)
    return path.name, None


def _newest(url: str, phases: tuple[str, ...]) -> Path | None:
    try:
        entries = [e for phase in phases for e in list_checkpoints(url, phase)]
    except Exception as e:  # the registry is optional for serving; an explicit path always works
        log.warning("checkpoint registry unreadable (%s); set KC_MODEL", type(e).__name__)
        return None
    entries = [e for e in entries if Path(e.path).is_dir()]
    if not entries:
        return None
    return Path(max(entries, key=lambda e: e.created_at).path)


def _check_dir(path: Path, setting: str) -> Path:
    path = path.expanduser().resolve()
    if not (path / "config.json").exists():
        raise SettingsError(f"{setting}={path} is not a model directory (no config.json)")
    return path


def resolve_models(settings: ServiceSettings) -> list[ModelSpec]:
    if settings.engine == "vllm":
        return _vllm_models(settings)
    url = settings.resolved_database_url
    chat = settings.model and _check_dir(settings.model, "KC_MODEL")
    chat = chat or _newest(url, CHAT_PHASES)
    if chat is None:
        raise SettingsError(
            "no chat model: set KC_MODEL to a checkpoint directory, or train one "
            "(`python -m trainer sft`; it registers itself)"
        )
    cpt = resolve_cpt(settings)
    if settings.model_name == settings.cpt_model_name:
        raise SettingsError(f"KC_MODEL_NAME and KC_CPT_MODEL_NAME are both {settings.model_name!r}")
    specs = [ModelSpec(settings.model_name, "chat", path=chat, **_ids(chat))]
    if cpt is not None:
        specs.append(cpt_spec(settings, cpt))
    return specs


def resolve_cpt(settings: ServiceSettings) -> Path | None:
    """The CPT checkpoint to serve: KC_CPT_MODEL, else the newest merged, else the newest raw cpt one."""
    if settings.cpt_model:
        return _check_dir(settings.cpt_model, "KC_CPT_MODEL")
    url = settings.resolved_database_url
    for phase in CPT_PHASES:
        found = _newest(url, (phase,))
        if found is not None:
            return found
    return None


def cpt_spec(settings: ServiceSettings, path: Path) -> ModelSpec:
    return ModelSpec(settings.cpt_model_name, "cpt", path=path, **_ids(path))


def _ids(path: Path) -> dict[str, str | None]:
    checkpoint_id, phase = lineage_of(path)
    return {"checkpoint_id": checkpoint_id, "phase": phase}


def _vllm_models(settings: ServiceSettings) -> list[ModelSpec]:
    urls = settings.vllm_urls
    if not urls:
        raise SettingsError(
            'KC_ENGINE=vllm needs KC_VLLM_URLS, e.g. KC_VLLM_URLS=\'{"keepcurrent": "http://127.0.0.1:8001/v1"}\''
        )
    if settings.model_name not in urls:
        raise SettingsError(
            f"KC_MODEL_NAME={settings.model_name!r} is not a key of KC_VLLM_URLS ({', '.join(urls)}): "
            "name the chat model's server after it, or set KC_MODEL_NAME"
        )
    specs = []
    for name, url in urls.items():
        role: Literal["chat", "cpt"] = "cpt" if name == settings.cpt_model_name else "chat"
        specs.append(ModelSpec(name, role, url=url))
    return specs
