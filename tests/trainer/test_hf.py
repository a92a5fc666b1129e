"""The shared frame of the HF-trainer phases: the shared flags and their checks, each phase's own defaults
and help, the step-log lines (as the phases wrote them before they shared one callback)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from trainer.__main__ import make_parser
from trainer.hf import HFRunConfig, Parent, peft_lora
from trainer.reward_model import RM_COLUMNS, RewardModelConfig
from trainer.sft import SFT_COLUMNS, SFTRunConfig


@pytest.mark.parametrize(
    ("make", "kw"),
    [
        (SFTRunConfig, {"data": [Path("x")]}),
        (RewardModelConfig, {}),
    ],
    ids=["sft", "reward-model"],
)
def test_the_shared_flags_are_checked_alike(make: type[HFRunConfig], kw: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="--from is required"):
        make(**kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="--epochs must be positive"):
        make(from_="x", epochs=0, **kw)  # type: ignore[arg-type]
    make(from_="x", epochs=0, max_steps=3, **kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"--eval-fraction must be in \[0, 1\)"):
        make(from_="x", eval_fraction=1.0, **kw)  # type: ignore[arg-type]
    for name in ("batch_size", "grad_accum", "max_length", "log_every"):
        with pytest.raises(ValueError, match=f"--{name.replace('_', '-')} must be at least 1"):
            make(from_="x", **{name: 0}, **kw)  # type: ignore[arg-type]


def test_each_phase_keeps_its_defaults_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    sft, rm = SFTRunConfig(from_="x", data=[Path("x")]), RewardModelConfig(from_="x")
    assert (sft.lr, sft.batch_size, sft.eval_fraction) == (1e-3, 16, 0.02)
    assert (rm.lr, rm.batch_size, rm.eval_fraction) == (3e-4, 8, 0.1)
    schedule = rm.schedule()
    assert schedule["learning_rate"] == 3e-4 and schedule["per_device_train_batch_size"] == 8
    assert schedule["lr_scheduler_type"] == "cosine" and schedule["save_strategy"] == "no"
    texts = {}
    for command in ("sft", "reward-model"):
        with pytest.raises(SystemExit):
            make_parser().parse_args([command, "--help"])
        texts[command] = " ".join(capsys.readouterr().out.split())
    assert "$KC_HOME/checkpoints/sft/<tag>" in texts["sft"] and "<parent tag>-sft[-lora<R>]" in texts["sft"]
    assert "rows per device and micro-batch" in texts["sft"] and "--lora-r" in texts["sft"]
    assert "$KC_HOME/checkpoints/reward/<tag>" in texts["reward-model"]
    assert "<parent tag>-rm" in texts["reward-model"] and "(an SFT model)" in texts["reward-model"]
    assert "pairs per micro-batch" in texts["reward-model"] and "--lora-r" not in texts["reward-model"]


def test_parent_tag_and_lora() -> None:
    assert Parent(Path("/ckpt/base-1"), {}).tag == "base-1"
    assert Parent(Path("/ckpt/x"), {"tag": "tiny-abc"}).tag == "tiny-abc"
    lora = peft_lora(8, None)
    assert lora.r == 8 and lora.lora_alpha == 16 and lora.layers_to_transform is None
    assert "gate_proj" in lora.target_modules
    upper = peft_lora(4, 4, dropout=0.1, layers=[1])
    assert upper.layers_to_transform == [1] and upper.layers_pattern == "layers" and upper.lora_dropout == 0.1


def test_step_log_writes_each_phases_line_and_row(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from trainer.step_log import StepLog

    state = SimpleNamespace(global_step=3, max_steps=10)
    control = SimpleNamespace(should_training_stop=False)
    logs = {"loss": 1.23456, "learning_rate": 1e-3, "grad_norm": 0.5, "accuracy": 0.75, "margin": 0.4123}
    log = logging.getLogger("trainer.test_hf")

    sft = StepLog(tmp_path / "sft.jsonl", None, log, SFT_COLUMNS,
                  measure=lambda s: {"tokens_per_s": 1234.5, "mfu": 0.1234, "tokens_seen": 99})  # fmt: skip
    rm = StepLog(tmp_path / "rm.jsonl", None, log, RM_COLUMNS, logged=("accuracy", "margin"))
    with caplog.at_level(logging.INFO, logger="trainer.test_hf"):
        for callback in (sft, rm):
            callback.on_train_begin(None, state, control)
            callback.on_log(None, state, control, logs=logs)
            callback.on_log(None, state, control, logs={"eval_loss": 1.0})  # no loss: no line
    # the lines exactly as sft.py and reward_model.py formatted them before
    sft_line = "step %d/%d | loss %.4f | lr %.2e | tok/s %s | mfu %.2f%% | gnorm %.2f" % (  # noqa: UP031
        3, 10, 1.23456, 1e-3, f"{1234.5:,.0f}", 100 * 0.1234, 0.5)  # fmt: skip
    rm_line = "step %d/%d | loss %.4f | acc %.2f | margin %.3f | lr %.2e | gnorm %.2f" % (  # noqa: UP031
        3, 10, 1.23456, 0.75, 0.4123, 1e-3, 0.5)  # fmt: skip
    assert [r.getMessage() for r in caplog.records] == [sft_line, rm_line]
    (sft_row,) = [json.loads(x) for x in (tmp_path / "sft.jsonl").read_text().splitlines()]
    (rm_row,) = [json.loads(x) for x in (tmp_path / "rm.jsonl").read_text().splitlines()]
    assert set(sft_row) == {"step", "loss", "lr", "tokens_per_s", "mfu", "grad_norm", "tokens_seen",
                            "elapsed_s"}  # fmt: skip
    assert set(rm_row) == {"step", "loss", "accuracy", "margin", "lr", "grad_norm", "elapsed_s"}
    assert sft_row["tokens_seen"] == 99 and rm_row["margin"] == 0.4123

    late = StepLog(tmp_path / "late.jsonl", 0.0, log, RM_COLUMNS)
    assert late.on_step_end(None, state, control).should_training_stop
