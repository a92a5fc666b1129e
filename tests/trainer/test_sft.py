"""SFT with TRL: the loss mask covers the assistant's answer only; full and LoRA checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.registry import list_checkpoints
from core.settings import Settings
from trainer.checkpoint import read_lineage
from trainer.sft import SFTRunConfig, read_chat_rows, run_sft


def test_label_mask_is_the_assistant_answer_only(nano_base: Path, nano_world: Path, tmp_path: Path) -> None:
    """Build TRL's trainer as run_sft does and read its first batch: every trained label is an answer
    token or the <|im_end|> that ends it."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = read_chat_rows([nano_world / "sft" / "grounded.jsonl"])[:4]
    tok = AutoTokenizer.from_pretrained(str(nano_base))
    model = AutoModelForCausalLM.from_pretrained(str(nano_base))
    args = SFTConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, assistant_only_loss=True, report_to="none",
        use_cpu=True, bf16=False, activation_checkpointing=False, max_length=1024,
    )  # fmt: skip
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))
    answers = sorted(" " + r["messages"][-1]["content"] + "<|im_end|>" for r in rows)
    got = sorted(
        tok.decode(ids[labels != -100])
        for ids, labels in zip(batch["input_ids"], batch["labels"], strict=True)
    )
    assert got == answers


def test_sft_full_fine_tuning(nano_base: Path, nano_world: Path, tmp_path: Path) -> None:
    cfg = SFTRunConfig(from_=str(nano_base), data=[nano_world / "sft"], out=tmp_path / "sft", max_steps=4,
                       batch_size=4, limit=64)  # fmt: skip
    result = run_sft(cfg)
    out = Path(result["out"])
    lineage = read_lineage(out)
    assert lineage["phase"] == "sft" and lineage["parent"] == str(nano_base)
    assert lineage["parent_tag"] == "nano-session" and lineage["tag"] == "nano-session-sft"
    assert lineage["metrics"]["steps"] == 4 and "heldout_loss" in lineage["metrics"]
    assert lineage["config"]["from_"] == str(nano_base)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(r["tokens_per_s"] > 0 for r in rows)
    assert (out / "chat_template.jinja").exists() and not (out / "adapter").exists()
    (entry,) = list_checkpoints(Settings().resolved_database_url, "sft")
    assert entry.tag == "nano-session-sft"


def test_sft_lora_keeps_and_merges_the_adapter(nano_base: Path, nano_world: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    data = [nano_world / "sft" / "grounded.jsonl"]
    cfg = SFTRunConfig(
        from_=str(nano_base),
        data=data,
        out=tmp_path / "lora",
        lora_r=4,
        max_steps=3,
        batch_size=4,
        lr=1e-2,
        eval_fraction=0.0,
    )
    out = Path(run_sft(cfg)["out"])
    assert (out / "adapter" / "adapter_config.json").exists()
    weights = load_file(str(out / "model.safetensors"))
    assert not any("lora" in k for k in weights)  # merged: a plain Llama checkpoint
    base = load_file(str(nano_base / "model.safetensors"))
    changed = [k for k in base if k in weights and not (base[k] == weights[k]).all()]
    assert any("q_proj" in k for k in changed)
    assert not any("norm" in k for k in changed)  # LoRA touches only the targeted projections
    AutoModelForCausalLM.from_pretrained(str(out))


def test_bad_sft_inputs(nano_base: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(ValueError, match="assistant"):
        read_chat_rows([bad])
    with pytest.raises(ValueError, match="registered tag"):
        run_sft(SFTRunConfig(from_="no-such-tag", data=[bad]))
    with pytest.raises(ValueError, match="lora-r"):
        SFTRunConfig(from_="x", data=[bad], lora_r=-1)


def test_a_template_without_generation_markers_trains_on_the_final_answer(
    nano_base: Path, nano_world: Path, tmp_path: Path
) -> None:
    """Another model's template (e.g. SmolLM2's) has no {% generation %}: rows become prompt + completion."""
    import shutil

    base = tmp_path / "foreign"
    shutil.copytree(nano_base, base)
    template = (base / "chat_template.jinja").read_text()
    plain = template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    assert plain != template
    (base / "chat_template.jinja").write_text(plain)
    cfg = SFTRunConfig(from_=str(base), data=[nano_world / "sft" / "closed_book.jsonl"], out=tmp_path / "out",
                       max_steps=2, batch_size=4, eval_fraction=0.0)  # fmt: skip
    assert read_lineage(Path(run_sft(cfg)["out"]))["metrics"]["steps"] == 2
