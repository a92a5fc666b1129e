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
        "make", "--no-print-directory", "-C", str(ROOT), "demo-scratch", f"PY={sys.executable}",
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


def test_main_line_runs_every_phase_on_a_stand_in_model(tmp_path: Path) -> None:
    """The real-model pipeline (`make demo`, MODEL=smollm2) end to end, with a nano model standing in for
    SmolLM2 (θ0) and two pre-cutoff pages: reading rows, SFT, RLVR, CPT, merge, both indexes, and both
    question sets asked over HTTP of θ0 (the references) and of the post-trained model."""
    home = tmp_path / "demo"
    world = tmp_path / "world"
    pre = tmp_path / "pre"
    pre.mkdir()
    for version in ("3.12", "3.13"):
        name = f"whatsnew-{version}.md"
        (pre / name).write_text((ROOT / "data/python-docs/whatsnew-pre" / name).read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith("KC_")}
    py = sys.executable
    subprocess.run([py, "-m", "eval", "world", "--size", "nano", "--out", str(world)], env=env, check=True,
                   capture_output=True, cwd=ROOT)  # fmt: skip
    theta0 = tmp_path / "theta0"
    subprocess.run(
        [py, "-m", "trainer", "pretrain", "--preset", "nano", "--corpus", str(world / "corpus_pre"),
         "--out", str(theta0), "--max-steps", "3", "--eval-every", "0", "--save-every", "3"],
        env={**env, "KC_HOME": str(tmp_path / "stand-in")}, check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    args = [
        "make", "--no-print-directory", "-C", str(ROOT), "demo-smollm2", f"PY={py}", f"DEMO_HOME={home}",
        "DEMO_WORLD_SIZE=nano", f"BASE_FROM={theta0}", f"PYTHON_DOCS_PRE={pre}", "EVAL_WORLD_LIMIT=2",
        "EVAL_PYDOCS_LIMIT=6", "READER_SFT_FLAGS=--max-steps 2 --batch-size 4 --lora-r 4",
        "READER_RL_FLAGS=--max-steps 1 --eval-every 1 --eval-rows 4 --test-rows 4 --prompts-per-step 2 "
        "--num-generations 2 --lora-r 4",
        "READER_CPT_FLAGS=--max-steps 2 --seq-len 128 --batch-size 2 --paraphrases 1 --questions 2 "
        "--lora-r 4",
    ]  # fmt: skip
    first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=1200, check=False)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for phase, tag in (("import", "smollm2"), ("sft", "reader"), ("rl", "reader"), ("cpt", "reader"),
                       ("merged", "reader")):  # fmt: skip
        assert (home / "checkpoints" / phase / tag / "lineage.json").exists(), phase
    merged = json.loads((home / "checkpoints/merged/reader/lineage.json").read_text())
    assert Path(merged["config"]["chat"]).name == "reader" and "rl" in merged["config"]["chat"]
    # the quick budget: no long_context on the Python pages (no page fits), θ0's naive_rag as the reference
    for index, run, strategies in (
        ("pydocs", "pydocs", {"closed_book", "rag", "auto", "cpt"}),
        ("pydocs", "pydocs-theta0", {"rag", "naive_rag"}),
        ("world-index", "world", {"closed_book", "rag", "long_context", "cpt", "auto"}),
        ("world-index", "world-theta0", {"rag", "naive_rag"}),
    ):
        rows = (home / index / "reports" / run / "results.jsonl").read_text().splitlines()
        assert {json.loads(r)["strategy"] for r in rows} == strategies, run
    second = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "trainer sft" not in second.stdout and "trainer cpt" not in second.stdout
