"""Continued pretraining: the replay mixture, the re-warmed schedule, lineage, bad input, LoRA, resuming."""

from __future__ import annotations

import itertools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.registry import list_checkpoints
from core.settings import Settings
from trainer.__main__ import main
from trainer.checkpoint import read_lineage
from trainer.cpt import CPTConfig, run_cpt
from trainer.cpt_data import build_mixture, mixture_order, read_documents

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("replay", [0.0, 0.05, 0.25, 0.5])
def test_mixture_order_puts_the_asked_share_of_replay_evenly(replay: float) -> None:
    order, is_replay = mixture_order(n_new=37, n_replay=50, total=1000, replay=replay, seed=0)
    assert len(order) == 1000 and int(is_replay.sum()) == int(1000 * replay)
    assert all(order[is_replay] >= 37) and all(order[~is_replay] < 37)
    # evenly spread: every run of 100 consecutive windows holds the share to within one window
    for start in range(0, 1000, 100):
        assert abs(int(is_replay[start : start + 100].sum()) - 100 * replay) <= 1
    # every new window is seen equally often (passes over the new documents, each reshuffled)
    counts = np.bincount(order[~is_replay], minlength=37)
    assert counts.max() - counts.min() <= 1


def test_build_mixture_reports_the_realised_fraction() -> None:
    new = [[1] * 30 for _ in range(40)]  # 40 documents of 30 tokens (+ packing into 64-token windows)
    old = [[2] * 60 for _ in range(200)]
    mix = build_mixture(new, old, [[3] * 10], seq_len=64, pad_id=0, replay=0.2, epochs=2.0,
                        windows_per_step=8, max_steps=None, seed=0)  # fmt: skip
    r = mix.report
    assert r["unit"] == "windows" and r["total_windows"] == mix.max_steps * 8
    assert r["replay_fraction_windows"] == pytest.approx(0.2, abs=1 / r["total_windows"])
    assert r["new_epochs"] >= 2.0 and r["new_epochs"] < 2.0 + 8 / r["new_windows"] + 0.01
    assert 0.15 < r["replay_fraction_tokens"] < 0.35  # replay windows are fuller than the new ones
    assert set(mix.heldout) == {"heldout_pre_loss"}
    # the loop reads the laid-out order straight through
    ids, _ = mix.windows.batch(0, 8)
    assert ids.shape == (8, 64)


