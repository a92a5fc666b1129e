"""`python -m eval world` as a user runs it: files, `--json`, the table, and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from eval.__main__ import main, make_parser

ROOT = Path(__file__).resolve().parents[2]


def run_eval(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "eval", *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60
    )


def test_world_json_on_stdout_and_logs_on_stderr(tmp_path: Path) -> None:
    proc = run_eval("world", "--seed", "3", "--size", "nano", "--out", str(tmp_path / "w"), "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["config"] == {"seed": 3, "size": "nano", "paraphrases": 2}
    assert summary["cutoff"] == "2025-01-01" and summary["out"] == str(tmp_path / "w")
    assert set(summary["counts"]["questions"]) == {"retained", "new", "updated", "unanswerable", "multi_hop"}
    assert "generated world" in proc.stderr
    for name in ("corpus_pre", "docs_post", "questions", "sft", "rl", "prefs", "manifest.json"):
        assert (tmp_path / "w" / name).exists(), name
    manifest = json.loads((tmp_path / "w/manifest.json").read_text())
    assert manifest["world_sha256"] == summary["world_sha256"]


def test_world_table_and_paraphrases(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["world", "--size", "nano", "--paraphrases", "3", "--out", str(tmp_path / "w")])
    out = capsys.readouterr().out
    assert code == 0
    assert "paraphrases 3" in out and "questions" in out and "retained" in out
    manifest = json.loads((tmp_path / "w/manifest.json").read_text())
    assert manifest["config"]["paraphrases"] == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--size", "huge", "--out", "{tmp}/w"], "invalid choice: 'huge'"),
        (
            ["--size", "nano", "--paraphrases", "0", "--out", "{tmp}/w"],
            "paraphrases must be between 1 and 10",
        ),
        (["--size", "nano", "--seed", "x", "--out", "{tmp}/w"], "invalid int value: 'x'"),
        (["--size", "nano", "--out", "{tmp}/file.txt"], "is a file"),
        (["--size", "nano", "--out", "{tmp}"], "is not empty and holds no manifest.json"),
        (["--size", "nano"], "the following arguments are required: --out"),
    ],
)
def test_bad_arguments_give_a_message_not_a_traceback(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file.txt").write_text("not a directory")
    try:
        code = main(["world", *(a.format(tmp=tmp_path) for a in args)])
    except SystemExit as exc:  # argparse's own errors
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err


def test_a_bad_subcommand_from_the_shell() -> None:
    proc = run_eval("wrold")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr and "Traceback" not in proc.stderr


def test_subcommands_are_listed_in_help() -> None:
    text = make_parser().format_help()
    assert "world" in text and "contamination" in text
