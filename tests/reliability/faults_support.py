"""Helpers of the fault tests (test_faults.py): a background client that records every outcome, a gateway
process that can be SIGKILLed and started again on the same port, server-sent events, a small tmpfs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_support import REPO, free_port, stop_process

# What a gateway answers when a dependency (vLLM, the database) is down: 503 in the envelope.
UNAVAILABLE = 503


@dataclass(frozen=True)
class Call:
    """One request of the background client: `name` groups outcomes (e.g. "feedback", "ask")."""

    name: str
    method: str
    path: str
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class Outcome:
    seq: int
    name: str
    at: float  # time.monotonic() when the answer (or the failure) came
    status: int | None  # None: no HTTP answer at all (connection refused or reset)
    body: Any  # the parsed JSON, else the text
    error: str | None = None  # the transport error, when status is None

    def code(self) -> str | None:
        """The envelope's error code, if the body is an envelope."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"].get("code")
        return None


@dataclass
class Traffic:
    """A background client: one thread sends `make(seq)` in a loop, seq = 0, 1, 2, ..., and records the
    outcome of every request, whatever it is, until stopped. `url` may be changed while it runs."""

    url: str
    make: Callable[[int], Call]
    headers: dict[str, str] = field(default_factory=dict)
    timeout: float = 60.0
    pause: float = 0.05
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 10)
        assert not self._thread.is_alive(), "the background client did not stop"

    def _run(self) -> None:
        seq = 0
        with httpx.Client(timeout=self.timeout, headers=self.headers) as client:
            while not self._stop.is_set():
                call = self.make(seq)
                try:
                    r = client.request(call.method, f"{self.url}{call.path}", json=call.body)
                    try:
                        body: Any = r.json()
                    except ValueError:
                        body = r.text
                    outcome = Outcome(seq, call.name, time.monotonic(), r.status_code, body)
                except httpx.TransportError as e:
                    outcome = Outcome(
                        seq, call.name, time.monotonic(), None, None, f"{type(e).__name__}: {e}"
                    )
                with self._lock:
                    self.outcomes.append(outcome)
                seq += 1
                self._stop.wait(self.pause)

    def snapshot(self, since: float = 0.0) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.at >= since]

    def wait_for(
        self, what: str, check: Callable[[Outcome], bool], since: float, timeout: float = 60
    ) -> Outcome:
        """The first outcome after `since` that passes `check`; fails the test after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((o for o in self.snapshot(since) if check(o)), None)
            if found is not None:
                return found
            time.sleep(0.1)
        pytest.fail(f"no {what} in {timeout} s; last outcomes: {summarise(self.snapshot(since)[-10:])}")


def summarise(outcomes: list[Outcome]) -> str:
    return "; ".join(f"#{o.seq} {o.name} {o.status or o.error} {o.code() or ''}".strip() for o in outcomes)


def counts(outcomes: list[Outcome]) -> str:
    """How each kind of request fared, e.g. `feedback: 201 x 120, 503 x 4; ask: 200 x 60`."""
    table: dict[str, dict[str, int]] = {}
    for o in outcomes:
        key = str(o.status) if o.status is not None else "no answer"
        table.setdefault(o.name, {}).setdefault(key, 0)
        table[o.name][key] += 1
    return "; ".join(
        f"{name}: " + ", ".join(f"{k} x {n}" for k, n in sorted(kinds.items()))
        for name, kinds in table.items()
    )


def check_no_server_errors(outcomes: list[Outcome], allowed: set[int], codes: set[str]) -> None:
    """No 500 anywhere: every status is in `allowed` (5xx included), and every error is the envelope with a
    message and one of `codes`."""
    assert outcomes, "the background client sent nothing"
    wrong = [o for o in outcomes if o.status is not None and o.status not in allowed]
    assert not wrong, f"unexpected statuses: {summarise(wrong[:10])}\nfirst body: {wrong[0].body!r:.800}"
    for o in outcomes:
        if o.status is not None and o.status >= 400:
            assert o.code() in codes, (
                f"#{o.seq} {o.name} {o.status}: not the envelope with {codes}: {o.body!r:.800}"
            )
            assert o.body["error"]["message"], o


def envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error of an envelope response, checked."""
    assert response.status_code == status, (response.status_code, response.text)
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code and error["message"] and error["type"], error
    return error


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """(event name, data) of a server-sent event stream; the name is "message" for data-only events."""
    name = "message"
    for line in lines:
        if line.startswith("event:"):
            name = line[len("event:") :].strip()
        elif line.startswith("data:"):
            yield name, line[len("data:") :].strip()
            name = "message"


def wait_until(what: str, check: Callable[[], bool], timeout: float = 60, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    pytest.fail(f"{what}: not within {timeout} s")


def status_of(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=10).status_code
    except httpx.TransportError:
        return None


class GatewayProcess:
    """`python -m service` on one port; `kill()` is kill -9, `start()` starts it again on the same port."""

    def __init__(self, env: dict[str, str], log_dir: Path, name: str = "gateway") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "KC_HOST": "127.0.0.1", "KC_PORT": str(self.port)}
        self.log_dir = log_dir
        self.name = name
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.log_dir / f"{self.name}-{self.starts}.log"

    def start(self, timeout: float = 180) -> GatewayProcess:
        self.starts += 1
        with self.log.open("wb") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "service"], cwd=REPO, env=self.env, stdout=fh, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the gateway exited with {self.proc.returncode}:\n{self.log.read_text()}")
            if status_of(f"{self.url}/healthz") == 200:
                return self
            time.sleep(0.2)
        raise RuntimeError(f"the gateway did not start in {timeout} s:\n{self.log.read_text()[-4000:]}")

    def failures_logged(self) -> list[str]:
        """Lines of every log of this gateway that show an unhandled error (a 500 or a traceback)."""
        return [
            line
            for n in range(1, self.starts + 1)
            for line in (self.log_dir / f"{self.name}-{n}.log").read_text(errors="replace").splitlines()
            if "Traceback" in line or "unhandled error" in line
        ]

    def kill(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, "the gateway is not running"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


def run_cli(
    module: str, *args: str, env: dict[str, str], timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`python -m <module> args...` with `env` over this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, env={**os.environ, **env}, capture_output=True,
        text=True, timeout=timeout,
    )  # fmt: skip


def write_filler_docs(folder: Path, n: int, words: int, prefix: str = "filler") -> Path:
    """`n` dated Markdown documents of `words` made-up words each (about words / 110 chunks apiece)."""
    folder.mkdir(parents=True, exist_ok=True)
    vocabulary = ["harbour", "lantern", "copper", "meadow", "signal", "orbit", "violet", "market", "stone"]
    for i in range(n):
        body = " ".join(
            f"{vocabulary[(i * 7 + j) % len(vocabulary)]}{(i * 131 + j * 17) % 9973}" for j in range(words)
        )
        title = f"{prefix.title()} note {i}"
        (folder / f"{prefix}-{i:03d}.md").write_text(
            f'---\ntitle: "{title}"\ndate: 2025-06-{i % 28 + 1:02d}\nsource: {prefix}-{i:03d}\n---\n{body}\n'
        )
    return folder


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def sse_json(data: str) -> Any:
    return json.loads(data)


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` for the block; skips the test, with the reason, where mounting is
    refused (not root, no CAP_SYS_ADMIN in a container). Unmounted at the end, lazily if still busy."""
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("disk-full test: no `mount` command on this machine")
    cmd = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        reason = (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"
        pytest.skip(f"disk-full test: `{' '.join(cmd)}` was refused (uid {os.geteuid()}): {reason}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)
