"""The forgetting report of a CPT run: what the new documents bought and what they cost.

    python -m trainer forgetting --base-chat sft/T-sft --cpt cpt/T-cpt-1a2b \
        [--merged merged/T-cpt-1a2b-chat1] --world data/world [--limit 100] [--out DIR]

For the chat model before CPT ("before"), the raw CPT checkpoint and the chat-vector merge, closed book:

- exact match on the world's `retained` questions (pre-cutoff facts: forgetting shows as a drop) and `new`
  questions (post-cutoff facts: learning shows as a gain), and the share of `new` questions the model
  before CPT missed that each model answers;
- held-out loss on pre-cutoff documents: the parent's own held-out split of `corpus_pre`, never trained on;
- whether the model still follows the chat template: `ends turn` is the share of answers closed with the
  end-of-turn token (a raw CPT model tends to run on or end a document instead), `format ok` the share that
  also are one non-empty line, as the chat model's answers are.

Writes `forgetting.json` and `forgetting.md` next to the CPT checkpoint (or into `--out`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.answers import exact_match
from core.prompts import Message
from trainer.checkpoint import resolve_checkpoint, write_json_atomic
from trainer.cpt import DEFAULT_SEQ_LEN, inherited, lineage_chain, split_old_corpus
from trainer.data import Windows, expand_paths, pack
from trainer.data import tokenize as tokenize_records
from trainer.evaluate import Item, generate_turns, question_items

logger = logging.getLogger(__name__)

REPORT_JSON, REPORT_MD = "forgetting.json", "forgetting.md"
QUESTION_SETS = ("retained", "new")


@dataclass(frozen=True)
class ForgettingConfig:
    """Which checkpoints `python -m trainer forgetting` compares, on which world."""

    base_chat: str = field(
        default="", metadata={"help": "the chat model before CPT (the 'before' row)", "required": True,
                              "metavar": "CKPT"},
    )  # fmt: skip
    cpt: str = field(
        default="", metadata={"help": "the raw CPT checkpoint", "required": True, "metavar": "CKPT"}
    )
    merged: str | None = field(
        default=None, metadata={"help": "the chat-vector merge of --cpt", "type": str, "metavar": "CKPT"}
    )
    world: Path | None = field(
        default=None,
        metadata={"help": "world folder: questions/{retained,new}.jsonl and corpus_pre/", "required": True,
                  "type": Path},
    )  # fmt: skip
    limit: int | None = field(default=None, metadata={"help": "at most N questions per set", "type": int})
    heldout_batches: int = field(default=50, metadata={"help": "held-out batches for the pre-cutoff loss"})
    batch_size: int = field(default=32, metadata={"help": "prompts per generation batch"})
    max_new_tokens: int = field(default=24, metadata={"help": "tokens generated per answer"})
    out: Path | None = field(
        default=None, metadata={"help": "report folder (default: the --cpt checkpoint)", "type": Path}
    )

    def __post_init__(self) -> None:
        if not self.base_chat or not self.cpt:
            raise ValueError("--base-chat and --cpt are required")
        if self.world is None:
            raise ValueError("--world is required")
        for name in QUESTION_SETS:
            if not (self.world / "questions" / f"{name}.jsonl").is_file():
                raise ValueError(
                    f"--world {self.world} has no questions/{name}.jsonl (`python -m eval world`)"
                )
        if not (self.world / "corpus_pre").is_dir():
            raise ValueError(f"--world {self.world} has no corpus_pre/ folder")


def heldout_pre_windows(cpt: Path, corpus: Path) -> Windows | None:
    """The pre-cutoff documents the CPT run's ancestor held out in pretraining, packed as it packed them."""
    from transformers import AutoTokenizer

    chain = lineage_chain(cpt)
    seq_len = inherited(chain, "resolved", "seq_len") or DEFAULT_SEQ_LEN
    _, held = split_old_corpus(expand_paths([corpus]), chain)
    held = [r for r in held if r.kind == "doc"]
    if not held:
        return None
    tokenizer = AutoTokenizer.from_pretrained(str(cpt))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids, labels = pack(tokenize_records(tokenizer, held), seq_len, pad)
    return Windows(ids, labels)


def format_ok(text: str, ended: int | None, end_of_turn: int | None) -> bool:
    return ended is not None and ended == end_of_turn and bool(text) and "\n" not in text


