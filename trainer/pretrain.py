"""Pretraining a Llama from scratch on a corpus, optionally mixed with chat rows from step 0.

    python -m trainer pretrain --preset tiny --corpus data/world/corpus_pre \
        --mix data/world/sft/grounded.jsonl data/world/sft/closed_book.jsonl [--max-steps N] [--resume]

The pretraining mixture may include QA-formatted text (nanochat's midtraining; pre-instruction-tuning,
Jiang et al. 2024): issue 4 measured that a ~1M-parameter model learns to copy answers from passages
only when grounded QA is in the mix early. `--mix-fraction` sets the share of each batch drawn from it.
The default output is `$KC_HOME/checkpoints/base/<preset>-<data hash>`, so repeating a command with
`--resume` continues the same run.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from core.config_flags import to_jsonable
from trainer.checkpoint import default_out, save_checkpoint
from trainer.data import (
    JSONL_SUFFIXES,
    Record,
    Windows,
    assistant_labels,
    dedup,
    expand_paths,
    hash_files,
    pack,
    parse_repeats,
    read_records,
    repeat_sources,
    split_heldout,
    tokenize,
    unigram_entropy,
)
from trainer.loop import STATE_FILE, LoopConfig, Pool, TrainLoop, dist_from_env
from trainer.plan import format_plan, preset_plan
from trainer.presets import PRESET_NAMES, Preset, get_preset
from trainer.tokenizer import load_tokenizer, tokenizer_texts, train_tokenizer

logger = logging.getLogger(__name__)

# LoopConfig fields whose default comes from the preset unless a flag sets them.
PRESET_LOOP_FIELDS = ("max_steps", "lr", "warmup_steps", "eval_every", "save_every")


@dataclass(frozen=True)
class PretrainConfig:
    """Data, model and output of a pretraining run (optimisation: `LoopConfig`)."""

    preset: str = field(default="tiny", metadata={"help": "model preset", "choices": PRESET_NAMES})
    corpus: list[Path] = field(
        default_factory=list,
        metadata={"help": "documents: folders or .md/.txt/.jsonl files", "nargs": "+", "required": True,
                  "type": Path},
    )  # fmt: skip
    mix: list[Path] = field(
        default_factory=list,
        metadata={"help": "chat .jsonl files (or folders) mixed in from step 0, e.g. the world's sft/ files",
                  "nargs": "*", "type": Path},
    )  # fmt: skip
    mix_fraction: float = field(
        default=0.875,
        metadata={
            "help": "share of each batch's windows drawn from the chat rows of --mix (measured on the "
            "tiny world: 0.875 beat 0.5, whose documents overfit)"
        },
    )
    mix_repeat: list[str] = field(
        default_factory=list,
        metadata={
            "help": "NAME=N: pack the rows of the --mix file NAME (e.g. closed_book.jsonl) N times per pass "
            "over the chat rows, so that a small source is seen as often as its facts need",
            "nargs": "*", "type": str,
        },
    )  # fmt: skip
    chat_loss: str = field(
        default="all",
        metadata={
            "help": "loss on the chat rows of --mix: `all` (every token: the passages and questions too) or "
            "`assistant` (the answers only, as in SFT); measured on the tiny world with `--attention "
            "document`, `all` read 39%% of held-out drills after 900 steps, `assistant` 11%%",
            "choices": ("assistant", "all"),
        },
    )
    attention: str = field(
        default="document",
        metadata={
            "help": "what a packed token attends to: `document` (its own record only, position ids "
            "restarting at each, as when it is asked alone) or `window` (every earlier token of the "
            "window); measured on the tiny world with `--chat-loss all`, `document` read 39%% of held-out "
            "drills after 900 steps, `window` 4%%",
            "choices": ("document", "window"),
        },
    )
    out: Path | None = field(
        default=None, metadata={"help": "checkpoint directory (default: $KC_HOME/checkpoints/base/<tag>)",
                                "type": Path}
    )  # fmt: skip
    tag: str | None = field(
        default=None, metadata={"help": "checkpoint tag (default: <preset>-<data hash>)", "type": str}
    )
    tokenizer: Path | None = field(
        default=None,
        metadata={"help": "tokenizer directory (default: train a byte-level BPE on the data)", "type": Path},
    )
    vocab_size: int | None = field(
        default=None,
        metadata={"help": "vocabulary of a newly trained tokenizer (default: preset)", "type": int},
    )
    seq_len: int | None = field(
        default=None, metadata={"help": "tokens per window (default: preset)", "type": int}
    )
    batch_size: int | None = field(
        default=None, metadata={"help": "windows per micro-batch and rank (default: preset)", "type": int}
    )
    heldout_fraction: float = field(default=0.02, metadata={"help": "share of records held out for the loss"})
    near_dup_threshold: float = field(
        default=0.8,
        metadata={"help": "drop documents with word 5-gram Jaccard >= this (1: exact dedup only)"},
    )
    seed: int = field(default=0, metadata={"help": "seed of the initialisation, split and batch order"})
    threads: int | None = field(
        default=None, metadata={"help": "CPU threads for torch (default: all cores)", "type": int}
    )
    resume: bool = field(default=False, metadata={"help": "continue from the run's last saved state"})

    def __post_init__(self) -> None:
        get_preset(self.preset)
        if not self.corpus:
            raise ValueError("--corpus is required")
        if not 0 <= self.mix_fraction <= 1:
            raise ValueError(f"--mix-fraction must be in [0, 1], got {self.mix_fraction}")
        parse_repeats(self.mix_repeat)
        for name in ("seq_len", "batch_size", "vocab_size", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def resolve_loop(preset: Preset, overrides: dict[str, Any]) -> LoopConfig:
    """The preset's training defaults, overridden by every flag that was given (not None)."""
    base = {name: getattr(preset.train, name) for name in PRESET_LOOP_FIELDS}
    given = {
        k: v for k, v in overrides.items() if v is not None and k in {f.name for f in fields(LoopConfig)}
    }
    return replace(LoopConfig(**base), **given)


