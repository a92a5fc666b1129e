"""Helpers shared by the hostile-input tests (imported by name: tests/reliability has no __init__.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from service.settings import ServiceSettings

# Distinctive, so that a test can look for it in logs and bodies.
API_KEY = "kc-test-key-7f3a9c1e5b"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
HOSTILE = Path(__file__).resolve().parents[1] / "data" / "hostile"
# The routes the gateway serves without a key (docs/gateway.md).
OPEN_PATHS = frozenset({"/healthz", "/readyz"})


def indexed_settings(home: Path, model: Path, embedder: Any, docs: Path, **overrides: Any) -> ServiceSettings:
    """Settings over `model` whose KC_HOME holds an index of `docs`; short answers keep fuzzing fast."""
    from indexer.pipeline import Index

    settings = ServiceSettings(home=home, model=model, max_tokens_limit=8, default_max_tokens=4, **overrides)
    Index(settings, embedder=embedder).ingest(docs)
    return settings
