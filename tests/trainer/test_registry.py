"""The checkpoint registry table (core.registry) on the per-test SQLite database."""

from __future__ import annotations

import datetime as dt

import pytest

from core.registry import find_checkpoint, latest, list_checkpoints, register_checkpoint
from core.settings import Settings


def test_register_list_latest(settings: Settings) -> None:
    url = settings.resolved_database_url
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    register_checkpoint(url, tag="a", phase="base", path="/x/a", metrics={"loss": 2.0}, created_at=t0)
    register_checkpoint(url, tag="b", phase="base", path="/x/b", created_at=t0 + dt.timedelta(hours=1))
    register_checkpoint(url, tag="a-sft", phase="sft", path="/x/a-sft", parent="/x/a", created_at=t0)

    assert [e.tag for e in list_checkpoints(url)] == ["b", "a-sft", "a"]  # same time: newest row first
    assert [e.tag for e in list_checkpoints(url, "sft")] == ["a-sft"]
    assert latest(url, "base").tag == "b"  # type: ignore[union-attr]
    assert latest(url, "rl") is None
    sft = find_checkpoint(url, "a-sft")
    assert sft is not None and sft.parent == "/x/a" and sft.phase == "sft"
    assert list_checkpoints(url, "base")[1].metrics == {"loss": 2.0}
    assert settings.resolved_home.joinpath("keepcurrent.db").exists()


def test_same_phase_and_tag_updates_the_row(settings: Settings) -> None:
    url = settings.resolved_database_url
    first = register_checkpoint(url, tag="run", phase="base", path="/x/run", metrics={"step": 10})
    second = register_checkpoint(url, tag="run", phase="base", path="/x/run", metrics={"step": 20})
    assert first.id == second.id
    (entry,) = list_checkpoints(url)
    assert entry.metrics == {"step": 20}
    assert entry.to_dict()["created_at"].startswith(str(entry.created_at.year))


@pytest.mark.parametrize(("phase", "tag"), [("nope", "t"), ("base", ""), ("base", "a/b")])
def test_bad_phase_or_tag(settings: Settings, phase: str, tag: str) -> None:
    with pytest.raises(ValueError):
        register_checkpoint(settings.resolved_database_url, tag=tag, phase=phase, path="/x")