@dataclass
class PreparedData:
    pools: list[Pool]
    heldout: dict[str, Windows]
    report: dict[str, Any]


def prepare_data(
    records: list[Record], tokenizer: Any, cfg: PretrainConfig, seq_len: int, batch_size: int
) -> PreparedData:
    """Dedup, split, tokenize and pack documents and chat rows into two pools of windows."""
    kept, dedup_report = dedup(records, near_threshold=cfg.near_dup_threshold)
    logger.info("%s", dedup_report.summary())
    for ex in dedup_report.examples[:3]:
        logger.info("  near duplicate: %s ~ %s (Jaccard %.2f)", ex["dropped"], ex["kept"], ex["jaccard"])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    report: dict[str, Any] = {"dedup": to_jsonable(dedup_report), "pools": {}}
    windows: dict[str, Windows] = {}
    heldout: dict[str, Windows] = {}
    for kind, name in (("doc", "docs"), ("chat", "chat")):
        subset = [r for r in kept if r.kind == kind]
        if not subset:
            continue
        tokens_of = dict(zip(subset, tokenize(tokenizer, subset), strict=True))  # each record once
        if kind == "chat":
            # A chat row cut at a window edge would train its answer without the passages it comes from.
            fits = [len(tokens_of[r]) < seq_len for r in subset]
            if not all(fits):
                logger.warning(
                    "chat: %d of %d rows are longer than the %d-token window and are left out (use a longer "
                    "--seq-len to keep them)", fits.count(False), len(subset), seq_len,
                )  # fmt: skip
                report["chat_too_long"] = fits.count(False)
            subset = [r for r, ok in zip(subset, fits, strict=True) if ok]
            if not subset:
                continue
        train, held = split_heldout(subset, cfg.heldout_fraction, cfg.seed)
        if kind == "chat" and cfg.mix_repeat:
            train = repeat_sources(train, parse_repeats(cfg.mix_repeat))
        seqs = [tokens_of[r] for r in train]
        loss_labels = assistant_labels(tokenizer, train, seqs) if cfg.chat_loss == "assistant" else None
        ids, labels = pack(seqs, seq_len, pad_id, labels=loss_labels)
        windows[name] = Windows(ids, labels, seed=cfg.seed)
        entry_tokens = sum(len(s) for s in seqs)
        entry: dict[str, Any] = {
            "records": len(train),
            "heldout_records": len(held),
            "tokens": entry_tokens,
            "windows": len(ids),
            "fill": round(entry_tokens / (len(ids) * seq_len), 4),
            "trained_tokens": int((labels != -100).sum()),  # assistant-only chat loss: the answers
            "unigram_entropy": unigram_entropy(seqs),
        }
        if held:
            hseqs = [tokens_of[r] for r in held]
            hloss = assistant_labels(tokenizer, held, hseqs) if cfg.chat_loss == "assistant" else None
            hids, hlabels = pack(hseqs, seq_len, pad_id, labels=hloss)
            heldout["heldout_loss" if name == "docs" else "heldout_chat_loss"] = Windows(
                hids, hlabels, cfg.seed
            )
        report["pools"][name] = entry
        logger.info(
            "%s: %d records (%d held out), %d tokens in %d windows of %d (%.0f%% filled; loss on %d "
            "tokens), unigram entropy %.3f nats",
            name, entry["records"], entry["heldout_records"], entry["tokens"], entry["windows"], seq_len,
            100 * entry["fill"], entry["trained_tokens"], entry["unigram_entropy"],
        )  # fmt: skip
    if not windows:
        raise ValueError("no training data left after deduplication")
    if len(windows) == 2:
        n_chat = round(batch_size * cfg.mix_fraction)
        if 0 < cfg.mix_fraction < 1 and batch_size > 1:
            n_chat = min(batch_size - 1, max(1, n_chat))  # both pools in every batch
        sizes = {"docs": batch_size - n_chat, "chat": n_chat}
    else:
        sizes = {name: batch_size for name in windows}
    pools = [Pool(name, w, sizes[name]) for name, w in windows.items()]
    report["batch"] = sizes
    return PreparedData(pools, heldout, report)


