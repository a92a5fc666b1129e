"""Helpers shared by the gateway tests (imported by name: tests/service has no __init__.py)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from service.settings import ServiceSettings

REPO = Path(__file__).resolve().parents[2]

DOCS = {
    "fair.md": ("Korme hosts the Dapaik Fair", "2025-01-04", "post-0002",
                "On January 4, 2025, the Dapaik Fair took place in Korme. The Dapaik Fair was organised by "
                "Kutain Group."),
    "ceo.md": ("Orvan Teel leads Kelvor Dynamics", "2025-03-14", "post-0007",
               "On March 14, 2025, Orvan Teel became the chief executive of Kelvor Dynamics, replacing "
               "Sta Ind."),
    "census.md": ("Nikrai census revised", "2025-02-01", "post-0004",
                  "The population of Nikrai was revised to 745,000 on February 1, 2025."),
    "launch.md": ("Pezan Labs launches the Teske", "2025-05-20", "post-0011",
                  "On May 20, 2025, Pezan Labs launched the Teske, a radio."),
}  # fmt: skip


def build_nano_checkpoint(out: Path, tag: str = "nano-service", phase: str = "sft", seed: int = 0) -> Path:
    """A nano LlamaForCausalLM (head_dim 32, ~115k parameters) with the trainer's byte-level BPE and chat
    template, saved as the trainer saves checkpoints (not registered)."""
    import torch
    from transformers import LlamaForCausalLM

    from trainer.checkpoint import save_checkpoint
    from trainer.presets import get_preset
    from trainer.tokenizer import tokenizer_texts, train_tokenizer

    texts = [
        f"The population of city {i} is {i * 1000}. Person {i} works at Company {i % 7} since {2000 + i}."
        for i in range(300)
    ] + [body for _, _, _, body in DOCS.values()]
    tokenizer = train_tokenizer(tokenizer_texts(texts), vocab_size=512, min_frequency=1)
    preset = get_preset("nano")
    config = preset.model.llama_config(
        vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    config.initializer_range = 0.5
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    save_checkpoint(
        model, tokenizer, out, phase=phase, tag=tag, parent=None, data_sha256=None,
        config={"preset": "nano", "untrained": True}, metrics={}, register=False,
    )  # fmt: skip
    return out


def copy_checkpoint(src: Path, out: Path, **lineage: Any) -> Path:
    """A copy of `src` (same weights) under another lineage (phase, tag, metrics, ...): a stand-in
    checkpoint for tests of the code that picks, serves or costs checkpoints."""
    shutil.copytree(src, out)
    data = json.loads((out / "lineage.json").read_text())
    (out / "lineage.json").write_text(json.dumps({**data, **lineage}))
    return out


def write_docs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (title, date, source, body) in DOCS.items():
        (folder / name).write_text(f'---\ntitle: "{title}"\ndate: {date}\nsource: {source}\n---\n{body}\n')
    return folder


def make_app(settings: ServiceSettings, embedder: Any, **kwargs: Any) -> FastAPI:
    from indexer.retriever import IndexRetriever
    from service.app import create_app

    return create_app(settings, retriever=IndexRetriever(settings, embedder=embedder), **kwargs)


@asynccontextmanager
async def running_app(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan, behind an in-process async HTTP client (for concurrent requests)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=60) as c:
            yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveGateway:
    """`python -m service` in a subprocess on a free port."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        full_env = {**os.environ, **env, "KC_HOST": "127.0.0.1", "KC_PORT": str(self.port)}
        self._log_file = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service"], cwd=REPO, env=full_env, stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 120.0) -> LiveGateway:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the gateway exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the gateway did not start in {timeout} s:\n{self.log.read_text()}")

    def stop(self) -> None:
        stop_process(self.proc)
        self._log_file.close()


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL after 20 s; nothing if it has already exited."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
