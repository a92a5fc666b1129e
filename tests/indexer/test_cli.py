"""The command line as a user runs it: real processes, `--json` output, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def indexer(
    *args: str, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "indexer", *args],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})}, timeout=300,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stderr}")
    return proc


def make_docs(folder: Path, n: int, words: int = 40) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        body = " ".join(f"Station{i} reports signal{j} at level {i * j}." for j in range(words))
        (folder / f"doc{i:03d}.md").write_text(
            f"---\ntitle: Report {i}\ndate: 2025-06-{1 + i % 28:02d}\n---\n{body}\n"
        )


def test_ingest_search_stats_delete_json(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    make_docs(docs, 3, words=5)
    (docs / "junk.bin").write_bytes(b"\x00")

    summary = json.loads(indexer("ingest", str(docs), "--json").stdout)
    for key in ("added", "changed", "removed", "unchanged", "skipped", "chunks_embedded", "seconds"):
        assert key in summary
    assert (summary["added"], summary["skipped"]) == (3, 1)

    hits = json.loads(indexer("search", "Station1 signal3", "-k", "2", "--mode", "bm25", "--json").stdout)
    assert len(hits) == 2
    assert {"source", "doc_id", "chunk_id", "score", "text", "date"} <= set(hits[0])
    assert "Station1" in hits[0]["text"] and hits[0]["date"] == "2025-06-02"

    stats = json.loads(indexer("stats", "--json").stdout)
    assert (stats["documents"], stats["chunks"], stats["vectors"]) == (3, 3, 3)

    gone = json.loads(indexer("delete", str(docs / "doc001.md"), "--json").stdout)
    assert gone["removed"] == 1
    hits = json.loads(indexer("search", "Station1", "-k", "5", "--json").stdout)
    assert all("Station1 " not in h["text"] for h in hits)

    human = indexer("search", "Station2 signal4", "-k", "1").stdout
    assert human.startswith("[1]") and "Report 2" in human


def test_user_errors_exit_2_with_a_message(tmp_path: Path) -> None:
    missing = indexer("ingest", str(tmp_path / "nope"), check=False)
    assert missing.returncode == 2 and "no such file or directory" in missing.stderr
    assert "Traceback" not in missing.stderr

    bad_setting = indexer("stats", env={"KC_CHUNK_TOKENS": "64", "KC_CHUNK_OVERLAP": "64"}, check=False)
    assert bad_setting.returncode == 2 and "KC_CHUNK_OVERLAP=64" in bad_setting.stderr

    no_doc = indexer("delete", "never-ingested", check=False)
    assert no_doc.returncode == 2 and "no indexed document matches" in no_doc.stderr

    bad_k = indexer("search", "x", "-k", "0", check=False)
    assert bad_k.returncode == 2 and "k must be >= 1" in bad_k.stderr


@pytest.mark.slow
def test_killed_ingest_leaves_a_usable_index_and_resumes(tmp_path: Path, kc_home: Path) -> None:
    """SIGKILL a real ingest after its first commit point; the index must stay consistent and the next
    run must finish the work without embedding again what was committed."""
    docs = tmp_path / "docs"
    make_docs(docs, 40)
    env = {"KC_COMMIT_EVERY": "8", "KC_EMBED_BATCH_SIZE": "4"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "indexer", "ingest", str(docs)],
        cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if (kc_home / "index" / "v000002").exists():
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"ingest finished before it could be killed:\n{proc.stderr.read()}"  # type: ignore[union-attr]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    stats = json.loads(indexer("stats", "--json", env=env).stdout)
    assert 0 < stats["documents"] < 40
    assert stats["chunks"] == stats["vectors"]
    assert json.loads(indexer("search", "Station0 signal1", "-k", "1", "--json", env=env).stdout)

    done = json.loads(indexer("ingest", str(docs), "--json", env=env).stdout)
    assert done["unchanged"] == stats["documents"]
    assert done["added"] == 40 - stats["documents"]
    final = json.loads(indexer("stats", "--json", env=env).stdout)
    assert (final["documents"], final["chunks"]) == (40, final["vectors"])
    assert Settings(home=kc_home).index_dir.exists()
