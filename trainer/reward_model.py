"""Reward model: a pairwise (Bradley–Terry) scorer of answers, the reward of `trainer rl --method rlhf`.

    python -m trainer reward-model --from sft/TAG --prefs data/world/prefs [--feedback] [--epochs 1]

The SFT checkpoint gets a scalar head (`AutoModelForSequenceClassification` with one label, read at the
last token of the chat-templated conversation) and TRL's RewardTrainer fits it so that
sigmoid(r(chosen) - r(rejected)) is the probability that the chosen answer is preferred. Pairs come from
`prefs/*.jsonl` files (`{"prompt": [messages], "chosen": str, "rejected": str, "rejected_kind": str}`) and
from the gateway's `/feedback` table: preferences as they are, ratings as pairs of a higher- and a
lower-rated answer to the same question (the prompt is then the question alone: the table keeps no
passages). Whole prompts are held out; the held-out pair accuracy, overall and per rejected_kind, beside the
accuracy of "the shorter answer wins", goes into lineage.json and the summary. Scoring with the trained
model (what RL calls) is `trainer.scorer.RewardScorer`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.feedback import FeedbackRow, read_feedback
from core.jsonl import iter_jsonl
from core.settings import Settings
from trainer.data import JSONL_SUFFIXES, expand_paths, hash_files
from trainer.evaluate import wilson
from trainer.hf import (
    HFRunConfig,
    hf_args,
    open_run,
    out_field,
    parent_field,
    quiet,
    resolve_parent,
    tag_field,
    writes_checkpoint,
)
from trainer.scorer import Messages, chat_ids, reward_scores

logger = logging.getLogger(__name__)

ScoreFn = Callable[[list[Messages], list[str]], list[float]]
ROLES = ("system", "user", "assistant")
RM_COLUMNS = (("acc", "accuracy", ".2f"), ("margin", "margin", ".3f"), ("lr", "lr", ".2e"),
              ("gnorm", "grad_norm", ".2f"))  # fmt: skip


@dataclass(frozen=True)
class RewardModelConfig(HFRunConfig):
    """What `python -m trainer reward-model` trains, on which pairs, and how (the shared flags and their
    checks: `HFRunConfig`; those redeclared here differ in default or meaning)."""

    from_: str = parent_field("checkpoint to start from (an SFT model): a directory or a registered tag")
    out: Path | None = out_field("reward")  # noqa: RUF009 (a field(), not a shared default)
    tag: str | None = tag_field("<parent tag>-rm")
    epochs: float = field(default=2.0, metadata={"help": "passes over the training pairs"})
    lr: float = field(default=3e-4, metadata={"help": "peak learning rate (cosine decay)"})
    batch_size: int = field(default=8, metadata={"help": "pairs per micro-batch (twice as many sequences)"})
    max_length: int = field(default=1024, metadata={"help": "pairs longer than this many tokens are skipped"})
    eval_fraction: float = field(
        default=0.1, metadata={"help": "share of prompts held out for the pair accuracy"}
    )
    limit: int | None = field(default=None, metadata={"help": "use at most N pairs (shuffled)", "type": int})
    seed: int = field(default=0, metadata={"help": "seed of shuffling, split and the head's initialisation"})
    prefs: list[Path] = field(
        default_factory=list,
        metadata={
            "help": "preference .jsonl files or folders of them (the world's prefs/)",
            "nargs": "*",
            "type": Path,
        },
    )
    feedback: bool | None = field(
        default=None,
        metadata={
            "help": "also train on the ratings and preferences left through the gateway's /feedback "
            "(default: when the database holds any)",
            "type": bool,
        },
    )


@dataclass(frozen=True)
class PrefPair:
    """For `prompt` (chat messages without the answer), `chosen` is the better answer than `rejected`."""

    prompt: Messages
    chosen: str
    rejected: str
    kind: str  # the world's rejected_kind (hallucinated, stale, padded), or feedback-preference/-rating


# -- reading pairs -----------------------------------------------------------------------------------


def as_pair(row: Any) -> PrefPair | str:
    """The pair of a prefs row, or the reason it is not one."""
    if not isinstance(row, dict):
        return "not a JSON object"
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    if not (
        isinstance(prompt, list)
        and prompt
        and all(
            isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
            for m in prompt
        )
    ):
        return "`prompt` must be a non-empty list of {role, content} messages"
    if prompt[-1]["role"] == "assistant":
        return "`prompt` ends with an assistant turn: the answers belong in `chosen` and `rejected`"
    chosen, rejected = row.get("chosen"), row.get("rejected")
    if not (isinstance(chosen, str) and isinstance(rejected, str) and chosen.strip() and rejected.strip()):
        return "`chosen` and `rejected` must be non-empty strings"
    if chosen == rejected:
        return "`chosen` and `rejected` are the same answer"
    messages = [{"role": m["role"], "content": m["content"]} for m in prompt]
    return PrefPair(messages, chosen, rejected, str(row.get("rejected_kind") or "unknown"))


def read_prefs(files: Sequence[Path]) -> tuple[list[PrefPair], list[str]]:
    """The pairs of prefs files, and `file:line: reason` for each row skipped. A line that is not JSON at
    all is an error (the file is broken, not the row)."""
    pairs: list[PrefPair] = []
    skipped: list[str] = []
    for f in files:
        for n, row in iter_jsonl(f):
            got = as_pair(row)
            if isinstance(got, str):
                skipped.append(f"{f}:{n}: {got}")
            else:
                pairs.append(got)
    for reason in skipped[:10]:
        logger.warning("skipped %s", reason)
    if len(skipped) > 10:
        logger.warning("skipped %d more rows", len(skipped) - 10)
    return pairs, skipped


def feedback_pairs(rows: Sequence[FeedbackRow]) -> list[PrefPair]:
    """Pairs from the gateway's feedback: each preference, and for each question every two answers rated
    differently (an answer rated twice counts with its latest rating)."""
    pairs: list[PrefPair] = []
    ratings: dict[str, dict[str, int]] = defaultdict(dict)  # question -> answer -> rating
    for r in rows:
        if r.kind == "preference" and r.chosen and r.rejected and r.chosen != r.rejected:
            pairs.append(PrefPair(_question(r.question), r.chosen, r.rejected, "feedback-preference"))
        elif r.kind == "rating" and r.answer and r.rating is not None:
            ratings[r.question][r.answer] = r.rating
    for question, answers in ratings.items():
        for (a, ra), (b, rb) in itertools.combinations(answers.items(), 2):
            if ra != rb:
                better, worse = (a, b) if ra > rb else (b, a)
                pairs.append(PrefPair(_question(question), better, worse, "feedback-rating"))
    return pairs


def _question(text: str) -> Messages:
    return [{"role": "user", "content": text}]


def split_pairs(
    pairs: Sequence[PrefPair], fraction: float, seed: int
) -> tuple[list[PrefPair], list[PrefPair]]:
    """(train, held out), by a hash of the prompt: all pairs of one prompt fall on the same side."""

    def bucket(p: PrefPair) -> float:
        key = f"{seed}\n{json.dumps(p.prompt, sort_keys=True)}".encode()
        return int(hashlib.sha256(key).hexdigest()[:12], 16) / 16**12

    train: list[PrefPair] = []
    held: list[PrefPair] = []
    for p in pairs:
        (held if bucket(p) < fraction else train).append(p)
    return train, held


# -- held-out pair accuracy ----------------------------------------------------------------------------


def pair_accuracy(score: ScoreFn, pairs: Sequence[PrefPair]) -> dict[str, Any]:
    """How often the chosen answer scores above the rejected one, overall and per kind, with a 95% Wilson
    interval, beside how often the chosen answer is simply the shorter one. Ties count as misses."""
    if not pairs:
        return {"pairs": 0}
    n = len(pairs)
    prompts = [p.prompt for p in pairs]
    scores = score(prompts + prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs])
    margins = [scores[i] - scores[n + i] for i in range(n)]

    def summary(idx: list[int]) -> dict[str, Any]:
        wins = sum(margins[i] > 0 for i in idx)
        return {
            "pairs": len(idx),
            "accuracy": wins / len(idx),
            "ci95": wilson(wins, len(idx)),
            "mean_margin": sum(margins[i] for i in idx) / len(idx),
            "shorter_wins": sum(len(pairs[i].chosen) < len(pairs[i].rejected) for i in idx) / len(idx),
        }

    kinds = sorted({p.kind for p in pairs})
    return {
        **summary(list(range(n))),
        "by_kind": {k: summary([i for i, p in enumerate(pairs) if p.kind == k]) for k in kinds},
    }


def format_accuracy(report: dict[str, Any]) -> str:
    """`0.93 [0.84, 0.97] on 60 pairs (hallucinated 0.85/20, ...; shorter answer: 0.35)`."""
    if not report.get("pairs"):
        return "no held-out pairs"
    lo, hi = report["ci95"]
    kinds = ", ".join(f"{k} {r['accuracy']:.2f}/{r['pairs']}" for k, r in report["by_kind"].items())
    return (
        f"{report['accuracy']:.2f} [{lo:.2f}, {hi:.2f}] on {report['pairs']} pairs ({kinds}; "
        f"the shorter answer: {report['shorter_wins']:.2f})"
    )


# -- training -----------------------------------------------------------------------------------------


def gather_pairs(cfg: RewardModelConfig) -> tuple[list[PrefPair], dict[str, Any]]:
    """The pairs of --prefs and of the feedback table, and a report of where they came from."""
    files = expand_paths(cfg.prefs, JSONL_SUFFIXES) if cfg.prefs else []
    pairs, skipped = read_prefs(files)
    from_feedback: list[PrefPair] = []
    url = Settings().resolved_database_url
    if cfg.feedback is not False:
        from_feedback = feedback_pairs(read_feedback(url))
        if cfg.feedback and not from_feedback:
            raise ValueError("--feedback: the database holds no usable ratings or preferences")
    if not pairs and not from_feedback:
        raise ValueError(
            "no preference pairs: give --prefs (e.g. the world's prefs/) or leave feedback through the "
            "gateway's /feedback"
        )
    digest = hashlib.sha256(hash_files(files).encode())
    for p in from_feedback:
        digest.update(json.dumps([p.prompt, p.chosen, p.rejected]).encode())
    report = {
        "files": [str(f) for f in files],
        "pairs_from_files": len(pairs),
        "pairs_from_feedback": len(from_feedback),
        "skipped_rows": len(skipped),
        "skipped_examples": skipped[:10],
        "sha256": digest.hexdigest(),
    }
    return pairs + from_feedback, report


def run_reward_model(cfg: RewardModelConfig) -> dict[str, Any]:
    """Train a reward model from `cfg.from_` on preference pairs; returns a summary (out, tag, metrics)."""
    parent = resolve_parent(cfg.from_)
    pairs, data_report = gather_pairs(cfg)
    random.Random(cfg.seed).shuffle(pairs)
    if cfg.limit is not None:
        pairs = pairs[: cfg.limit]
    train_pairs, heldout = split_pairs(pairs, cfg.eval_fraction, cfg.seed)

    import torch
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from trainer.step_log import StepLog

    run = open_run(parent, cfg, "reward", "rm", chat="the reward model reads chat conversations")
    tokenizer = run.tokenizer
    rows = []
    for p in train_pairs:
        chosen, rejected = chat_ids(tokenizer, p.prompt, p.chosen), chat_ids(tokenizer, p.prompt, p.rejected)
        if max(len(chosen), len(rejected)) <= cfg.max_length:
            rows.append({"chosen_ids": chosen, "rejected_ids": rejected})
    data_report["too_long"] = len(train_pairs) - len(rows)
    if not rows:
        raise ValueError(f"no training pairs left (held out: {len(heldout)}, longer than --max-length: "
                         f"{data_report['too_long']})")  # fmt: skip

    args = hf_args(
        RewardConfig,
        run.out / "trainer",
        run.cuda,
        cfg.seed,
        **cfg.schedule(),
        max_length=None,  # the rows are tokenized and filtered by --max-length above
        model_init_kwargs={"dtype": torch.float32},
    )
    step_log = StepLog(
        run.out / "metrics.jsonl", cfg.max_minutes, logger, RM_COLUMNS, logged=("accuracy", "margin")
    )
    # TRL loads the parent as a one-label sequence classifier: a fresh head on the SFT body
    trainer = quiet(
        RewardTrainer(
            model=str(run.parent),
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            callbacks=[step_log],
        )
    )

    def score(prompts: list[Messages], completions: list[str]) -> list[float]:
        return reward_scores(trainer.model, tokenizer, prompts, completions)

    before = pair_accuracy(score, heldout)
    logger.info(
        "reward model from %s: %d training pairs, %d held out (%s); held-out accuracy before training: %s",
        run.parent, len(rows), len(heldout), ", ".join(f"{k} {v}" for k, v in data_report.items()
                                                       if k.startswith(("pairs", "skipped_rows"))),
        format_accuracy(before),
    )  # fmt: skip
    started = time.perf_counter()
    train_out = trainer.train()
    train_seconds = time.perf_counter() - started
    heldout_report = pair_accuracy(score, heldout)
    train_report = pair_accuracy(score, train_pairs[:256])
    logger.info("held-out pair accuracy: %s", format_accuracy(heldout_report))
    metrics: dict[str, Any] = {
        "train_loss": float(train_out.training_loss),
        "steps": int(trainer.state.global_step),
        "train_seconds": train_seconds,
        "pairs_train": len(rows),
        "pairs_heldout": len(heldout),
        "heldout_accuracy": heldout_report.get("accuracy"),
        "heldout_accuracy_before": before.get("accuracy"),
        "train_accuracy": train_report.get("accuracy"),
        "heldout": heldout_report,
    }
    if not writes_checkpoint(trainer, run.out):
        return run.summary(metrics)
    lineage = run.save(trainer.model, data_report.pop("sha256"), cfg, metrics, data=data_report)
    return {**run.summary(lineage["metrics"]), "data": data_report}
