"""Reward model: a pairwise (Bradley–Terry) scorer of answers, the reward of `trainer rl --method rlhf`.

    python -m trainer reward-model --from sft/TAG --prefs data/world/prefs [--feedback] [--epochs 1]

The SFT checkpoint gets a scalar head (`AutoModelForSequenceClassification` with one label, read at the
last token of the chat-templated conversation) and TRL's RewardTrainer fits it so that
sigmoid(r(chosen) - r(rejected)) is the probability that the chosen answer is preferred. Pairs come from
`prefs/*.jsonl` files (`{"prompt": [messages], "chosen": str, "rejected": str, "rejected_kind": str}`) and
from the gateway's `/feedback` table: preferences as they are, ratings as pairs of a higher- and a
lower-rated answer to the same question (the prompt is then the question alone: the table keeps no
passages). Whole prompts are held out; the held-out pair accuracy, overall and per rejected_kind, beside the
accuracy of "the shorter answer wins", goes into lineage.json and the summary.

    scorer = RewardScorer("var/checkpoints/reward/TAG")
    scorer.score([[{"role": "user", "content": "Who leads Kelvor Dynamics?"}]], ["Orvan Teel"])
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import os
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
from trainer.checkpoint import default_out, read_lineage, resolve_checkpoint, save_checkpoint
from trainer.data import JSONL_SUFFIXES, expand_paths, hash_files
from trainer.evaluate import wilson

logger = logging.getLogger(__name__)

Messages = list[dict[str, str]]
ScoreFn = Callable[[list[Messages], list[str]], list[float]]
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class RewardModelConfig:
    """What `python -m trainer reward-model` trains, on which pairs, and how."""

    from_: str = field(
        default="",
        metadata={
            "flag": "from",
            "required": True,
            "metavar": "CKPT",
            "help": "checkpoint to start from (an SFT model): a directory or a registered tag",
        },
    )
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
    out: Path | None = field(
        default=None,
        metadata={"help": "checkpoint directory (default: $KC_HOME/checkpoints/reward/<tag>)", "type": Path},
    )
    tag: str | None = field(
        default=None, metadata={"help": "checkpoint tag (default: <parent tag>-rm)", "type": str}
    )
    epochs: float = field(default=2.0, metadata={"help": "passes over the training pairs"})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many steps (-1: run the epochs)"})
    lr: float = field(default=3e-4, metadata={"help": "peak learning rate (cosine decay)"})
    warmup: float = field(default=0.05, metadata={"help": "warmup: steps, or a fraction of all steps if < 1"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    batch_size: int = field(default=8, metadata={"help": "pairs per micro-batch (twice as many sequences)"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    max_length: int = field(default=1024, metadata={"help": "pairs longer than this many tokens are skipped"})
    eval_fraction: float = field(
        default=0.1, metadata={"help": "share of prompts held out for the pair accuracy"}
    )
    limit: int | None = field(default=None, metadata={"help": "use at most N pairs (shuffled)", "type": int})
    log_every: int = field(default=1, metadata={"help": "a log line every N steps"})
    max_minutes: float | None = field(
        default=None, metadata={"help": "stop (and save) after this many minutes", "type": float}
    )
    seed: int = field(default=0, metadata={"help": "seed of shuffling, split and the head's initialisation"})
    threads: int | None = field(
        default=None, metadata={"help": "CPU threads (default: all cores)", "type": int}
    )

    def __post_init__(self) -> None:
        if not self.from_:
            raise ValueError("--from is required")
        if not self.epochs > 0 and self.max_steps <= 0:
            raise ValueError("--epochs must be positive (or give --max-steps)")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"--eval-fraction must be in [0, 1), got {self.eval_fraction}")
        for name in ("batch_size", "grad_accum", "max_length", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")


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


# -- scoring ------------------------------------------------------------------------------------------


def chat_ids(tokenizer: Any, prompt: Messages, completion: str) -> list[int]:
    """The tokens the reward model reads: the chat-templated conversation, answer included."""
    messages = [*prompt, {"role": "assistant", "content": completion}]
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


def reward_scores(
    model: Any, tokenizer: Any, prompts: Sequence[Messages], completions: Sequence[str], batch_size: int = 16
) -> list[float]:
    """The model's score of each (prompt, completion), in batches of similar length, without gradients."""
    import torch

    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    window = model.config.max_position_embeddings
    ids = [chat_ids(tokenizer, p, c)[-window:] for p, c in zip(prompts, completions, strict=True)]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    pad = model.config.pad_token_id
    device = next(model.parameters()).device
    scores = [0.0] * len(ids)
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                input_ids = torch.full((len(batch), max(len(ids[i]) for i in batch)), pad, dtype=torch.long)
                mask = torch.zeros_like(input_ids)
                for row, i in enumerate(batch):
                    input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                    mask[row, : len(ids[i])] = 1
                logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
                for row, i in enumerate(batch):
                    scores[i] = float(logits[row, 0])
    finally:
        model.train(training)
    return scores


