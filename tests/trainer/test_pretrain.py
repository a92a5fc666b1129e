"""Pretraining on the nano world: the loop, the checkpoint it writes, resuming."""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.registry import list_checkpoints
from core.settings import Settings
from trainer.checkpoint import read_lineage
from trainer.loop import LoopConfig, lr_at
from trainer.presets import PRESETS
from trainer.pretrain import PretrainConfig, resolve_loop, run_pretrain

STEP_LINE = re.compile(
    r"step (\d+)/(\d+) \| loss \d+\.\d{4} \| lr \d\.\d\de[+-]\d\d \| tok/s [\d,]+ \| mfu \d+\.\d\d% \| gnorm"
)
ROOT = Path(__file__).resolve().parents[2]


def test_lr_schedule_warmup_then_cosine() -> None:
    cfg = LoopConfig(max_steps=100, lr=1e-3, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(55, cfg) == pytest.approx(0.55e-3)  # halfway down the cosine
    assert lr_at(100, cfg) == pytest.approx(1e-4)
    lrs = [lr_at(s, cfg) for s in range(10, 100)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def test_preset_defaults_and_overrides() -> None:
    loop = resolve_loop(PRESETS["tiny"], {"max_steps": None, "lr": 1e-2, "grad_clip": 0.5})
    assert loop.max_steps == PRESETS["tiny"].train.max_steps
    assert loop.lr == 1e-2 and loop.grad_clip == 0.5
    with pytest.raises(ValueError):
        LoopConfig(max_steps=0)


def test_base_checkpoint_is_complete(nano_base: Path) -> None:
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                 "chat_template.jinja", "lineage.json", "metrics.jsonl", "train_state.pt"):  # fmt: skip
        assert (nano_base / name).exists(), name
    lineage = read_lineage(nano_base)
    assert lineage["phase"] == "base" and lineage["tag"] == "nano-session" and lineage["parent"] is None
    assert len(lineage["data_sha256"]) == 64
    assert lineage["code_version"] != "unknown"
    assert lineage["config"]["loop"]["max_steps"] == 30
    assert lineage["config"]["pretrain"]["preset"] == "nano"
    assert lineage["metrics"]["step"] == 30 and "heldout_loss" in lineage["metrics"]
    assert lineage["data"]["dedup"]["input"] > 0
    assert set(lineage["data"]["pools"]) == {"docs", "chat"}
    config = json.loads((nano_base / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["head_dim"] == 32
    assert config["tie_word_embeddings"] is True


def test_base_loads_in_plain_transformers_and_chats(nano_base: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(nano_base))
    model = AutoModelForCausalLM.from_pretrained(str(nano_base))
    messages = [{"role": "user", "content": "Who founded Kemtain Systems?"}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]
    assert set(model.generation_config.eos_token_id) == {tok.convert_tokens_to_ids(t) for t in
                                                         ("<|im_end|>", "<|endoftext|>")}  # fmt: skip


def test_a_save_that_dies_midway_leaves_the_previous_files_whole(
    nano_base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.checkpoint import save_checkpoint

    out = tmp_path / "ckpt"
    shutil.copytree(nano_base, out)
    names = ("config.json", "model.safetensors", "tokenizer.json")
    before = {name: (out / name).read_bytes() for name in names}
    model = AutoModelForCausalLM.from_pretrained(str(nano_base))
    model.config.rope_theta = 1234.0  # so a config.json that got through would differ
    tok = AutoTokenizer.from_pretrained(str(nano_base))

    def die(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt("killed while saving the tokenizer")

    monkeypatch.setattr(tok, "save_pretrained", die)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, tok, out, phase="base", tag="t", parent=None, data_sha256=None, config={},
                        metrics={}, register=False)  # fmt: skip
    assert {name: (out / name).read_bytes() for name in before} == before
    AutoTokenizer.from_pretrained(str(out))  # what `--resume` does first


def test_training_lowers_the_loss(nano_base: Path) -> None:
    rows = [json.loads(x) for x in (nano_base / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5
    assert all(r["tokens_per_s"] > 0 and 0 < r["mfu"] < 1 for r in rows if "loss" in r)
    assert any("heldout_loss" in r for r in rows)


def _small_run(world: Path, out: Path, **loop: object) -> dict[str, object]:
    cfg = PretrainConfig(
        preset="nano", corpus=[world / "corpus_pre"], out=out, tag="t", resume=bool(loop.pop("resume", False))
    )
    return run_pretrain(cfg, {"eval_every": 0, **loop})


def test_step_lines_plan_and_registry(
    nano_world: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    result = _small_run(nano_world, tmp_path / "run", max_steps=4, save_every=2)
    steps = [m.groups() for m in map(STEP_LINE.search, caplog.messages) if m]
    assert steps == [("1", "4"), ("2", "4"), ("3", "4"), ("4", "4")]
    assert any(m.startswith("preset nano") and "Chinchilla-optimal" in m for m in caplog.messages)
    assert any(m.startswith("dedup:") for m in caplog.messages)
    assert result["step"] == 4 and math.isfinite(result["metrics"]["loss"])  # type: ignore[index]
    (entry,) = list_checkpoints(Settings().resolved_database_url, "base")
    assert (
        entry.tag == "t" and entry.metrics["step"] == 4 and Path(entry.path) == (tmp_path / "run").resolve()
    )


def test_an_existing_run_needs_resume(nano_world: Path, tmp_path: Path) -> None:
    _small_run(nano_world, tmp_path / "run", max_steps=2)
    with pytest.raises(ValueError, match="--resume"):
        _small_run(nano_world, tmp_path / "run", max_steps=2)
    # resuming a finished run trains nothing; raising max_steps continues it
    assert _small_run(nano_world, tmp_path / "run", max_steps=2, resume=True)["resumed_from"] == 2
    result = _small_run(nano_world, tmp_path / "run", max_steps=4, resume=True)
    assert result["step"] == 4 and result["resumed_from"] == 2


def test_resume_matches_an_uninterrupted_run(
    nano_world: Path, tmp_path: Path, assert_same_weights: Callable[[Path, Path], None]
) -> None:
    _small_run(nano_world, tmp_path / "straight", max_steps=6, save_every=3)
    stopped = _small_run(nano_world, tmp_path / "sliced", max_steps=6, save_every=3, stop_at=3)
    assert stopped["step"] == 3 and stopped["stopped_early"]
    result = _small_run(nano_world, tmp_path / "sliced", max_steps=6, save_every=3, resume=True)
    assert result["resumed_from"] == 3 and result["step"] == 6
    assert_same_weights(tmp_path / "straight", tmp_path / "sliced")


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_step(
    nano_world: Path, tmp_path: Path, kc_home: Path, kill_then_resume: Any
) -> None:
    out = tmp_path / "killed"
    cmd = [
        sys.executable, "-m", "trainer", "pretrain", "--preset", "nano",
        "--corpus", str(nano_world / "corpus_pre"), "--out", str(out),
        "--max-steps", "400", "--save-every", "20", "--eval-every", "0", "--threads", "1",
    ]  # fmt: skip
    killed_at, summary = kill_then_resume(cmd, out, kc_home)
    assert 0 < killed_at < 400
    assert summary["resumed_from"] >= killed_at and summary["step"] == 400
    assert read_lineage(out)["metrics"]["step"] == 400
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == list(range(1, 401))  # no step logged twice, none missing


@pytest.mark.slow
def test_loss_falls_far_below_unigram_entropy(nano_world: Path, tmp_path: Path) -> None:
    result = _small_run(nano_world, tmp_path / "long", max_steps=300, save_every=0, eval_every=300)
    held = result["metrics"]["heldout_loss"]  # type: ignore[index]
    assert held < 0.6 * float(result["unigram_entropy"])  # type: ignore[arg-type]


def test_chat_rows_longer_than_the_window_are_left_out(
    nano_world: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A row cut at a window edge would train its answer without its passages (issue 4)."""
    caplog.set_level(logging.INFO)
    cfg = PretrainConfig(
        preset="nano", corpus=[nano_world / "corpus_pre"], mix=[nano_world / "sft" / "long_context.jsonl"],
        out=tmp_path / "run", tag="t", seq_len=128,
    )  # fmt: skip
    result = run_pretrain(cfg, {"eval_every": 0, "max_steps": 1})
    data = result["data"]
    assert data["chat_too_long"] > 0  # type: ignore[index]
    assert any("longer than the 128-token window" in m for m in caplog.messages)


def test_document_positions_restart_after_each_end_of_document() -> None:
    import torch

    from trainer.loop import document_positions

    eos = 0
    ids = torch.tensor([[5, 6, 0, 7, 8, 9, 0, 4], [0, 1, 2, 3, 4, 5, 6, 7]])
    assert document_positions(ids, eos).tolist() == [[0, 1, 2, 0, 1, 2, 3, 0], [0, 0, 1, 2, 3, 4, 5, 6]]


def test_document_attention_keeps_each_packed_record_to_itself(nano_base: Path) -> None:
    """With `--attention document` a packed record is trained exactly as if it were asked alone."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.loop import document_positions

    tokenizer = AutoTokenizer.from_pretrained(str(nano_base))
    model = AutoModelForCausalLM.from_pretrained(str(nano_base), dtype=torch.float32).train()
    torch.manual_seed(0)
    first, second = torch.randint(5, 200, (1, 12)), torch.randint(5, 200, (1, 9))
    packed = torch.cat([first, torch.tensor([[tokenizer.eos_token_id]]), second], dim=1)
    other = packed.clone()
    other[:, :12] = torch.randint(5, 200, (1, 12))  # another first record
    positions = document_positions(packed, tokenizer.eos_token_id)
    out = model(input_ids=packed, position_ids=positions, use_cache=False).logits[:, 13:]
    assert torch.allclose(out, model(input_ids=other, position_ids=positions, use_cache=False).logits[:, 13:])
    assert torch.allclose(out, model(input_ids=second, use_cache=False).logits, atol=1e-5)
    window = model(input_ids=packed, use_cache=False).logits[:, 13:]  # the default: it sees the first one
    assert not torch.allclose(window, out, atol=1e-3)


def test_a_run_with_document_attention_trains_and_records_it(nano_world: Path, tmp_path: Path) -> None:
    cfg = PretrainConfig(
        preset="nano", corpus=[nano_world / "corpus_pre"], mix=[nano_world / "sft" / "reading.jsonl"],
        out=tmp_path / "run", tag="t", attention="document", seq_len=320,  # the fenced reading rows fit
    )  # fmt: skip
    result = run_pretrain(cfg, {"eval_every": 4, "max_steps": 4})
    assert math.isfinite(result["metrics"]["heldout_chat_loss"])  # type: ignore[index]
    lineage = read_lineage(tmp_path / "run")
    assert lineage["config"]["pretrain"]["attention"] == "document"


def test_mix_repeat_trains_a_small_source_more_often(nano_world: Path, tmp_path: Path) -> None:
    sft = nano_world / "sft"
    mix = [sft / "closed_book.jsonl", sft / "grounded.jsonl"]

    def chat_pool(**kw: object) -> dict:
        cfg = PretrainConfig(preset="nano", corpus=[nano_world / "corpus_pre"], mix=mix,
                             out=tmp_path / str(kw.get("mix_repeat")), tag="t", seq_len=256, **kw)  # type: ignore[arg-type]  # fmt: skip
        return run_pretrain(cfg, {"eval_every": 0, "max_steps": 1})["data"]["pools"]["chat"]  # type: ignore[index]

    once, thrice = chat_pool(), chat_pool(mix_repeat=["closed_book.jsonl=3"])
    n_closed_book = len((sft / "closed_book.jsonl").read_text().splitlines())
    assert 2 * n_closed_book * 0.9 <= thrice["records"] - once["records"] <= 2 * n_closed_book
    with pytest.raises(ValueError, match=r"closed-book\.jsonl, not among the --mix files \(closed_book"):
        chat_pool(mix_repeat=["closed-book.jsonl=3"])
    with pytest.raises(ValueError, match="NAME=N"):
        PretrainConfig(preset="nano", corpus=[nano_world / "corpus_pre"], mix_repeat=["closed_book.jsonl"])
