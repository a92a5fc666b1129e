"""The chat vector merge: exact arithmetic, lineage, and refusals of checkpoints that do not fit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from core.registry import list_checkpoints
from core.settings import Settings
from trainer.__main__ import main
from trainer.checkpoint import read_lineage
from trainer.merge import MergeConfig, MergeError, run_merge


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def test_base_plus_chat_vector_is_the_chat_model_exactly(
    nano_base: Path, nano_chat: Path, tmp_path: Path
) -> None:
    result = run_merge(
        MergeConfig(base=str(nano_base), chat=str(nano_chat), cpt=str(nano_base), out=tmp_path / "m")
    )
    merged, chat = _weights(tmp_path / "m"), _weights(nano_chat)
    assert set(merged) == set(chat) and result["tensors"] == len(chat)
    assert all(torch.equal(merged[name], chat[name]) for name in chat)
    assert result["chat_vector_norm"] > 0  # the chat model did move away from the base


def test_ratio_zero_is_the_cpt_model_and_half_is_halfway(
    nano_base: Path, nano_chat: Path, nano_cpt: Path, tmp_path: Path
) -> None:
    run_merge(
        MergeConfig(
            base=str(nano_base), chat=str(nano_chat), cpt=str(nano_cpt), ratio=0.0, out=tmp_path / "r0"
        )
    )
    zero, cpt = _weights(tmp_path / "r0"), _weights(nano_cpt)
    assert all(torch.equal(zero[name], cpt[name]) for name in cpt)
    run_merge(
        MergeConfig(
            base=str(nano_base), chat=str(nano_chat), cpt=str(nano_cpt), ratio=0.5, out=tmp_path / "r5"
        )
    )
    half, base, chat = _weights(tmp_path / "r5"), _weights(nano_base), _weights(nano_chat)
    for name in cpt:
        torch.testing.assert_close(half[name], cpt[name] + 0.5 * (chat[name] - base[name]))


def test_merged_lineage_names_all_three_parents_and_registers(
    nano_base: Path, nano_chat: Path, nano_cpt: Path
) -> None:
    result = run_merge(MergeConfig(base=str(nano_base), chat=str(nano_chat), cpt=str(nano_cpt)))
    out = Path(result["out"])
    lineage = read_lineage(out)
    assert lineage["phase"] == "merged" and lineage["tag"] == "nano-cpt-chat1"
    assert lineage["parent"] == str(nano_cpt)
    assert lineage["parents"] == {"base": str(nano_base), "chat": str(nano_chat), "cpt": str(nano_cpt)}
    assert lineage["metrics"]["ratio"] == 1.0
    (entry,) = list_checkpoints(Settings().resolved_database_url, "merged")
    assert Path(entry.path) == out.resolve()
    assert (out / "chat_template.jinja").exists()


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("train_state.pt"))
    return dst


def _merge_cli(base: Path, chat: Path, cpt: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert (
        main(
            [
                "merge",
                "--base",
                str(base),
                "--chat",
                str(chat),
                "--cpt",
                str(cpt),
                "--out",
                str(cpt.parent / "x"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_shape_mismatch_is_refused(
    nano_base: Path, nano_chat: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _copy(nano_chat, tmp_path / "bad")
    weights = _weights(bad)
    name = next(n for n in sorted(weights) if n.endswith("mlp.up_proj.weight"))
    weights[name] = weights[name][:-1].contiguous()
    save_file(weights, str(bad / "model.safetensors"), metadata={"format": "pt"})
    err = _merge_cli(nano_base, bad, nano_base, capsys)
    assert name in err and "shape" in err


def test_a_missing_tensor_is_refused(
    nano_base: Path, nano_chat: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _copy(nano_chat, tmp_path / "bad")
    weights = _weights(bad)
    name = sorted(weights)[-1]
    del weights[name]
    save_file(weights, str(bad / "model.safetensors"), metadata={"format": "pt"})
    err = _merge_cli(nano_base, nano_chat, bad, capsys)
    assert f"lacks {name}" in err


def test_another_tokenizer_is_refused(
    nano_base: Path, nano_chat: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _copy(nano_chat, tmp_path / "bad")
    tok = json.loads((bad / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = sorted(vocab, key=vocab.get)[300:302]
    vocab[a], vocab[b] = vocab[b], vocab[a]  # same size, same shapes: only the vocabulary differs
    (bad / "tokenizer.json").write_text(json.dumps(tok))
    err = _merge_cli(nano_base, bad, nano_base, capsys)
    assert "another tokenizer" in err and "vocabulary" in err
    with pytest.raises(MergeError, match=r"tokenizer\.json"):
        (bad / "tokenizer.json").unlink()
        run_merge(MergeConfig(base=str(nano_base), chat=str(bad), cpt=str(nano_base)))


def _smollm2_shaped(src_tokenizer: Path, out: Path, seed: int) -> Path:
    """A randomly initialised Llama of SmolLM2-135M's shape (GQA 9/3 heads, head_dim 64, tied 49,152-row
    embedding, 1,536-wide MLP), two layers instead of thirty, saved with `src_tokenizer`'s tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=2,
        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0,
        rms_norm_eps=1e-5, tie_word_embeddings=True,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(str(out))
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (src_tokenizer / name).exists():
            shutil.copy(src_tokenizer / name, out / name)
    return out


def test_chat_vector_on_a_real_model_shaped_checkpoint(nano_base: Path, tmp_path: Path) -> None:
    base, chat, cpt = (
        _smollm2_shaped(nano_base, tmp_path / n, seed) for seed, n in enumerate(("b", "c", "p"))
    )
    result = run_merge(MergeConfig(base=str(base), chat=str(chat), cpt=str(cpt), out=tmp_path / "m"))
    merged, wb, wc, wp = (_weights(p) for p in (tmp_path / "m", base, chat, cpt))
    assert set(merged) == set(wp) and result["tensors"] == len(wp)
    assert "lm_head.weight" not in merged  # tied: one embedding, merged once
    assert merged["model.layers.1.self_attn.k_proj.weight"].shape == (192, 576)  # 3 KV heads x 64
    for name in wp:
        expected = (wp[name].double() + wc[name].double() - wb[name].double()).to(wp[name].dtype)
        assert torch.equal(merged[name], expected), name
