"""Continued pretraining (CPT): train new documents into a checkpoint's weights, with the known remedies
against forgetting as knobs.

    python -m trainer cpt --from base/tiny-1a2b3c4d --docs data/world/docs_post \
        [--replay 0.25 --replay-from data/world/corpus_pre] [--rewarm-steps 20] [--lr 1e-3] [--epochs 8] \
        [--paraphrases 4 --paraphraser rule|model] [--questions 8] [--lora-r 8] [--tag T | --out DIR] \
        [--resume]

- New documents are read with the indexer's loaders (`core.loaders`: md/txt/rst/html/pdf/jsonl), so CPT
  takes any folder users ingest. They are never held out: a held-out news item is a fact never taught.
- Replay (Ibrahim et al. 2024): `--replay F` is the share of training *windows* (packed `seq_len`-token
  rows) drawn from the old corpus `--replay-from` (read as pretraining read it: documents and chat rows).
  The mixture is laid out in advance, replay windows evenly spaced, so the realised share is exact to one
  window; it is logged with its token share and recorded in lineage.json (`data.mixture`). The parent's
  own held-out split of that corpus is never replayed and gives `heldout_pre_loss`.
- Learning rate: re-warmed over `--rewarm-steps` to `--lr` (default: the parent's peak), then cosine-
  decayed to `--min-lr-ratio` of it, by the shared training loop (`trainer.loop`): same step line,
  metrics.jsonl, train_state.pt, `--resume` after a kill.
- `--paraphrases K` adds K rephrasings of each new document (`trainer.paraphrase`); they are kept in the
  run's `paraphrases.jsonl`, so a resumed run trains on the same texts.
- `--questions N` adds up to N question/answer chat rows per new document (`trainer.doc_questions`: its
  dates, places, numbers and subjects asked as the closed-book strategy asks), written to the run's
  `questions.jsonl`; `--questions-share F` gives them to that share of the documents only (a stable split
  by file name), so that an eval can tell facts taught as questions from facts only read.
- `--lora-r R` trains LoRA adapters only; every save merges them (the adapter is kept in `adapter/`).

The tokenizer is the parent's, never retrained. The checkpoint is phase `cpt` with the parent recorded;
`python -m trainer merge` then re-applies the chat vector, and `python -m trainer forgetting` measures
what was gained and lost.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from core.config_flags import to_jsonable
from trainer.checkpoint import default_out, read_lineage, resolve_checkpoint, save_checkpoint
from trainer.cpt_data import build_mixture, read_documents
from trainer.data import (
    Record,
    assistant_labels,
    dedup,
    expand_paths,
    hash_files,
    read_records,
    split_heldout,
)
from trainer.data import tokenize as tokenize_records
from trainer.doc_questions import question_rows
from trainer.hf import lora_alpha_field, out_field, parent_field, peft_lora, tag_field, threads_field
from trainer.loop import STATE_FILE, LoopConfig, Pool, TrainLoop, dist_from_env
from trainer.paraphrase import PARAPHRASERS, paraphrase_documents

logger = logging.getLogger(__name__)

PARAPHRASES_FILE = "paraphrases.jsonl"
QUESTIONS_FILE = "questions.jsonl"
DEFAULT_SEQ_LEN, DEFAULT_BATCH = 256, 16
FALLBACK_LR = 1e-4  # a parent without lineage (an imported model): a real model wants a small step


@dataclass(frozen=True)
class CPTConfig:
    """What `python -m trainer cpt` trains, on what (optimisation: `LoopConfig`)."""

    from_: str = parent_field("checkpoint to continue: a directory (any HF causal LM) or a registered tag")
    docs: list[Path] = field(
        default_factory=list,
        metadata={"help": "new documents: folders or files the indexer reads (md/txt/rst/html/pdf/jsonl)",
                  "nargs": "+", "required": True, "type": Path},
    )  # fmt: skip
    replay: float = field(
        default=0.0, metadata={"help": "share of training windows replayed from --replay-from (0: none)"}
    )
    replay_from: list[Path] = field(
        default_factory=list,
        metadata={"help": "the old corpus (e.g. the parent's pretraining data): replay and held-out loss",
                  "nargs": "*", "type": Path},
    )  # fmt: skip
    rewarm_steps: int | None = field(
        default=None,
        metadata={
            "help": "steps re-warming the learning rate from 0 (default: 5%% of the steps)",
            "type": int,
        },
    )
    epochs: float = field(default=4.0, metadata={"help": "passes over the new documents (and paraphrases)"})
    paraphrases: int = field(default=0, metadata={"help": "rephrasings added per new document (0: none)"})
    paraphraser: str = field(default="rule", metadata={"help": "how to rephrase", "choices": PARAPHRASERS})
    paraphrase_url: str | None = field(
        default=None,
        metadata={"help": "--paraphraser model: OpenAI-compatible base URL, e.g. the gateway's "
                  "http://127.0.0.1:8000/v1 (key: KC_API_KEY)", "type": str},
    )  # fmt: skip
    paraphrase_model: str = field(default="keepcurrent", metadata={"help": "--paraphraser model: model name"})
    questions: int = field(
        default=0, metadata={"help": "question/answer rows added per new document, at most (0: none)"}
    )
    questions_share: float = field(
        default=1.0, metadata={"help": "share of the new documents given --questions rows (by file name)"}
    )
    lora_r: int = field(default=0, metadata={"help": "LoRA rank; 0 trains every weight"})
    lora_alpha: int | None = lora_alpha_field()
    seq_len: int | None = field(
        default=None, metadata={"help": "tokens per window (default: the parent's)", "type": int}
    )
    batch_size: int | None = field(
        default=None,
        metadata={"help": "windows per micro-batch and rank (default: the parent's)", "type": int},
    )
    near_dup_threshold: float = field(
        default=0.8, metadata={"help": "drop new documents with word 5-gram Jaccard >= this (1: exact only)"}
    )
    out: Path | None = out_field("cpt")  # noqa: RUF009 (a field(), not a shared default)
    tag: str | None = tag_field("<parent tag>-cpt-<data+knobs hash>")
    seed: int = field(default=0, metadata={"help": "seed of the mixture order and the rephrasings"})
    threads: int | None = threads_field("CPU threads for torch (default: all cores)")
    resume: bool = field(default=False, metadata={"help": "continue from the run's last saved state"})

    def __post_init__(self) -> None:
        if not self.from_:
            raise ValueError("--from is required")
        if not self.docs:
            raise ValueError("--docs is required")
        if not 0 <= self.replay < 1:
            raise ValueError(f"--replay must be in [0, 1), got {self.replay}")
        if self.replay > 0 and not self.replay_from:
            raise ValueError(f"--replay {self.replay:g} needs --replay-from DIR (the old corpus to replay)")
        if not self.epochs > 0:
            raise ValueError(f"--epochs must be positive, got {self.epochs}")
        if self.paraphrases < 0:
            raise ValueError(f"--paraphrases must be >= 0, got {self.paraphrases}")
        if self.paraphraser == "model" and self.paraphrases and not self.paraphrase_url:
            raise ValueError("--paraphraser model needs --paraphrase-url (an OpenAI-compatible base URL)")
        if self.questions < 0:
            raise ValueError(f"--questions must be >= 0, got {self.questions}")
        if not 0 < self.questions_share <= 1:
            raise ValueError(f"--questions-share must be in (0, 1], got {self.questions_share}")
        if self.lora_r < 0:
            raise ValueError(f"--lora-r must be >= 0, got {self.lora_r}")
        if self.rewarm_steps is not None and self.rewarm_steps < 0:
            raise ValueError(f"--rewarm-steps must be >= 0, got {self.rewarm_steps}")
        for name in ("seq_len", "batch_size", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")

    def knobs_hash(self) -> str:
        """What makes two runs on the same data different runs (and different default tags)."""
        skip = {"out", "tag", "threads", "resume", "from_", "docs", "replay_from"}
        knobs = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        return hashlib.sha256(json.dumps(to_jsonable(knobs), sort_keys=True).encode()).hexdigest()


# -- data --------------------------------------------------------------------------------------------


def lineage_chain(path: Path, depth: int = 6) -> list[dict[str, Any]]:
    """The checkpoint's lineage, then its parent's, and so on (for settings an SFT parent does not carry)."""
    chain: list[dict[str, Any]] = []
    current: Path | None = path
    while current is not None and len(chain) < depth:
        lineage = read_lineage(current)
        if not lineage:
            break
        chain.append(lineage)
        parent = lineage.get("parent")
        current = Path(parent) if parent and Path(parent).is_dir() else None
    return chain


def inherited(chain: list[dict[str, Any]], *keys: str) -> Any:
    """The first value at config.<keys...> along a lineage chain, or None."""
    for lineage in chain:
        value: Any = lineage.get("config", {})
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            return value
    return None


def split_old_corpus(files: list[Path], chain: list[dict[str, Any]]) -> tuple[list[Record], list[Record]]:
    """The old corpus as (replayable, held out), held out exactly as the parent's pretraining held it out:
    its documents are neither replayed nor trained on, so their loss measures forgetting."""
    if not files:
        return [], []
    fraction = inherited(chain, "pretrain", "heldout_fraction")
    seed = inherited(chain, "pretrain", "seed") or 0
    old, _ = dedup(read_records(files), near_threshold=1.0)
    train, held = split_heldout(old, 0.02 if fraction is None else fraction, seed)
    logger.info("old corpus: %d records for replay, %d held out (the parent's split)", len(train), len(held))
    return train, held


def _load_or_make_paraphrases(
    cfg: CPTConfig, originals: list[Record], out: Path
) -> tuple[list[Record], dict[str, Any]]:
    """The run's paraphrases: re-read on --resume (a model-based rephraser need not repeat itself)."""
    path = out / PARAPHRASES_FILE
    if cfg.paraphrases == 0:
        return [], {"k": 0, "produced": 0}
    if cfg.resume and path.exists():
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        logger.info("paraphrases: %d texts re-read from %s", len(rows), path)
    else:
        result = paraphrase_documents(
            [(r.id, r.text) for r in originals], cfg.paraphrases, cfg.paraphraser,  # type: ignore[arg-type]
            seed=cfg.seed, url=cfg.paraphrase_url, model=cfg.paraphrase_model,
        )  # fmt: skip
        rows = [{"source": doc_id, "text": text} for doc_id, text in result.texts]
        tmp = path.with_name(f".{PARAPHRASES_FILE}.tmp")
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        os.replace(tmp, path)
    records = [Record(f"{r['source']}~p{i}", r["text"], "doc") for i, r in enumerate(rows)]
    info = {"k": cfg.paraphrases, "how": cfg.paraphraser, "documents": len(originals), "produced": len(rows)}
    return records, info


