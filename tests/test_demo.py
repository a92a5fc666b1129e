"""`make demo` end to end on the nano preset and world: every phase, the gateway, the eval over HTTP, the
report; a second run reuses every phase and asks nothing again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def make_demo(home: Path) -> subprocess.CompletedProcess[str]:
    args = [
        "make", "--no-print-directory", "-C", str(ROOT), "demo-tiny", f"PY={sys.executable}",
        f"DEMO_HOME={home}", "DEMO_PRESET=nano", "DEMO_WORLD_SIZE=nano",
        "SFT_FLAGS=--epochs 1", "CPT_FLAGS=--replay 0.25 --paraphrases 1 --epochs 1",
        "RL_FLAGS=--max-steps 2 --eval-every 2 --eval-rows 4 --prompts-per-step 2 --num-generations 2",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("KC_")}
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=900, check=False)


def test_make_demo_runs_every_phase_then_reuses_them(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    first = make_demo(home)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for phase in ("base", "sft", "rl", "cpt", "merged"):
        assert (home / "checkpoints" / phase / "demo" / "DONE").exists(), phase
        assert (home / "checkpoints" / phase / "demo" / "lineage.json").exists(), phase
    report = home / "reports" / "demo"
    for name in ("report.md", "report.html", "results.jsonl", "summary.json"):
        assert (report / name).exists(), name
    summary = json.loads((report / "summary.json").read_text())
    rows = (report / "results.jsonl").read_text().splitlines()
    strategies = {json.loads(r)["strategy"] for r in rows}
    assert strategies == {"closed_book", "rag", "long_context", "cpt", "naive_rag"}, summary.get("skipped")
    assert "report.md" in first.stdout or str(report) in first.stdout

    second = make_demo(home)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "trainer pretrain" not in second.stdout and "trainer sft" not in second.stdout
    assert "trainer rl" not in second.stdout
    assert (report / "results.jsonl").read_text().splitlines() == rows  # nothing asked again