def measure(
    path: Path, items: dict[str, list[Item]], heldout: Windows | None, cfg: ForgettingConfig
) -> dict[str, Any]:
    """Exact match per question set, held-out loss and chat-format adherence of one checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.loop import mean_loss, plain_loss
    from trainer.tokenizer import stop_token_ids

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    end_of_turn = stop_token_ids(tokenizer)[0]  # the end of a chat turn comes first
    result: dict[str, Any] = {"path": str(path)}
    ends, formats, total = 0, 0, 0
    for name, set_items in items.items():
        prompts: list[list[Message]] = [it.messages for it in set_items]
        answers = generate_turns(model, tokenizer, prompts, cfg.batch_size, cfg.max_new_tokens)
        correct = [exact_match(text, it.answers) for it, (text, _) in zip(set_items, answers, strict=True)]
        result[name] = {
            "n": len(set_items),
            "exact_match": sum(correct) / len(set_items) if set_items else 0.0,
            "correct_ids": [it.id for it, ok in zip(set_items, correct, strict=True) if ok],
            "examples": [{"id": it.id, "expected": it.answers[0], "got": text}
                         for it, (text, _) in list(zip(set_items, answers, strict=True))[:3]],
        }  # fmt: skip
        ends += sum(ended == end_of_turn for _, ended in answers)
        formats += sum(format_ok(text, ended, end_of_turn) for text, ended in answers)
        total += len(answers)
    result["ends_turn"] = ends / total if total else 0.0
    result["format_ok"] = formats / total if total else 0.0
    if heldout is not None:
        model.eval()
        with torch.no_grad():
            result["heldout_pre_loss"] = mean_loss(
                plain_loss, model, heldout, 8, cfg.heldout_batches, model.device
            )
    return result


def run_forgetting(cfg: ForgettingConfig) -> dict[str, Any]:
    import random

    assert cfg.world is not None
    models = {"before": resolve_checkpoint(cfg.base_chat), "cpt": resolve_checkpoint(cfg.cpt)}
    if cfg.merged:
        models["merged"] = resolve_checkpoint(cfg.merged)
    items: dict[str, list[Item]] = {}
    for name in QUESTION_SETS:
        items[name], _ = question_items(
            cfg.world / "questions" / f"{name}.jsonl", None, 1, random.Random(0), cfg.limit
        )
    heldout = heldout_pre_windows(models["cpt"], cfg.world / "corpus_pre")
    rows = {}
    for role, path in models.items():
        logger.info("forgetting report: measuring %s (%s)", role, path)
        rows[role] = measure(path, items, heldout, cfg)
    missed_before = {it.id for it in items["new"]} - set(rows["before"]["new"]["correct_ids"])
    for row in rows.values():
        gained = missed_before & set(row["new"]["correct_ids"])
        row["new_gained"] = len(gained) / len(missed_before) if missed_before else 0.0
    report = {
        "world": str(cfg.world),
        "models": rows,
        "missed_before": len(missed_before),
        "heldout_windows": len(heldout) if heldout is not None else 0,
    }
    out = (cfg.out or models["cpt"]).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / REPORT_JSON, report)
    (out / REPORT_MD).write_text(format_report(report) + "\n", encoding="utf-8")
    report["files"] = [str(out / REPORT_JSON), str(out / REPORT_MD)]
    return report


def _delta(value: float | None, before: float | None, pct: bool) -> str:
    if value is None:
        return "-"
    text = f"{100 * value:.1f}%" if pct else f"{value:.4f}"
    if before is None or value == before:
        return text
    d = value - before
    return (
        f"{text} ({'+' if d > 0 else ''}{100 * d:.1f})" if pct else f"{text} ({'+' if d > 0 else ''}{d:.4f})"
    )


def format_report(report: dict[str, Any]) -> str:
    rows = report["models"]
    before = rows["before"]
    lines = [
        f"Forgetting report ({report['world']}): closed book, exact match; deltas against the chat model "
        "before CPT.",
        "",
        "| model | retained | new | new, missed before | held-out pre-cutoff loss | ends turn | format ok |",
        "|---|---|---|---|---|---|---|",
    ]
    for role, row in rows.items():
        ref = None if role == "before" else before
        lines.append(
            "| " + " | ".join([
                f"{role} (`{Path(row['path']).name}`)",
                _delta(row["retained"]["exact_match"], ref and ref["retained"]["exact_match"], True)
                + f" of {row['retained']['n']}",
                _delta(row["new"]["exact_match"], ref and ref["new"]["exact_match"], True)
                + f" of {row['new']['n']}",
                "-" if role == "before" else f"{100 * row['new_gained']:.1f}% of {report['missed_before']}",
                _delta(row.get("heldout_pre_loss"), ref and ref.get("heldout_pre_loss"), False),
                f"{100 * row['ends_turn']:.1f}%",
                f"{100 * row['format_ok']:.1f}%",
            ]) + " |"
        )  # fmt: skip
    return "\n".join(lines)