def questioned(doc_id: str, share: float, seed: int) -> bool:
    """Whether a document is in the `--questions-share` part: by its file name (and fragment), so the same
    documents are chosen wherever the folder lives."""
    digest = hashlib.sha256(f"{seed}:{doc_id.rsplit('/', 1)[-1]}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def _make_questions(
    cfg: CPTConfig, originals: list[Record], out: Path, tokenizer: Any
) -> tuple[list[Record], dict[str, Any]]:
    """The run's question/answer rows (rule-based, so the same on --resume), written to questions.jsonl."""
    if cfg.questions == 0:
        return [], {"per_document": 0, "rows": 0}
    chosen = [r for r in originals if questioned(r.id, cfg.questions_share, cfg.seed)]
    rows = question_rows([(r.id, r.text) for r in chosen], cfg.questions, seed=cfg.seed)
    tmp = out / f".{QUESTIONS_FILE}.tmp"
    tmp.write_text(
        "".join(json.dumps({"source": doc, "messages": m}, ensure_ascii=False) + "\n" for doc, m in rows),
        encoding="utf-8",
    )
    os.replace(tmp, out / QUESTIONS_FILE)
    records = [
        Record(f"{doc}~q{i}", tokenizer.apply_chat_template(m, tokenize=False), "chat")
        for i, (doc, m) in enumerate(rows)
    ]
    info = {"per_document": cfg.questions, "share": cfg.questions_share, "documents": len(chosen),
            "of_documents": len(originals), "rows": len(rows)}  # fmt: skip
    logger.info("questions: %d rows from %d of %d documents", len(rows), len(chosen), len(originals))
    return records, info


