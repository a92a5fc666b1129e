"""SFT with TRL: the loss mask covers the assistant's answer only; full and LoRA checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.registry import list_checkpoints
from core.settings import Settings
from trainer.checkpoint import read_lineage
from trainer.sft import SFTRunConfig, read_chat_rows, read_sft_data, run_sft


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


def test_a_data_entry_with_a_row_count_sets_the_mixture(tmp_path: Path) -> None:
    def chat(tag: str, i: int) -> str:
        return json.dumps({"messages": [{"role": "user", "content": f"{tag} {i}?"},
                                        {"role": "assistant", "content": f"{tag}{i}"}]})  # fmt: skip

    (tmp_path / "big.jsonl").write_text("".join(chat("big", i) + "\n" for i in range(50)))
    (tmp_path / "small").mkdir()
    (tmp_path / "small" / "a.jsonl").write_text("".join(chat("small", i) + "\n" for i in range(4)))
    entries = [tmp_path / "big.jsonl:10", tmp_path / "small:9"]  # more than there are: all of them
    files, rows = read_sft_data(entries, seed=0)
    answers = [r["messages"][-1]["content"] for r in rows]
    assert [f.name for f in files] == ["big.jsonl", "a.jsonl"] and len(rows) == 14
    assert len({a for a in answers[:10] if a.startswith("big")}) == 10
    assert answers[10:] == [f"small{i}" for i in range(4)]
    assert read_sft_data(entries, seed=0)[1] == rows and read_sft_data(entries, seed=1)[1] != rows
    with pytest.raises(ValueError, match="at least 1 row"):
        SFTRunConfig(from_="x", data=[tmp_path / "big.jsonl:0"])
    with pytest.raises(ValueError, match="does not exist"):
        read_sft_data([tmp_path / "gone.jsonl:3"], seed=0)


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


@pytest.mark.parametrize("lora_r", [0, 4], ids=["full", "lora"])
def test_freeze_layers_keeps_the_lower_layers_bit_identical(
    lora_r: int, nano_base: Path, nano_world: Path, tmp_path: Path
) -> None:
    """Nano has 2 layers: with --freeze-layers 1 the embeddings (the tied LM head) and layer 0 are saved
    exactly as they came, and layer 1 has moved."""
    import torch
    from safetensors.torch import load_file

    cfg = SFTRunConfig(from_=str(nano_base), data=[nano_world / "sft" / "grounded.jsonl"], out=tmp_path / "f",
                       lora_r=lora_r, freeze_layers=1, max_steps=3, batch_size=4, lr=1e-2,
                       eval_fraction=0.0)  # fmt: skip
    out = Path(run_sft(cfg)["out"])
    lineage = read_lineage(out)
    assert lineage["config"]["freeze_layers"] == 1 and lineage["metrics"]["backward_layers"] == 1
    base = load_file(str(nano_base / "model.safetensors"))
    weights = load_file(str(out / "model.safetensors"))
    assert base.keys() == weights.keys()
    changed = {k for k in base if not torch.equal(base[k], weights[k])}
    lower = {k for k in base if ".layers.0." in k or "embed_tokens" in k}
    assert len(lower) > 5 and not lower & changed
    assert any(".layers.1.self_attn.q_proj" in k for k in changed)
    if lora_r:
        assert {k for k in changed if "proj" not in k} == set()  # LoRA moves only the adapted projections


@pytest.mark.parametrize("lora_r", [0, 4], ids=["full", "lora"])
def test_backward_stops_at_the_first_trainable_layer(lora_r: int, nano_base: Path) -> None:
    """No hidden state below layer N needs a gradient, so autograd never walks below it."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from trainer.freeze import freeze_lower_layers, trainable_summary
    from trainer.sft import lora_config

    cfg = SFTRunConfig(from_="x", data=[Path("x")], lora_r=lora_r, freeze_layers=1)
    model = AutoModelForCausalLM.from_pretrained(str(nano_base))
    if lora_r:
        model = get_peft_model(model, lora_config(cfg, num_layers=2))
    else:
        freeze_lower_layers(model, 1)
    hidden = model(input_ids=torch.tensor([[5, 6, 7, 8]]), output_hidden_states=True).hidden_states
    assert [h.requires_grad for h in hidden] == [False, False, True]  # embeddings, layer 0, layer 1
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and not any(".layers.0." in n or "embed" in n for n in trainable)
    if lora_r:
        assert all(".layers.1." in n and "lora_" in n for n in trainable)
    assert trainable_summary(model)["backward_layers"] == 1


