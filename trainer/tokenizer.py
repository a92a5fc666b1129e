"""Byte-level BPE tokenizers trained with `tokenizers`, saved with special tokens and a chat template.

    python -m trainer tokenizer --corpus data/world/corpus_pre --vocab-size 2048 --out var/tok
    python -m trainer tokenize "Strawberry" --tokenizer var/tok

`run_tokenizer` is the `tokenizer` phase: train on a corpus, save, write lineage.json, register.

Special tokens: `<|endoftext|>` ends a document (the tokenizer's eos), `<|im_start|>`/`<|im_end|>` frame a
chat turn (ChatML; `<|im_end|>` also stops generation), `<|pad|>` pads batches. The chat template marks the
assistant's text, end-of-turn token included, with `{% generation %}`, so that transformers can return
the assistant mask that SFT's assistant-only loss uses.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from core.registry import register_checkpoint
from core.settings import Settings
from trainer.checkpoint import code_version, default_out, write_json_atomic

logger = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD_TOKEN = "<|pad|>"
SPECIAL_TOKENS = (EOS_TOKEN, IM_START, IM_END, PAD_TOKEN)
MIN_VOCAB = 256 + len(SPECIAL_TOKENS)

# ChatML. The assistant's content and its <|im_end|> are inside {% generation %}: the model must learn to
# stop. The newline after <|im_end|> is outside, so that a prompt rendered with add_generation_prompt is a
# prefix of the full conversation.
# The assistant's text opens with a space: a byte-level BPE spells a word after a newline with other tokens
# than the same word inside a sentence ("\npilot" is 'p' 'ilot', " pilot" is one token), so an answer
# without it is not a copy of the passage's tokens, and a tiny model did not learn the mapping for common
# words (issue 4: 1 of 16 job questions on held-out drills, every other answer "chief executive"). Decoded
# answers start with that space; whoever shows them strips it.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- ' ' + message['content'] + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}"
    "{%- else %}"
    "{{- message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def render_chat(messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    """The chat template in plain Python (same output), for data preparation before a tokenizer exists."""
    out = "".join(
        f"{IM_START}{m['role']}\n{' ' if m['role'] == 'assistant' else ''}{m['content']}{IM_END}\n"
        for m in messages
    )
    return out + (f"{IM_START}assistant\n" if add_generation_prompt else "")


def tokenizer_texts(texts: Iterable[str]) -> Iterable[str]:
    """Training texts with the special tokens' spellings removed: those are added to the vocabulary whole
    and must not shape the merges."""
    for text in texts:
        for tok in SPECIAL_TOKENS:
            text = text.replace(tok, "\n")
        yield text


def train_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Any:
    """Train a byte-level BPE on `texts`; returns a transformers `PreTrainedTokenizerFast`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < MIN_VOCAB:
        raise ValueError(
            f"--vocab-size {vocab_size} is too small: a byte-level BPE needs at least {MIN_VOCAB}"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    logger.info("trained byte-level BPE: %d tokens (asked for %d)", tok.get_vocab_size(), vocab_size)
    return wrap_tokenizer(tok)


def wrap_tokenizer(tok: Any) -> Any:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens=[IM_START, IM_END],
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    path = Path(path)
    if not (path / "tokenizer.json").exists() and not (path / "tokenizer_config.json").exists():
        raise ValueError(
            f"{path} holds no tokenizer (no tokenizer.json); train one with `python -m trainer tokenizer`"
        )
    return AutoTokenizer.from_pretrained(str(path))


def stop_token_ids(tokenizer: Any) -> list[int]:
    """Token ids that end generation: the end of a chat turn, then the end of a document."""
    ids = [tokenizer.convert_tokens_to_ids(t) for t in (IM_END, EOS_TOKEN)]
    ids = [i for i in ids if isinstance(i, int) and i != tokenizer.unk_token_id and i >= 0]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def pieces(tokenizer: Any, text: str) -> list[dict[str, Any]]:
    """Each token of `text`: its id, its vocabulary entry and the text it decodes to."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    return [
        {"id": i, "token": tokenizer.convert_ids_to_tokens(i), "text": tokenizer.decode([i])} for i in ids
    ]


def run_tokenizer(
    corpus: list[Path],
    vocab_size: int,
    min_frequency: int = 2,
    *,
    out: Path | None = None,
    tag: str | None = None,
) -> dict[str, Any]:
    """Train a tokenizer on the files under `corpus`, save it with its lineage.json (phase `tokenizer`, no
    parent) to `out` (default: $KC_HOME/checkpoints/tokenizer/<tag>) and register it; returns a summary
    (out, tag, vocab_size, files). The default tag is `bpe<vocab size>-<data hash>`."""
    from trainer.data import expand_paths, hash_files, read_records  # it imports this module

    files = expand_paths(corpus)
    data_sha256 = hash_files(files)
    tag = tag or f"bpe{vocab_size}-{data_sha256[:8]}"
    out = (out or default_out("tokenizer", tag)).expanduser()
    tok = train_tokenizer(tokenizer_texts(r.text for r in read_records(files)), vocab_size, min_frequency)
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(out))
    metrics = {"vocab_size": len(tok)}
    lineage: dict[str, Any] = {
        "phase": "tokenizer",
        "tag": tag,
        "parent": None,
        "data_sha256": data_sha256,
        "config": {
            "corpus": [str(c) for c in corpus],
            "vocab_size": vocab_size,
            "min_frequency": min_frequency,
        },
        "metrics": metrics,
        "code_version": code_version(),
    }
    write_json_atomic(out / "lineage.json", lineage)
    register_checkpoint(
        Settings().resolved_database_url, tag=tag, phase="tokenizer", path=out.resolve(), metrics=metrics
    )
    return {"out": str(out), "tag": tag, "vocab_size": len(tok), "files": len(files)}
