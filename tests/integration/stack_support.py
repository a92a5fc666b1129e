"""What the stack tests share (imported by name: tests/integration has no __init__.py); conftest.py says
which variables describe the stack under test."""

from __future__ import annotations

import datetime as dt
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Stack:
    url: str
    api_key: str | None
    database_url: str | None
    docs_dir: Path | None
    ingest: list[str] | None

    @classmethod
    def from_env(cls) -> Stack:
        env = os.environ
        docs = env.get("KC_STACK_DOCS_DIR")
        ingest = env.get("KC_STACK_INGEST")
        return cls(
            url=env.get("KC_GATEWAY_URL", "").rstrip("/"),
            api_key=env.get("KC_GATEWAY_API_KEY") or None,
            database_url=env.get("KC_STACK_DATABASE_URL") or None,
            docs_dir=Path(docs) if docs else None,
            ingest=shlex.split(ingest) if ingest else None,
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


@dataclass(frozen=True)
class Ingested:
    folder: Path
    run: str  # unique to this session: names and sources no earlier run left in a long-lived deployment

    @property
    def name(self) -> str:
        return self.run.capitalize()

    def source(self, doc: str) -> str:
        return f"{self.run}-{doc}"


# Invented facts; `{name}` makes each name unique to one session. Dated today when written: the newest
# documents of any deployment, so that long_context packs them first.
NEWS = {
    "bridge": "The {name} Bridge opened in Varsel. The {name} Bridge was designed by Imra Tolde.",
    "mayor": "Oskel Brann became the mayor of {name} City.",
    "recall": "Venlo Audio recalled the {name} Speaker, a radio.",
}


def write_news(folder: Path, run: str) -> None:
    folder.mkdir(parents=True)
    today = dt.date.today().isoformat()
    for doc, body in NEWS.items():
        text = body.format(name=run.capitalize())
        (folder / f"{doc}.md").write_text(
            f'---\ntitle: "{doc} ({run})"\ndate: {today}\nsource: {run}-{doc}\n---\n{text}\n'
        )


def ingest(stack: Stack) -> None:
    """Run the stack's indexer job over its docs folder (new files added, removed ones pruned)."""
    assert stack.ingest is not None
    done = subprocess.run(stack.ingest, capture_output=True, text=True, timeout=600, check=False)
    command = shlex.join(stack.ingest)
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stderr[-3000:]}"


def missing(what: str) -> None:
    """Skip a test whose part of the stack is not described; fail instead where services are required."""
    if os.environ.get("KC_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required (KC_REQUIRE_SERVICES=1) but not set")
    pytest.skip(f"{what} not set")