@pytest.mark.parametrize("markers", [True, False], ids=["generation-markers", "prompt-completion"])
def test_packed_batches_train_on_the_answers_only(
    markers: bool, nano_base: Path, nano_world: Path, tmp_path: Path
) -> None:
    """TRL's packing as run_sft configures it: the labels of a packed batch are the rows' answers, and its
    loss equals the padded batch's on the same rows (packed rows do not attend to one another)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from trainer.sft import sft_args, trl_rows

    rows = read_chat_rows([nano_world / "sft" / "grounded.jsonl"])[:6]
    tok = AutoTokenizer.from_pretrained(str(nano_base))
    if not markers:
        tok.chat_template = tok.chat_template.replace("{% generation %}", "").replace(
            "{% endgeneration %}", ""
        )
    data = Dataset.from_list(trl_rows(rows, assistant_masks=markers))
    losses = {}
    for batching in ("packed", "random"):
        # 640: the two shortest rows (about 300 tokens each with the fenced passages) share one pack
        cfg = SFTRunConfig(from_="x", data=[Path("x")], batching=batching, batch_size=6, max_length=640)
        args = sft_args(cfg, tmp_path / batching, assistant_masks=markers, cuda=False)
        model = AutoModelForCausalLM.from_pretrained(str(nano_base))
        trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
        batch = next(iter(trainer.get_train_dataloader()))
        if batching == "packed":
            assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1
            assert int((batch["position_ids"] == 0).sum()) == 6  # every row, in fewer than 6 packs
            assert len(trainer.train_dataset) < 6
            labels = batch["labels"][0]
            starts = [
                i for i in range(len(labels)) if labels[i] != -100 and (i == 0 or labels[i - 1] == -100)
            ]
            runs = []
            for s in starts:
                e = s
                while e < len(labels) and labels[e] != -100:
                    e += 1
                runs.append(tok.decode(batch["input_ids"][0][s:e]))
            end = "<|im_end|>" if markers else "<|im_end|>\n"  # a completion is the template's whole turn
            assert sorted(runs) == sorted(" " + r["messages"][-1]["content"] + end for r in rows)
        with torch.no_grad():
            losses[batching] = float(trainer.compute_loss(model, batch))
    assert losses["packed"] == pytest.approx(losses["random"], rel=1e-5)


def test_bad_freeze_and_batching_values(nano_base: Path, nano_world: Path, tmp_path: Path) -> None:
    data = [nano_world / "sft" / "grounded.jsonl"]
    with pytest.raises(ValueError, match="--freeze-layers must be >= 0"):
        SFTRunConfig(from_="x", data=data, freeze_layers=-1)
    with pytest.raises(ValueError, match="--batching must be one of random, length, packed"):
        SFTRunConfig(from_="x", data=data, batching="sorted")
    for lora_r in (0, 4):
        cfg = SFTRunConfig(
            from_=str(nano_base), data=data, out=tmp_path / "x", freeze_layers=2, lora_r=lora_r
        )
        with pytest.raises(
            ValueError, match=r"--freeze-layers 2: the model has 2 decoder layers; give 0 to 1"
        ):
            run_sft(cfg)


def test_length_batching_and_packing_cut_the_padding(
    nano_base: Path, nano_world: Path, tmp_path: Path
) -> None:
    """One epoch of the batches run_sft trains on, each way: the same rows and tokens, less padding."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from trainer.sft import BatchStats, sft_args

    sft = nano_world / "sft"
    files = [sft / "grounded.jsonl", sft / "closed_book.jsonl", sft / "reading.jsonl"]
    data = Dataset.from_list(read_chat_rows(files)[:128])
    tok = AutoTokenizer.from_pretrained(str(nano_base))
    model = AutoModelForCausalLM.from_pretrained(str(nano_base))
    stats = {}
    for batching in ("random", "length", "packed"):
        cfg = SFTRunConfig(from_="x", data=[Path("x")], batching=batching, max_length=1024,
                           batch_size=8 if batching != "packed" else 2)  # fmt: skip
        args = sft_args(cfg, tmp_path / batching, assistant_masks=True, cuda=False)
        trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok)
        stats[batching] = BatchStats()
        for batch in trainer.get_train_dataloader():
            stats[batching].add(batch)
    assert {s.rows for s in stats.values()} == {128}
    assert len({s.tokens for s in stats.values()}) == 1 and len({s.loss_tokens for s in stats.values()}) == 1
    assert stats["random"].padding_share > 0.2
    assert stats["length"].padding_share < stats["random"].padding_share / 2
    assert stats["packed"].padding_share == 0
