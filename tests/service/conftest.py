"""Fixtures for the gateway: a nano checkpoint built by the trainer's own functions, a small index, apps and
live gateway processes.

The nano model is untrained (random weights, initialised wide so that it writes varied text rather than
one token over and over): the tests check the serving machinery, not answer quality.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from gateway_support import LiveGateway, build_nano_checkpoint, copy_checkpoint, make_app, write_docs

from service.settings import ServiceSettings


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (`@pytest.mark.anyio`) run on asyncio, as uvicorn does."""
    return "asyncio"


@pytest.fixture(scope="session")
def nano_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_nano_checkpoint(tmp_path_factory.mktemp("models") / "nano")


@pytest.fixture(scope="session")
def nano_cpt(nano_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second checkpoint standing in for a CPT one (same weights, its own lineage)."""
    return copy_checkpoint(
        nano_model, tmp_path_factory.mktemp("models") / "nano-cpt", phase="cpt", tag="nano-cpt"
    )


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    return write_docs(tmp_path / "docs")


@pytest.fixture
def service_settings(kc_home: Path, nano_model: Path) -> ServiceSettings:
    return ServiceSettings(home=kc_home, model=nano_model)


@pytest.fixture
def indexed(service_settings: ServiceSettings, docs: Path, embedder: Any) -> ServiceSettings:
    """Settings whose KC_HOME holds an index of DOCS."""
    from indexer.pipeline import Index

    Index(service_settings, embedder=embedder).ingest(docs)
    return service_settings


@pytest.fixture
def client(indexed: ServiceSettings, embedder: Any) -> Iterator[TestClient]:
    with TestClient(make_app(indexed, embedder)) as c:
        yield c


@pytest.fixture
def start_gateway(tmp_path: Path) -> Iterator[Any]:
    """Start gateway processes with extra KC_* variables; all are stopped at the end of the test."""
    started: list[LiveGateway] = []

    def start(env: dict[str, str], name: str = "gateway") -> LiveGateway:
        gateway = LiveGateway(env, tmp_path / f"{name}.log")
        started.append(gateway)
        return gateway.wait_ready()

    yield start
    for gateway in started:
        gateway.stop()
