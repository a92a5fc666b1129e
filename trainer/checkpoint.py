"""Checkpoint directories: what every phase writes and the next one reads.

A checkpoint is a Hugging Face directory that plain transformers and vLLM load (`config.json`,
`model.safetensors`, `generation_config.json`, `tokenizer.json`, `chat_template.jinja`) plus
`lineage.json`: phase, tag, parent checkpoint, data manifest hash, resolved config, metrics, code version.
Each save is also registered in the checkpoint registry (`core.registry`), so `python -m trainer list`
and the service find it by phase and tag.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from core.config_flags import to_jsonable
from core.registry import find_checkpoint, register_checkpoint
from core.settings import Settings

logger = logging.getLogger(__name__)

LINEAGE_FILE = "lineage.json"
STAGING_DIR = ".saving"
REPO_ROOT = Path(__file__).resolve().parents[1]


def checkpoints_root() -> Path:
    return Settings().resolved_home / "checkpoints"


def default_out(phase: str, tag: str) -> Path:
    """`$KC_HOME/checkpoints/<phase>/<tag>`."""
    return checkpoints_root() / phase / tag


def code_version() -> str:
    """`git describe` of the source tree when it is a checkout, else the installed package version."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return f"git:{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        try:
            return f"keepcurrent=={metadata.version('keepcurrent')}"
        except metadata.PackageNotFoundError:
            return "unknown"


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(to_jsonable(data), indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_lineage(path: str | Path) -> dict[str, Any]:
    file = Path(path) / LINEAGE_FILE
    if not file.exists():
        return {}
    return dict(json.loads(file.read_text(encoding="utf-8")))


def set_generation_tokens(model: Any, tokenizer: Any) -> None:
    """Stop on the end of a chat turn as well as the end of a document; pad with the pad token."""
    from trainer.tokenizer import stop_token_ids

    if getattr(model, "generation_config", None) is None:  # a reward model: it generates nothing
        return

    stops = stop_token_ids(tokenizer)
    gen = model.generation_config
    gen.eos_token_id = stops if len(stops) > 1 else stops[0]
    gen.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = gen.pad_token_id


def save_checkpoint(
    model: Any,
    tokenizer: Any,
    out_dir: Path,
    *,
    phase: str,
    tag: str,
    parent: str | Path | None,
    data_sha256: str | None,
    config: Any,
    metrics: dict[str, Any],
    extra: dict[str, Any] | None = None,
    register: bool = True,
) -> dict[str, Any]:
    """Write weights, tokenizer, chat template and lineage.json into `out_dir`; register it; return the
    lineage. lineage.json is written last: a directory whose lineage names a step holds its weights."""
    from transformers.utils import logging as hf_logging

    out_dir.mkdir(parents=True, exist_ok=True)
    set_generation_tokens(model, tokenizer)
    # Written into a staging folder, then each file renamed into place: a run killed mid-save leaves the
    # previous step's files whole (a half-written config.json would stop `--resume` from loading).
    staging = out_dir / STAGING_DIR
    shutil.rmtree(staging, ignore_errors=True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a bar per periodic save would break the one-line-per-step log
    try:
        model.save_pretrained(str(staging))
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    tokenizer.save_pretrained(str(staging))
    for file in sorted(staging.iterdir()):
        os.replace(file, out_dir / file.name)
    staging.rmdir()
    lineage: dict[str, Any] = {
        "phase": phase,
        "tag": tag,
        "parent": str(parent) if parent is not None else None,
        "data_sha256": data_sha256,
        "config": to_jsonable(config),
        "metrics": to_jsonable(metrics),
        "code_version": code_version(),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "num_params": int(sum(p.numel() for p in model.parameters())),
        **(extra or {}),
    }
    write_json_atomic(out_dir / LINEAGE_FILE, lineage)
    if register:
        register_checkpoint(
            Settings().resolved_database_url,
            tag=tag,
            phase=phase,
            path=out_dir.resolve(),
            parent=lineage["parent"],
            metrics=lineage["metrics"],
        )
    logger.info("saved %s checkpoint %s -> %s", phase, tag, out_dir)
    return lineage


def resolve_checkpoint(ref: str | Path) -> Path:
    """A checkpoint directory from a path, or from a registered tag (`tag` or `phase/tag`)."""
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists() and not (path / "tokenizer.json").exists():
            raise ValueError(f"{path} is not a checkpoint directory (no config.json)")
        return path.resolve()
    text = str(ref)
    phase, _, tag = text.rpartition("/") if text.count("/") == 1 else (None, "", text)
    entry = find_checkpoint(Settings().resolved_database_url, tag, phase or None)
    if entry is None:
        raise ValueError(
            f"checkpoint {text!r} is neither a directory nor a registered tag (see `python -m trainer list`)"
        )
    if not Path(entry.path).is_dir():
        raise ValueError(f"checkpoint {text!r} is registered at {entry.path}, which no longer exists")
    return Path(entry.path)
