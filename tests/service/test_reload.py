"""A new CPT checkpoint is served without a restart: `POST /admin/reload` (authenticated) re-resolves the
CPT model (KC_CPT_MODEL, else the newest merged, else the newest cpt checkpoint) and loads it."""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio
import pytest
from gateway_support import running_app

from core.protocols import Retrieval
from core.registry import register_checkpoint
from core.schemas import SearchHit, SearchMode
from service.app import create_app
from service.served_models import resolve_cpt
from service.settings import ServiceSettings

KEY = {"Authorization": "Bearer admin-key"}


class NoIndex:
    """The cpt strategy is closed book: these tests need no index."""

    version = 0

    def search(self, query: str, k: int = 5, mode: SearchMode = "hybrid") -> list[SearchHit]:
        return []

    def retrieve(
        self, query: str, k: int = 5, mode: SearchMode = "hybrid", *, version: int | None = None
    ) -> Retrieval:
        return Retrieval([], {}, 0)


def _as_phase(src: Path, dst: Path, phase: str, tag: str) -> Path:
    shutil.copytree(src, dst)
    lineage = (dst / "lineage.json").read_text().replace('"phase": "cpt"', f'"phase": "{phase}"')
    (dst / "lineage.json").write_text(lineage.replace('"nano-cpt"', f'"{tag}"'))
    return dst


def test_a_merged_checkpoint_is_preferred_over_a_newer_raw_one(
    kc_home: Path, nano_model: Path, nano_cpt: Path, tmp_path: Path
) -> None:
    settings = ServiceSettings(home=kc_home, model=nano_model)
    url = settings.resolved_database_url
    assert resolve_cpt(settings) is None
    merged = _as_phase(nano_cpt, tmp_path / "merged", "merged", "nano-merged")
    register_checkpoint(url, tag="nano-merged", phase="merged", path=merged)
    register_checkpoint(url, tag="nano-cpt", phase="cpt", path=nano_cpt)  # newer, but raw
    assert resolve_cpt(settings) == merged
    pinned = ServiceSettings(home=kc_home, model=nano_model, cpt_model=nano_cpt)
    assert resolve_cpt(pinned) == nano_cpt.resolve()


@pytest.mark.anyio
async def test_admin_reload_serves_a_new_cpt_checkpoint(
    kc_home: Path, nano_model: Path, nano_cpt: Path, tmp_path: Path
) -> None:
    settings = ServiceSettings(home=kc_home, model=nano_model, api_key="admin-key")
    url = settings.resolved_database_url
    ask = {"question": "Who leads Kelvor Dynamics?", "strategy": "cpt", "max_tokens": 3}
    async with running_app(create_app(settings, retriever=NoIndex())) as client:
        r = await client.post("/ask", json=ask, headers=KEY)
        assert r.status_code == 404 and r.json()["error"]["code"] == "no_cpt_checkpoint"
        r = await client.post("/admin/reload", headers=KEY)
        assert r.status_code == 404  # nothing registered yet

        register_checkpoint(url, tag="nano-cpt", phase="cpt", path=nano_cpt)
        assert (await client.post("/admin/reload")).status_code == 401
        r = await client.post("/admin/reload", headers=KEY)
        assert r.status_code == 200, r.text
        assert r.json() | {"path": None} == {
            "reloaded": True, "model": "keepcurrent-cpt", "checkpoint_id": "cpt/nano-cpt", "path": None,
            "previous_checkpoint_id": None,
        }  # fmt: skip
        models = (await client.get("/v1/models", headers=KEY)).json()["data"]
        assert {m["id"]: m["keepcurrent"]["checkpoint_id"] for m in models}[
            "keepcurrent-cpt"
        ] == "cpt/nano-cpt"
        r = await client.post("/ask", json=ask, headers=KEY)
        assert r.status_code == 200 and r.json()["checkpoint_id"] == "cpt/nano-cpt"

        # the same checkpoint again: nothing to load
        r = await client.post("/admin/reload", headers=KEY)
        assert r.json()["reloaded"] is False

        # a merge arrives while a request is being answered: both finish, the next one uses the merge
        merged = _as_phase(nano_cpt, tmp_path / "merged", "merged", "nano-merged")
        register_checkpoint(url, tag="nano-merged", phase="merged", path=merged)
        results: dict[str, object] = {}

        async def answer() -> None:
            long = ask | {"max_tokens": 40}
            results["ask"] = await client.post("/ask", json=long, headers=KEY)

        async def reload() -> None:
            results["reload"] = await client.post("/admin/reload", headers=KEY)

        async with anyio.create_task_group() as tg:
            tg.start_soon(answer)
            tg.start_soon(reload)
        assert results["ask"].status_code == 200  # type: ignore[attr-defined]
        reloaded = results["reload"].json()  # type: ignore[attr-defined]
        assert reloaded["checkpoint_id"] == "merged/nano-merged"
        assert reloaded["previous_checkpoint_id"] == "cpt/nano-cpt"
        r = await client.post("/ask", json=ask, headers=KEY)
        assert r.json()["checkpoint_id"] == "merged/nano-merged"


@pytest.mark.anyio
async def test_admin_endpoints_need_a_configured_key(kc_home: Path, nano_model: Path) -> None:
    settings = ServiceSettings(home=kc_home, model=nano_model)
    async with running_app(create_app(settings, retriever=NoIndex())) as client:
        r = await client.post("/admin/reload")
        assert r.status_code == 403 and r.json()["error"]["code"] == "admin_disabled"


@pytest.mark.anyio
async def test_a_broken_checkpoint_is_refused_and_the_old_one_kept(
    kc_home: Path, nano_model: Path, nano_cpt: Path, tmp_path: Path
) -> None:
    settings = ServiceSettings(home=kc_home, model=nano_model, api_key="admin-key")
    register_checkpoint(settings.resolved_database_url, tag="nano-cpt", phase="cpt", path=nano_cpt)
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(nano_cpt / "config.json", broken / "config.json")  # no weights, no tokenizer
    async with running_app(create_app(settings, retriever=NoIndex())) as client:
        register_checkpoint(settings.resolved_database_url, tag="broken", phase="merged", path=broken)
        r = await client.post("/admin/reload", headers=KEY)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_cpt_model"
        ask = {"question": "Who leads Kelvor Dynamics?", "strategy": "cpt", "max_tokens": 2}
        r = await client.post("/ask", json=ask, headers=KEY)
        assert r.status_code == 200 and r.json()["checkpoint_id"] == "cpt/nano-cpt"