def run_pretrain(cfg: PretrainConfig, loop_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train a preset model on the corpus; returns a summary (out, tag, step, metrics, plan)."""
    preset = get_preset(cfg.preset)
    loop_cfg = resolve_loop(preset, loop_overrides or {})
    seq_len = cfg.seq_len or preset.train.seq_len
    batch_size = cfg.batch_size or preset.train.batch_size
    if seq_len > preset.model.max_position_embeddings:
        raise ValueError(f"--seq-len {seq_len} exceeds the preset's {preset.model.max_position_embeddings}")
    files = expand_paths(cfg.corpus)
    mix_files = expand_paths(cfg.mix, JSONL_SUFFIXES) if cfg.mix else []
    unknown = sorted(set(parse_repeats(cfg.mix_repeat)) - {f.name for f in mix_files})
    if unknown:  # a typo would silently change nothing
        known = ", ".join(f.name for f in mix_files) or "none"
        raise ValueError(f"--mix-repeat names {', '.join(unknown)}, not among the --mix files ({known})")
    import torch
    from transformers import LlamaForCausalLM

    threads = cfg.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    dist = dist_from_env()
    data_sha256 = hash_files(files + mix_files)
    tag = cfg.tag or f"{preset.name}-{data_sha256[:8]}"
    out = (cfg.out or default_out("base", tag)).expanduser()
    if (out / STATE_FILE).exists() and not cfg.resume:
        raise ValueError(
            f"{out} already holds a run: pass --resume to continue it, or --tag/--out for a new one"
        )

    records = read_records(files) + read_records(mix_files)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.resume and (out / "tokenizer.json").exists():
        tokenizer = load_tokenizer(out)
    elif cfg.tokenizer is not None:
        tokenizer = load_tokenizer(cfg.tokenizer)
    else:
        tokenizer = train_tokenizer(
            tokenizer_texts(r.text for r in records), cfg.vocab_size or preset.model.vocab_size
        )
        if dist.is_main:
            tokenizer.save_pretrained(str(out))  # a resumed run must tokenize exactly as this one

    data = prepare_data(records, tokenizer, cfg, seq_len, batch_size)
    vocab = 64 * math.ceil(len(tokenizer) / 64)
    torch.manual_seed(cfg.seed)
    model_config = preset.model.llama_config(
        vocab, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None
    )
    model = LlamaForCausalLM(model_config)
    n_params = sum(p.numel() for p in model.parameters())
    tokens_per_step = batch_size * seq_len * loop_cfg.grad_accum * dist.world
    plan = preset_plan(preset.model, n_params, loop_cfg.max_steps * tokens_per_step, seq_len)
    logger.info("preset %s: %s parameters\n%s", preset.name, f"{n_params:,}", format_plan(plan))

    resolved = {
        "pretrain": cfg,
        "loop": loop_cfg,
        "preset": preset.to_dict(),
        "resolved": {"seq_len": seq_len, "batch_size": batch_size, "vocab_size": vocab, "threads": threads,
                     "world_size": dist.world},
    }  # fmt: skip
    entropy = data.report["pools"].get("docs", next(iter(data.report["pools"].values())))["unigram_entropy"]

    def save(model: Any, step: int, metrics: dict[str, Any]) -> None:
        save_checkpoint(
            model,
            tokenizer,
            out,
            phase="base",
            tag=tag,
            parent=str(cfg.tokenizer) if cfg.tokenizer else None,
            data_sha256=data_sha256,
            config=resolved,
            metrics={**metrics, "unigram_entropy": entropy, "max_steps": loop_cfg.max_steps},
            extra={"data": {"files": len(files) + len(mix_files), **data.report}},
        )

    loop = TrainLoop(
        model, data.pools, data.heldout, loop_cfg, out, save,
        seq_len=seq_len, dtype=preset.train.dtype, threads=threads, dist=dist,
        document_eos=tokenizer.eos_token_id if cfg.attention == "document" else None,
    )  # fmt: skip
    result = loop.run(resume=cfg.resume)
    return {
        "out": str(out),
        "tag": tag,
        "step": result.step,
        "max_steps": loop_cfg.max_steps,
        "stopped_early": result.stopped_early,
        "resumed_from": result.resumed_from,
        "params": n_params,
        "unigram_entropy": entropy,
        "metrics": result.metrics,
        "data": data.report,
        "plan": plan,
    }