# -- the run -----------------------------------------------------------------------------------------


def run_cpt(cfg: CPTConfig, loop_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Continue pretraining `cfg.from_` on the new documents; returns a summary (out, tag, step, mixture)."""
    parent = resolve_checkpoint(cfg.from_)
    chain = lineage_chain(parent)
    parent_tag = (chain[0].get("tag") if chain else None) or parent.name
    originals, doc_files, skipped = read_documents(cfg.docs)
    replay_files = expand_paths(cfg.replay_from) if cfg.replay_from else []
    data_sha256 = hash_files(doc_files + replay_files)
    run_hash = hashlib.sha256((data_sha256 + cfg.knobs_hash()).encode()).hexdigest()
    tag = cfg.tag or f"{parent_tag}-cpt-{run_hash[:8]}"
    out = (cfg.out or default_out("cpt", tag)).expanduser()
    if (out / STATE_FILE).exists() and not cfg.resume:
        raise ValueError(
            f"{out} already holds a run: pass --resume to continue it, or --tag/--out for a new one"
        )

    import torch
    from transformers import AutoModelForCausalLM

    from trainer.tokenizer import load_tokenizer

    threads = cfg.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    dist = dist_from_env()
    tokenizer = load_tokenizer(parent)  # the parent's: CPT never retrains the tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    model: Any = AutoModelForCausalLM.from_pretrained(str(parent), dtype=torch.float32)
    max_pos = int(getattr(model.config, "max_position_embeddings", DEFAULT_SEQ_LEN))
    seq_len = cfg.seq_len or inherited(chain, "resolved", "seq_len") or min(DEFAULT_SEQ_LEN, max_pos)
    batch_size = cfg.batch_size or inherited(chain, "resolved", "batch_size") or DEFAULT_BATCH
    if seq_len > max_pos:
        raise ValueError(f"--seq-len {seq_len} exceeds the parent's {max_pos} positions")

    kept, dedup_report = dedup(originals, near_threshold=cfg.near_dup_threshold)
    logger.info("new documents: %d from %d files (%d skipped); %s", len(originals), len(doc_files),
                len(skipped), dedup_report.summary())  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    para_records, para_info = _load_or_make_paraphrases(cfg, kept, out)
    question_records, question_info = _make_questions(cfg, kept, out, tokenizer)
    # Exact duplicates only: paraphrases are near duplicates on purpose.
    new_records, _ = dedup(kept + para_records + question_records, near_threshold=1.0)
    replay_train, replay_held = split_old_corpus(replay_files, chain)

    given = {
        k: v
        for k, v in (loop_overrides or {}).items()
        if v is not None and k in LoopConfig.__dataclass_fields__
    }
    windows_per_step = batch_size * given.get("grad_accum", 1) * dist.world
    held_docs = [r for r in replay_held if r.kind == "doc"]  # the pre-cutoff loss is on documents
    replay_seqs = tokenize_records(tokenizer, replay_train) if cfg.replay > 0 else []
    # Chat rows are replayed with the loss the parent was pretrained with (answers only, or every token).
    assistant_only = inherited(chain, "pretrain", "chat_loss") == "assistant"
    replay_labels = (
        assistant_labels(tokenizer, replay_train, replay_seqs) if replay_seqs and assistant_only else None
    )
    mix = build_mixture(
        tokenize_records(tokenizer, new_records), replay_seqs, tokenize_records(tokenizer, held_docs),
        seq_len=seq_len, pad_id=pad_id, replay=cfg.replay, epochs=cfg.epochs,
        windows_per_step=windows_per_step, max_steps=given.get("max_steps"), seed=cfg.seed,
        replay_labels=replay_labels,
    )  # fmt: skip
    m = mix.report
    logger.info(
        "mixture: %d steps x %d windows of %d tokens; new documents %.2f epochs (%d windows); "
        "replay %.1f%% of windows (%d of %d), %.1f%% of tokens (asked %.1f%%)",
        m["steps"], windows_per_step, seq_len, m["new_epochs"], m["new_windows"],
        100 * m["replay_fraction_windows"], m["replay_windows"], m["total_windows"],
        100 * m["replay_fraction_tokens"], 100 * cfg.replay,
    )  # fmt: skip

    parent_lr = inherited(chain, "loop", "lr") or inherited(chain, "lr")
    rewarm = cfg.rewarm_steps if cfg.rewarm_steps is not None else max(1, round(0.05 * mix.max_steps))
    loop_cfg = replace(
        LoopConfig(max_steps=mix.max_steps, lr=float(parent_lr or FALLBACK_LR), warmup_steps=rewarm),
        **{k: v for k, v in given.items() if k != "max_steps"},
    )

    if cfg.lora_r:
        from peft import get_peft_model

        model = get_peft_model(model, peft_lora(cfg.lora_r, cfg.lora_alpha))

    resolved = {
        "cpt": cfg,
        "loop": loop_cfg,
        "resolved": {"seq_len": seq_len, "batch_size": batch_size, "threads": threads,
                     "world_size": dist.world, "rewarm_steps": rewarm, "lr": loop_cfg.lr},
    }  # fmt: skip
    data_report = {
        "docs": {"files": len(doc_files), "skipped": len(skipped), "documents": len(originals),
                 "dedup": to_jsonable(dedup_report), "paraphrases": para_info, "questions": question_info,
                 "trained_texts": len(new_records)},
        "replay": {"files": len(replay_files), "records": len(replay_train),
                   "heldout_records": len(replay_held)},
        "mixture": mix.report,
    }  # fmt: skip

    def save(trained: Any, step: int, metrics: dict[str, Any]) -> None:
        final = trained
        if cfg.lora_r:
            trained.save_pretrained(str(out / "adapter"))
            final = copy.deepcopy(trained).merge_and_unload()  # the run goes on training the adapter
        save_checkpoint(
            final, tokenizer, out, phase="cpt", tag=tag, parent=parent, data_sha256=data_sha256,
            config=resolved, metrics={**metrics, "max_steps": loop_cfg.max_steps},
            extra={"data": data_report, "parent_tag": parent_tag},
        )  # fmt: skip

    # packed documents attend as the parent was pretrained to: each to itself, or the whole window
    by_document = inherited(chain, "pretrain", "attention") == "document"
    loop = TrainLoop(
        model, [Pool("cpt", mix.windows, batch_size)], mix.heldout, loop_cfg, out, save,
        seq_len=seq_len, dtype=inherited(chain, "preset", "train", "dtype") or "auto", threads=threads,
        dist=dist, document_eos=tokenizer.eos_token_id if by_document else None,
    )  # fmt: skip
    if mix.heldout:
        # The parent's held-out loss, for the before/after comparison in the log and lineage.
        data_report["heldout_before"] = loop.evaluate()
        logger.info(
            "before cpt | %s", " | ".join(f"{k} {v:.4f}" for k, v in data_report["heldout_before"].items())
        )
    result = loop.run(resume=cfg.resume)
    return {
        "out": str(out),
        "tag": tag,
        "parent": str(parent),
        "step": result.step,
        "max_steps": loop_cfg.max_steps,
        "stopped_early": result.stopped_early,
        "resumed_from": result.resumed_from,
        "metrics": result.metrics,
        "data": data_report,
    }
