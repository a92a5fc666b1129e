"""Tests against a deployed stack, driven from outside (HTTP, the database URL, the ingest command), so
that they run against any deployment: `make compose-test` brings compose.yaml up and sets everything below.

    KC_GATEWAY_URL=http://127.0.0.1:8000 [KC_GATEWAY_API_KEY=...] pytest tests/integration

| variable | what |
|---|---|
| `KC_GATEWAY_URL` | the gateway's base URL; unset, these tests are deselected (`make test` has no stack) |
| `KC_GATEWAY_API_KEY` | the deployment's `KC_API_KEY`, when it has one |
| `KC_STACK_DATABASE_URL` | the deployment's database (SQLAlchemy URL), where `/feedback` rows must land |
| `KC_STACK_DOCS_DIR` | a folder the deployment's indexer job ingests (the tests add and remove a subfolder) |
| `KC_STACK_INGEST` | the command that runs that job, e.g. `docker compose run --rm --no-deps indexer` |

A test whose variables are missing skips, or fails where services are required (`KC_REQUIRE_SERVICES=1`).
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from stack_support import Ingested, Stack, ingest, missing, write_news

HERE = Path(__file__).resolve().parent
# Read once, at import: tests/conftest.py clears every KC_* variable around each test.
STACK = Stack.from_env()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without a stack to test, its tests are deselected (rather than skipped one by one)."""
    if STACK.url:
        return
    ours = [item for item in items if HERE in item.path.parents]
    if ours:
        config.hook.pytest_deselected(items=ours)
        items[:] = [item for item in items if HERE not in item.path.parents]


@pytest.fixture(scope="session")
def stack() -> Stack:
    return STACK


@pytest.fixture(scope="session")
def gateway(stack: Stack) -> Iterator[httpx.Client]:
    """An HTTP client on the gateway, with its key; the stack must be ready (engine and index)."""
    with httpx.Client(base_url=stack.url, headers=stack.headers, timeout=120) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200, f"{stack.url}/readyz: {ready.status_code} {ready.text}"
        yield client


@pytest.fixture(scope="session")
def ingested(stack: Stack, gateway: httpx.Client) -> Iterator[Ingested]:
    """stack_support.NEWS written into a subfolder of the stack's docs folder and ingested by the stack's
    own indexer job; removed and ingested away again at the end."""
    if stack.docs_dir is None or stack.ingest is None:
        missing("KC_STACK_DOCS_DIR and KC_STACK_INGEST")
    assert stack.docs_dir is not None
    # Letters only: one word to the indexer and to the rag gate's name check.
    run = "it" + "".join(chr(ord("a") + int(c, 16)) for c in uuid.uuid4().hex[:8])
    folder = stack.docs_dir / run
    try:
        write_news(folder, run)
        ingest(stack)
        yield Ingested(folder, run)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        ingest(stack)
