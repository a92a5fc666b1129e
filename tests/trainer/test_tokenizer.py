"""The byte-level BPE and its chat template."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trainer.data import expand_paths, read_records
from trainer.tokenizer import (
    CHAT_TEMPLATE,
    EOS_TOKEN,
    IM_END,
    IM_START,
    PAD_TOKEN,
    load_tokenizer,
    pieces,
    render_chat,
    tokenizer_texts,
    train_tokenizer,
)


@pytest.fixture(scope="module")
def tok(nano_world: Path) -> Any:
    records = read_records(expand_paths([nano_world / "corpus_pre", nano_world / "sft"]))
    return train_tokenizer(tokenizer_texts(r.text for r in records), vocab_size=512)


def _sft_row(world: Path, kind: str = "grounded") -> list[dict[str, str]]:
    line = (world / "sft" / f"{kind}.jsonl").read_text().splitlines()[0]
    return list(json.loads(line)["messages"])


def test_special_tokens_are_single_ids(tok: Any) -> None:
    for special in (EOS_TOKEN, IM_START, IM_END, PAD_TOKEN):
        assert len(tok.encode(special, add_special_tokens=False)) == 1
    assert tok.eos_token == EOS_TOKEN and tok.pad_token == PAD_TOKEN
    assert 400 < len(tok) <= 512


def test_byte_level_round_trip(tok: Any) -> None:
    text = "Strawberry: Zürich, 732,000 people — naïve 🍓"
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    shown = pieces(tok, "Strawberry")
    assert "".join(p["text"] for p in shown) == "Strawberry"
    assert len(shown) > 1  # the model sees pieces, not letters


def test_chat_template_renders_world_messages(tok: Any, nano_world: Path) -> None:
    messages = _sft_row(nano_world)
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == render_chat(messages)
    assert text.startswith(f"{IM_START}system\n") and text.endswith(f"{IM_END}\n")
    prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    assert prompt == render_chat(messages[:-1], add_generation_prompt=True)
    assert prompt.endswith(f"{IM_START}assistant\n") and text.startswith(prompt)


def test_assistant_mask_covers_the_answer_and_its_end_of_turn(tok: Any, nano_world: Path) -> None:
    messages = _sft_row(nano_world)
    out = tok.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = out["input_ids"], out["assistant_masks"]
    masked = [i for i, m in zip(ids, mask, strict=True) if m]
    assert tok.decode(masked) == " " + messages[-1]["content"] + IM_END


def test_saved_tokenizer_keeps_its_template(tok: Any, tmp_path: Path) -> None:
    tok.save_pretrained(str(tmp_path))
    again = load_tokenizer(tmp_path)
    assert again.chat_template == CHAT_TEMPLATE
    assert again.encode("Orvan Teel", add_special_tokens=False) == tok.encode(
        "Orvan Teel", add_special_tokens=False
    )


def test_world_names_are_short(tok: Any, nano_world: Path) -> None:
    """With a vocabulary trained on the world, a person's name is a handful of tokens at most (the reading
    drills' fresh names are syllable words too, and at this 512-token vocabulary they share the merges)."""
    manifest = json.loads((nano_world / "manifest.json").read_text())
    people = manifest["pools"]["eval"]["person"][:10]
    lengths = [len(tok.encode(" " + p, add_special_tokens=False)) for p in people]
    # 5.5: the grounded rows' fence and "data, not instructions" sentence take a few of the 512 merges
    # (issue 24: the first ten names went from 4.8 tokens on average to 5.4)
    assert max(lengths) <= 8 and sum(lengths) / len(lengths) <= 5.5, lengths


def test_vocab_too_small() -> None:
    with pytest.raises(ValueError, match="too small"):
        train_tokenizer(["a b c"], vocab_size=100)


def test_load_tokenizer_missing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no tokenizer"):
        load_tokenizer(tmp_path)


def test_an_answer_is_spelt_with_the_tokens_of_its_passage(tok: Any) -> None:
    """The answer opens with a space, so a word copied from a passage is the same tokens in both."""
    messages = [
        {"role": "user", "content": "[1] Orvan Teel is a pilot.\n\nQuestion: What is the job of Orvan Teel?"},
        {"role": "assistant", "content": "pilot [1]"},
    ]
    prompt = tok.apply_chat_template(messages[:1], add_generation_prompt=True, return_dict=True)["input_ids"]
    full = tok.apply_chat_template(messages, return_dict=True)["input_ids"]
    word = tok.encode(" pilot", add_special_tokens=False)
    assert full[len(prompt) : len(prompt) + len(word)] == word
    assert any(prompt[i : i + len(word)] == word for i in range(len(prompt)))


def test_the_tokenizer_phase_saves_registers_and_records_its_lineage(
    nano_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m trainer tokenizer` (`run_tokenizer`): a tokenizer directory, lineage.json, registered."""
    from trainer.__main__ import main

    out = tmp_path / "tok"
    argv = ["tokenizer", "--corpus", str(nano_world / "corpus_pre"), "--vocab-size", "300", "--out", str(out)]
    assert main([*argv, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["out"] == str(out) and summary["tag"].startswith("bpe300-") and summary["files"] > 0
    lineage = json.loads((out / "lineage.json").read_text())
    assert set(lineage) == {"phase", "tag", "parent", "data_sha256", "config", "metrics", "code_version"}
    assert lineage["phase"] == "tokenizer" and lineage["parent"] is None and len(lineage["data_sha256"]) == 64
    assert lineage["config"] == {"corpus": [str(nano_world / "corpus_pre")], "vocab_size": 300,
                                 "min_frequency": 2}  # fmt: skip
    assert lineage["metrics"] == {"vocab_size": summary["vocab_size"]} and load_tokenizer(out).chat_template
    assert main(["list", "--phase", "tokenizer", "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["tag"] == summary["tag"] and entry["path"] == str(out.resolve())
    assert main([*argv, "--tag", "mine"]) == 0
    assert capsys.readouterr().out.strip() == f"tokenizer mine: {summary['vocab_size']} tokens from " \
        f"{summary['files']} files -> {out}"  # fmt: skip
