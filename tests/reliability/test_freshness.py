"""Freshness under load (issue 24): while a live gateway (`python -m service`, never restarted) answers a
background client, a document ingested by `python -m indexer ingest` in its own process reaches rag's
sources, and after `python -m indexer delete` it leaves every strategy that reads documents (rag,
long_context, auto; closed_book and cpt report none), and the background client sees no error.

The nano model is untrained, so what it writes means nothing: a document counts as used when the answer
reports it among its `sources` or `citations` (by `source` id), never by the answer's text. The new
document can only reach rag through `IndexRetriever` loading the new index generation by itself: a
retriever that never reloaded fails the first bound. Removal needs no reload (hits are hydrated from the
database, and long_context reads it); the bound holds the delete command to its word. Timings under
load: `python bench/freshness.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_support import REPO, LiveGateway, write_docs

from service.settings import ServiceSettings

pytestmark = [pytest.mark.slow, pytest.mark.integration]

VISIBLE_BOUND = 60.0  # seconds after the ingest exits
GONE_BOUND = 30.0  # seconds after the delete exits
READERS = ("rag", "long_context", "auto")
BACKGROUND = ["Who leads Kelvor Dynamics?", "What is the population of Nikrai?",
              "Where was the Dapaik Fair held?", "What did Pezan Labs launch?"]  # fmt: skip
SOURCE = "fresh-0001"
QUESTION = "Who designed the Quellinmar Observatory in Zorvathesk?"
# Dated after every document of DOCS, so that long_context packs it first while it is indexed.
FRESH = (
    f'---\ntitle: "Tivorun Gald designs the Quellinmar Observatory"\ndate: 2030-01-02\n'
    f"source: {SOURCE}\n---\n"
    "The Quellinmar Observatory in Zorvathesk opened on January 2, 2030. It was designed by the architect "
    "Tivorun Gald.\n"
)


def found(client: httpx.Client, strategy: str) -> tuple[set[str], int | None]:
    """The sources of every document QUESTION's answer reports, and the index version it read."""
    r = client.post("/ask", json={"question": QUESTION, "strategy": strategy, "max_tokens": 1})
    assert r.status_code == 200, f"/ask {strategy}: {r.status_code} {r.text}"
    body = r.json()
    answers = [a for a in body["answers"].values() if "error" not in a] if strategy == "compare" else [body]
    return {c["source"] for a in answers for c in [*a["sources"], *a["citations"]]}, body.get("index_version")


class Background(threading.Thread):
    """One client asking other questions in a loop, through every strategy, keeping each outcome."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.outcomes: list[str] = []  # "200", another status with its body, or the exception

    def run(self) -> None:
        strategies = (*READERS, "closed_book")
        with httpx.Client(base_url=self.url, timeout=60) as client:
            i = 0
            while not self.stop.is_set():
                body = {
                    "question": BACKGROUND[i % len(BACKGROUND)],
                    "strategy": strategies[i % 4],
                    "max_tokens": 4,
                }
                self.outcomes.append("sent")
                try:
                    r = client.post("/ask", json=body)
                    self.outcomes[-1] = "200" if r.status_code == 200 else f"{r.status_code} {r.text[:300]}"
                except httpx.HTTPError as e:
                    self.outcomes[-1] = f"{type(e).__name__}: {e}"
                i += 1


def indexer(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "indexer", *args, "--json"], cwd=REPO, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def committed(proc: subprocess.Popen[str]) -> int:
    """The index version the command committed, once it has exited 0."""
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, f"{proc.args!r} failed ({proc.returncode}):\n{err}"
    return int(json.loads(out)["index_version"])


def test_an_ingested_document_is_served_and_a_deleted_one_dropped_without_a_restart(
    kc_home: Path, nano_model: Path, embedder: Any, tmp_path: Path
) -> None:
    from indexer.pipeline import Index

    Index(ServiceSettings(home=kc_home, model=nano_model), embedder=embedder).ingest(
        write_docs(tmp_path / "docs")
    )
    gateway = LiveGateway({"KC_HOME": str(kc_home), "KC_MODEL": str(nano_model)}, tmp_path / "gateway.log")
    env = {**os.environ, "KC_HOME": str(kc_home)}
    load = Background(gateway.url)
    try:
        gateway.wait_ready()
        with httpx.Client(base_url=gateway.url, timeout=60) as client:
            assert SOURCE not in found(client, "rag")[0]
            load.start()
            (tmp_path / "new").mkdir()
            (tmp_path / "new" / "fresh.md").write_text(FRESH)

            started = len(load.outcomes)
            ingest = indexer("ingest", str(tmp_path / "new"), env=env)
            exited: float | None = None
            while True:
                sources, seen_version = found(client, "rag")
                if SOURCE in sources:
                    break
                if exited is None and ingest.poll() is not None:
                    exited = time.monotonic()
                    assert ingest.returncode == 0, ingest.communicate()[1]
                assert exited is None or time.monotonic() - exited < VISIBLE_BOUND, (
                    f"rag did not retrieve the new document {VISIBLE_BOUND} s after the ingest exited: the "
                    f"gateway did not load the new index generation; log:\n{gateway.log.read_text()[-3000:]}"
                )
                time.sleep(0.2)
            added = committed(ingest)
            assert seen_version is not None and seen_version >= added
            for strategy in READERS:  # each shows it now, so that its not showing it later means something
                assert SOURCE in found(client, strategy)[0], f"{strategy} does not show the new document"

            delete = indexer("delete", SOURCE, env=env)
            pending, exited = list(READERS), None
            while pending:
                for strategy in list(pending):
                    if SOURCE not in found(client, strategy)[0]:
                        pending.remove(strategy)
                if exited is None and delete.poll() is not None:
                    exited = time.monotonic()
                    assert delete.returncode == 0, delete.communicate()[1]
                assert exited is None or time.monotonic() - exited < GONE_BOUND, (
                    f"{pending} still show the deleted document {GONE_BOUND} s after the delete exited"
                )
                time.sleep(0.2 if pending else 0)
            during = len(load.outcomes) - started
            assert committed(delete) > added
            assert SOURCE not in found(client, "compare")[0]
    finally:
        load.stop.set()
        load.join(timeout=90)
        gateway.stop()
    assert not load.is_alive(), "the background client's last request never came back"
    assert during >= 2, (
        f"{during} background requests while the ingest and delete ran: too few to mean anything"
    )
    failed = [o for o in load.outcomes if o != "200"]
    assert not failed, f"{len(failed)} of {len(load.outcomes)} background requests failed: {failed[:5]}"
