"""Worlds shared by the eval tests: generated once per session (nano and tiny take well under a second)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from eval.world import World, WorldConfig, generate_world, write_world


@pytest.fixture(scope="session")
def tiny_world() -> World:
    return generate_world(WorldConfig(seed=0, size="tiny"))


@pytest.fixture(scope="session")
def nano_world() -> World:
    return generate_world(WorldConfig(seed=0, size="nano"))


@pytest.fixture(
    scope="session",
    params=[("nano", 0), ("nano", 1), ("nano", 2), ("tiny", 0)],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def world(request: pytest.FixtureRequest, tiny_world: World) -> World:
    """The property tests run on several nano worlds and on the tiny one."""
    size, seed = request.param
    return tiny_world if (size, seed) == ("tiny", 0) else generate_world(WorldConfig(seed=seed, size=size))


@pytest.fixture(scope="session")
def nano_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("world") / "nano"
    write_world(generate_world(WorldConfig(seed=0, size="nano")), out)
    return out


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, tiny_world: World) -> Path:
    out = tmp_path_factory.mktemp("world") / "tiny"
    write_world(tiny_world, out)
    return out


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`main()` reconfigures the root logger onto the captured stderr; undo that for the next tests."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