def test_cpt_checkpoint_lineage_mixture_and_schedule(nano_cpt: Path, nano_base: Path) -> None:
    lineage = read_lineage(nano_cpt)
    assert lineage["phase"] == "cpt" and lineage["parent"] == str(nano_base)
    assert lineage["parent_tag"] == "nano-session" and lineage["tag"] == "nano-cpt"
    mix = lineage["data"]["mixture"]
    assert mix["replay_fraction_windows"] == pytest.approx(0.25, abs=1 / mix["total_windows"])
    assert lineage["data"]["docs"]["documents"] == 16  # the nano world's docs_post, through core.loaders
    paraphrases = lineage["data"]["docs"]["paraphrases"]
    assert paraphrases["k"] == 2 and 0 < paraphrases["produced"] <= 32
    assert (nano_cpt / "paraphrases.jsonl").read_text().count("\n") == paraphrases["produced"]
    questions = lineage["data"]["docs"]["questions"]
    assert questions["share"] == 0.5 and 0 < questions["documents"] < 16 and questions["rows"] > 0
    rows = [json.loads(x) for x in (nano_cpt / "questions.jsonl").read_text().splitlines()]
    assert len(rows) == questions["rows"] and len({r["source"] for r in rows}) <= questions["documents"]
    assert all(r["messages"][-1]["role"] == "assistant" for r in rows)
    assert (
        "heldout_pre_loss" in lineage["metrics"] and "heldout_pre_loss" in lineage["data"]["heldout_before"]
    )
    # the parent's tokenizer, byte for byte
    assert (nano_cpt / "tokenizer.json").read_bytes() == (nano_base / "tokenizer.json").read_bytes()
    # re-warmed over 3 steps to the peak, then cosine-decayed
    rows = [json.loads(x) for x in (nano_cpt / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if "lr" in r]
    assert lrs[:3] == pytest.approx([2e-3 / 3, 4e-3 / 3, 2e-3])
    assert all(a >= b for a, b in itertools.pairwise(lrs[2:])) and lrs[-1] < lrs[2]
    assert lineage["config"]["resolved"]["rewarm_steps"] == 3


def test_cpt_logs_the_mixture_and_registers(
    nano_base: Path, nano_world: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    cfg = CPTConfig(from_=str(nano_base), docs=[nano_world / "docs_post"], replay=0.05,
                    replay_from=[nano_world / "corpus_pre"], out=tmp_path / "run")  # fmt: skip
    result = run_cpt(cfg, {"max_steps": 4, "eval_every": 0})
    assert result["step"] == 4
    line = next(m for m in caplog.messages if m.startswith("mixture:"))
    assert "replay 3.1% of windows (1 of 32)" in line  # floor(32 x 0.05): whole windows
    (entry,) = list_checkpoints(Settings().resolved_database_url, "cpt")
    assert entry.tag == result["tag"] and entry.tag.startswith("nano-session-cpt-")
    assert entry.parent == str(nano_base)


def test_read_documents_uses_the_indexer_loaders(tmp_path: Path) -> None:
    (tmp_path / "a.html").write_text(
        "<html><head><title>T</title></head><body><p>Kelvor moved.</p></body></html>"
    )
    (tmp_path / "b.jsonl").write_text('{"text": "One."}\n{"text": "Two."}\n')
    (tmp_path / "c.bin").write_bytes(b"\x00\x01")
    (tmp_path / "empty.md").write_text("   \n")
    records, files, skipped = read_documents([tmp_path])
    assert sorted(r.text for r in records) == ["Kelvor moved.", "One.", "Two."]
    assert len(files) == 2 and len(skipped) == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--docs", "/nonexistent/docs"], "does not exist"),
        (["--docs", "EMPTY"], "no documents to train on"),
        (["--docs", "DOCS", "--replay", "0.1"], "--replay-from"),
        (["--docs", "DOCS", "--replay", "1.5", "--replay-from", "DOCS"], "--replay must be in [0, 1)"),
    ],
)
def test_bad_cpt_input_is_one_line_and_exit_2(
    extra: list[str], message: str, nano_base: Path, nano_world: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "blank.md").write_text("\n")
    args = [
        str(empty) if a == "EMPTY" else str(nano_world / "docs_post") if a == "DOCS" else a for a in extra
    ]
    assert main(["cpt", "--from", str(nano_base), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_cpt_with_lora_merges_on_save(nano_base: Path, nano_world: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    cfg = CPTConfig(from_=str(nano_base), docs=[nano_world / "docs_post"], lora_r=4, out=tmp_path / "lora")
    result = run_cpt(cfg, {"max_steps": 3, "eval_every": 0, "save_every": 2})
    out = Path(result["out"])
    assert (out / "adapter" / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(str(out))  # a plain checkpoint: the adapter is merged in
    assert not any("lora" in name for name, _ in model.named_parameters())
    base = AutoModelForCausalLM.from_pretrained(str(nano_base))
    changed = [n for n, p in model.named_parameters() if not p.equal(dict(base.named_parameters())[n])]
    assert changed and all("proj" in n for n in changed)  # only the adapted matrices moved


def test_sliced_cpt_matches_an_uninterrupted_run(
    nano_base: Path, nano_world: Path, tmp_path: Path, assert_same_weights: Callable[[Path, Path], None]
) -> None:
    def run(out: Path, **loop: object) -> dict[str, object]:
        cfg = CPTConfig(from_=str(nano_base), docs=[nano_world / "docs_post"], replay=0.25,
                        replay_from=[nano_world / "corpus_pre"], paraphrases=1, out=out,
                        resume=bool(loop.pop("resume", False)))  # fmt: skip
        return run_cpt(cfg, {"max_steps": 6, "save_every": 3, "eval_every": 0, **loop})

    run(tmp_path / "straight")
    assert run(tmp_path / "sliced", stop_at=3)["stopped_early"]
    with pytest.raises(ValueError, match="--resume"):
        run(tmp_path / "sliced")
    result = run(tmp_path / "sliced", resume=True)
    assert result["resumed_from"] == 3 and result["step"] == 6
    assert_same_weights(tmp_path / "straight", tmp_path / "sliced")


@pytest.mark.slow
def test_a_killed_cpt_run_resumes_to_the_same_step(
    nano_base: Path, nano_world: Path, tmp_path: Path, kc_home: Path, kill_then_resume: Any
) -> None:
    out = tmp_path / "killed"
    cmd = [
        sys.executable, "-m", "trainer", "cpt", "--from", str(nano_base),
        "--docs", str(nano_world / "docs_post"),
        "--replay", "0.25", "--replay-from", str(nano_world / "corpus_pre"), "--paraphrases", "2",
        "--out", str(out), "--max-steps", "300", "--save-every", "20", "--eval-every", "0", "--threads", "1",
    ]  # fmt: skip
    killed_at, summary = kill_then_resume(cmd, out, kc_home)
    assert 0 < killed_at < 300
    assert summary["resumed_from"] >= killed_at and summary["step"] == 300
    assert read_lineage(out)["metrics"]["step"] == 300
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert steps == list(range(1, 301))
