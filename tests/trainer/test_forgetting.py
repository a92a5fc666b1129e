"""The forgetting report: before / raw CPT / merged, on retained and new questions, held-out loss, format."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from trainer.__main__ import main
from trainer.forgetting import REPORT_JSON, REPORT_MD, ForgettingConfig, format_ok, run_forgetting
from trainer.merge import MergeConfig, run_merge


def test_report_compares_before_raw_and_merged(
    nano_base: Path, nano_chat: Path, nano_cpt: Path, nano_world: Path, tmp_path: Path
) -> None:
    merged = run_merge(MergeConfig(base=str(nano_base), chat=str(nano_chat), cpt=str(nano_cpt),
                                   out=tmp_path / "merged"))["out"]  # fmt: skip
    cfg = ForgettingConfig(base_chat=str(nano_chat), cpt=str(nano_cpt), merged=merged, world=nano_world,
                           limit=4, max_new_tokens=8, out=tmp_path / "report")  # fmt: skip
    report = run_forgetting(cfg)
    assert list(report["models"]) == ["before", "cpt", "merged"]
    for row in report["models"].values():
        assert row["retained"]["n"] == 4 and row["new"]["n"] == 4
        assert 0 <= row["ends_turn"] <= 1 and 0 <= row["format_ok"] <= row["ends_turn"]
        assert math.isfinite(row["heldout_pre_loss"]) and 0 <= row["new_gained"] <= 1
    assert report["heldout_windows"] > 0
    saved = json.loads((tmp_path / "report" / REPORT_JSON).read_text())
    assert saved["models"]["cpt"]["path"] == str(nano_cpt)
    table = (tmp_path / "report" / REPORT_MD).read_text().splitlines()
    assert table[2].startswith("| model | retained | new | new, missed before | held-out pre-cutoff loss")
    assert [ln.split(" ")[1] for ln in table[4:7]] == ["before", "cpt", "merged"]


def test_report_defaults_next_to_the_cpt_checkpoint(
    nano_chat: Path, nano_cpt: Path, nano_world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["forgetting", "--base-chat", str(nano_chat), "--cpt", str(nano_cpt), "--world", str(nano_world),
            "--limit", "2", "--max-new-tokens", "4", "--json"]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["files"] == [str(nano_cpt / REPORT_JSON), str(nano_cpt / REPORT_MD)]
    assert list(out["models"]) == ["before", "cpt"]


def test_a_folder_without_questions_is_refused(
    nano_chat: Path, nano_cpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["forgetting", "--base-chat", str(nano_chat), "--cpt", str(nano_cpt), "--world", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "questions/retained.jsonl" in err


def test_format_ok_needs_the_end_of_turn_token_and_one_line() -> None:
    assert format_ok("Ardent", 5, 5)
    assert not format_ok("Ardent", 6, 5)  # ended the document, not the turn
    assert not format_ok("Ardent", None, 5)  # ran on to the token limit
    assert not format_ok("Ardent\nuser", 5, 5)
    assert not format_ok("", 5, 5)
