"""Fixtures for the hostile-input tests: the gateway with an API key over the nano checkpoint of the
gateway tests (tests/service/gateway_support.py) and a small index, so that a whole fuzzing run takes
seconds."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

# The gateway tests' helpers (a nano checkpoint built by the trainer's functions, the app over an index).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
from gateway_support import build_nano_checkpoint, make_app, write_docs
from reliability_support import API_KEY, indexed_settings

from service.settings import ServiceSettings


@pytest.fixture(scope="session")
def nano_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_nano_checkpoint(tmp_path_factory.mktemp("models") / "nano")


@pytest.fixture
def keyed(kc_home: Path, nano_model: Path, embedder: Any, tmp_path: Path) -> ServiceSettings:
    """A gateway's settings with KC_API_KEY set, over the four documents of the gateway tests."""
    docs = write_docs(tmp_path / "docs")
    return indexed_settings(kc_home, nano_model, embedder, docs, api_key=SecretStr(API_KEY))


@pytest.fixture
def keyed_app(keyed: ServiceSettings, embedder: Any) -> FastAPI:
    return make_app(keyed, embedder)


@pytest.fixture
def keyed_client(keyed_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(keyed_app) as client:
        yield client
