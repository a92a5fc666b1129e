"""A nano world and a nano base checkpoint, built once per session for the trainer tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from eval.world import WorldConfig, generate_world, write_world

ROOT = Path(__file__).resolve().parents[2]


def _kill_once_saved(cmd: list[str], saved: Path, env: dict[str, str]) -> None:
    """Run a training command and SIGKILL it as soon as `saved` (the last file of a resumable save) exists."""
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while not saved.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, f"no {saved.name} within 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()


def _kill_then_resume(cmd: list[str], out: Path, kc_home: Path) -> tuple[int, dict[str, Any]]:
    import torch

    env = {**os.environ, "KC_HOME": str(kc_home)}
    _kill_once_saved(cmd, out / "train_state.pt", env)
    killed_at = int(torch.load(out / "train_state.pt", weights_only=False)["step"])  # written atomically
    done = subprocess.run([*cmd, "--resume", "--json"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return killed_at, json.loads(done.stdout)


@pytest.fixture
def kill_once_saved() -> Callable[[list[str], Path, dict[str, str]], None]:
    """`(cmd, saved, env)`: run a training command, SIGKILL it once `saved` exists."""
    return _kill_once_saved


@pytest.fixture
def kill_then_resume() -> Callable[[list[str], Path, Path], tuple[int, dict[str, Any]]]:
    """Run a training command, SIGKILL it once its first resumable state is saved, then run it again
    with --resume to the end: `(cmd, out, kc_home) -> (the step it was killed at, the resumed run's JSON
    summary)`."""
    return _kill_then_resume


def _assert_same_weights(a: Path, b: Path) -> None:
    import torch
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-4, atol=1e-5)


@pytest.fixture
def assert_same_weights() -> Callable[[Path, Path], None]:
    """`(a, b)`: the two checkpoint directories hold the same weights (to float32 resume tolerance)."""
    return _assert_same_weights


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


@pytest.fixture(scope="session")
def nano_chat(nano_base: Path, nano_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A chat model SFT'd from `nano_base` for a few steps: the θchat of the chat vector."""
    from trainer.sft import SFTRunConfig, run_sft

    home = tmp_path_factory.mktemp("chat-home")
    cfg = SFTRunConfig(from_=str(nano_base), data=[nano_world / "sft"], out=home / "chat", max_steps=3,
                       batch_size=4, limit=48, eval_fraction=0.0)  # fmt: skip
    with kc_home_env(home):
        return Path(run_sft(cfg)["out"])


@pytest.fixture(scope="session")
def nano_cpt(nano_base: Path, nano_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`nano_base` continued on the world's docs_post with 25% replay of corpus_pre, 2 paraphrases each and
    question/answer rows for half of the documents."""
    from trainer.cpt import CPTConfig, run_cpt

    home = tmp_path_factory.mktemp("cpt-home")
    cfg = CPTConfig(from_=str(nano_base), docs=[nano_world / "docs_post"], replay=0.25,
                    replay_from=[nano_world / "corpus_pre"], paraphrases=2, questions=4, questions_share=0.5,
                    epochs=3, rewarm_steps=3,
                    out=home / "cpt", tag="nano-cpt", threads=1)  # fmt: skip
    with kc_home_env(home):
        return Path(run_cpt(cfg, {"eval_every": 5, "save_every": 0, "lr": 2e-3})["out"])


@pytest.fixture
def gateway(nano_chat: Path, tmp_path: Path) -> Iterator[str]:
    """`python -m service` serving the nano chat model on a free port (the judge's endpoint); its …/v1."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
    from gateway_support import LiveGateway

    env = {"KC_HOME": str(tmp_path / "gateway-home"), "KC_MODEL": str(nano_chat)}
    live = LiveGateway(env, tmp_path / "gateway.log").wait_ready()
    try:
        yield f"{live.url}/v1"
    finally:
        live.stop()
