"""A nano world and a nano base checkpoint, built once per session for the trainer tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from eval.world import WorldConfig, generate_world, write_world


@contextmanager
def kc_home_env(home: Path) -> Iterator[None]:
    """Session fixtures run before the per-test KC_HOME: give them their own."""
    old = os.environ.get("KC_HOME")
    os.environ["KC_HOME"] = str(home)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("KC_HOME", None)
        else:
            os.environ["KC_HOME"] = old


@pytest.fixture(scope="session")
def nano_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world") / "nano"
    write_world(generate_world(WorldConfig(seed=0, size="nano")), out)
    return out


@pytest.fixture(scope="session")
def nano_base(nano_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A nano model pretrained for a few steps on the nano world's documents and grounded QA."""
    from trainer.pretrain import PretrainConfig, run_pretrain

    home = tmp_path_factory.mktemp("session-home")
    cfg = PretrainConfig(
        preset="nano",
        corpus=[nano_world / "corpus_pre"],
        mix=[nano_world / "sft" / "grounded.jsonl", nano_world / "sft" / "closed_book.jsonl"],
        out=home / "base",
        tag="nano-session",
    )
    with kc_home_env(home):
        result = run_pretrain(cfg, {"max_steps": 30, "eval_every": 10, "save_every": 30})
    return Path(result["out"])