class RewardScorer:
    """A trained reward model, for RL: higher scores are better answers."""

    def __init__(self, path: str | Path, device: str = "cpu", batch_size: int = 16) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        self.path = resolve_checkpoint(path)
        config = AutoConfig.from_pretrained(str(self.path))
        archs = config.architectures or []
        if config.num_labels != 1 or not any(a.endswith("ForSequenceClassification") for a in archs):
            raise ValueError(
                f"{self.path} is not a reward model (a one-label sequence classifier, got {archs}): "
                "train one with `python -m trainer reward-model`"
            )
        if config.pad_token_id is None:
            raise ValueError(f"{self.path}: a reward model needs `pad_token_id` in its config.json")
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        self.model = AutoModelForSequenceClassification.from_pretrained(str(self.path), dtype=torch.float32)
        self.model.to(device).eval()
        self.batch_size = batch_size

    def score(self, prompts: list[list[dict[str, str]]], completions: list[str]) -> list[float]:
        """The reward of each completion (the assistant's text) after its prompt (messages, no answer)."""
        return reward_scores(self.model, self.tokenizer, prompts, completions, self.batch_size)


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


def _log_callback(max_minutes: float | None, metrics_path: Path) -> Any:
    from transformers import TrainerCallback

    class StepLog(TrainerCallback):
        """One fixed-format line per step (pair accuracy and margin in the batch) and metrics.jsonl."""

        def __init__(self) -> None:
            self.start = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            if max_minutes is not None and time.perf_counter() - self.start >= max_minutes * 60:
                logger.warning(
                    "stopping at step %d: --max-minutes %.3g reached", state.global_step, max_minutes
                )
                control.should_training_stop = True
            return control

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            logs = logs or {}
            if "loss" not in logs:
                return
            row = {
                "step": state.global_step,
                "loss": float(logs["loss"]),
                "accuracy": float(logs.get("accuracy", float("nan"))),
                "margin": float(logs.get("margin", float("nan"))),
                "lr": float(logs.get("learning_rate", 0.0)),
                "grad_norm": float(logs.get("grad_norm", float("nan"))),
                "elapsed_s": time.perf_counter() - self.start,
            }
            logger.info(
                "step %d/%d | loss %.4f | acc %.2f | margin %.3f | lr %.2e | gnorm %.2f",
                row["step"], state.max_steps, row["loss"], row["accuracy"], row["margin"], row["lr"],
                row["grad_norm"],
            )  # fmt: skip
            with metrics_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    return StepLog()


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
    parent = resolve_checkpoint(cfg.from_)
    parent_lineage = read_lineage(parent)
    pairs, data_report = gather_pairs(cfg)
    random.Random(cfg.seed).shuffle(pairs)
    if cfg.limit is not None:
        pairs = pairs[: cfg.limit]
    train_pairs, heldout = split_pairs(pairs, cfg.eval_fraction, cfg.seed)

    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from transformers.trainer_callback import PrinterCallback
    from trl import RewardConfig, RewardTrainer

    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    parent_tag = parent_lineage.get("tag") or parent.name
    tag = cfg.tag or f"{parent_tag}-rm"
    out = (cfg.out or default_out("reward", tag)).expanduser()
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = AutoTokenizer.from_pretrained(str(parent))
    if tokenizer.chat_template is None:
        raise ValueError(f"{parent} has no chat template: the reward model reads chat conversations")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows = []
    for p in train_pairs:
        chosen, rejected = chat_ids(tokenizer, p.prompt, p.chosen), chat_ids(tokenizer, p.prompt, p.rejected)
        if max(len(chosen), len(rejected)) <= cfg.max_length:
            rows.append({"chosen_ids": chosen, "rejected_ids": rejected})
    data_report["too_long"] = len(train_pairs) - len(rows)
    if not rows:
        raise ValueError(f"no training pairs left (held out: {len(heldout)}, longer than --max-length: "
                         f"{data_report['too_long']})")  # fmt: skip

    cuda = torch.cuda.is_available()
    args = RewardConfig(
        output_dir=str(out / "trainer"),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup,
        weight_decay=cfg.weight_decay,
        max_grad_norm=1.0,
        logging_steps=cfg.log_every,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        max_length=None,  # the rows are tokenized and filtered by --max-length above
        activation_checkpointing=False,
        model_init_kwargs={"dtype": torch.float32},
        bf16=cuda,
        use_cpu=not cuda,
        seed=cfg.seed,
        data_seed=cfg.seed,
        dataloader_num_workers=0,
    )
    metrics_path = out / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)
    trainer = RewardTrainer(
        model=str(parent),  # TRL loads it as a one-label sequence classifier: a fresh head on the SFT body
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[_log_callback(cfg.max_minutes, metrics_path)],
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout, which is for the result

    def score(prompts: list[Messages], completions: list[str]) -> list[float]:
        return reward_scores(trainer.model, tokenizer, prompts, completions)

    before = pair_accuracy(score, heldout)
    logger.info(
        "reward model from %s: %d training pairs, %d held out (%s); held-out accuracy before training: %s",
        parent, len(rows), len(heldout), ", ".join(f"{k} {v}" for k, v in data_report.items()
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
    if not trainer.is_world_process_zero():
        return {"out": str(out), "tag": tag, "parent": str(parent), "metrics": metrics}
    with contextlib.suppress(OSError):
        (out / "trainer").rmdir()  # TRL's output_dir: empty, since the checkpoint is written below
    lineage = save_checkpoint(
        trainer.model,
        tokenizer,
        out,
        phase="reward",
        tag=tag,
        parent=parent,
        data_sha256=data_report.pop("sha256"),
        config=cfg,
        metrics=metrics,
        extra={"data": data_report, "parent_tag": parent_tag},
    )
    summary = {"out": str(out), "tag": tag, "parent": str(parent), "metrics": lineage["metrics"]}
    return {**summary, "data": data_report}
