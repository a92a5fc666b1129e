"""Post-training with RL: TRL's GRPOTrainer, a KL penalty to the SFT reference, a reward-hacking guard.

    python -m trainer rl --method rlvr --from sft/TAG [--data data/world/rl] [--max-steps 100]
    python -m trainer rl --method rlhf --from sft/TAG --reward-model CKPT
    python -m trainer rl --method rlaif --from sft/TAG --judge-url http://127.0.0.1:8000/v1 \
        --judge-model NAME --constitution FILE

Rewards: `rlvr` the verifiers of `trainer.rewards` (answer, citation, format); `rlhf` a pairwise reward
model's score (`trainer.scorer.RewardScorer`); `rlaif` an AI judge's score against a constitution
(`trainer.judge.Judge`, any OpenAI-compatible endpoint; prompts and raw judgments go to `judge.jsonl`).
For rlhf and rlaif the verifier's answer reward is computed too, with weight 0: it shows on every step
next to the proxy.

Each step samples `--num-generations` completions for each of `--prompts-per-step` prompts (transformers
`generate` on CPU; with `--vllm-url`, a `trl vllm-serve` server: TRL's server mode), scores them and
takes a GRPO step; `--beta` weighs the KL penalty to the frozen SFT model. Every `--eval-every` steps the
guard answers held-out questions greedily and scores exact match. When the reward has risen while that
accuracy fell more than `--guard-threshold` below its best, it logs a WARNING and records it. The output
checkpoint is the best step by held-out accuracy (ties: the later step), not necessarily the last. The
guard is `trainer.rl_guard.Guard`; the rows and held-out sets are read by `trainer.rl_data`.

Written into the checkpoint directory: the weights (phase `rl`, registered), `metrics.jsonl` (one row per
step), `guard.json`, `report.md`, `report.json` and `rl.png` (see `trainer.rl_report`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.checkpoint import read_lineage, set_generation_tokens
from trainer.data import JSONL_SUFFIXES, expand_paths, hash_files
from trainer.hf import (
    final_model,
    hf_args,
    lora_alpha_field,
    open_run,
    out_field,
    parent_field,
    peft_lora,
    quiet,
    resolve_parent,
    tag_field,
    threads_field,
)
from trainer.rewards import RLVR_FUNCS, RLVR_WEIGHTS, answer_rewards, completion_text
from trainer.rl_data import KINDS, heldout_split, read_rl_rows

logger = logging.getLogger(__name__)

METHODS = ("rlvr", "rlhf", "rlaif")


@dataclass(frozen=True)
class RLConfig:
    """What `python -m trainer rl` optimises, against which reward, and how it watches for reward hacking."""

    method: str = field(
        default="", metadata={"help": "where the reward comes from", "choices": METHODS, "required": True}
    )
    from_: str = parent_field(
        "the SFT checkpoint (directory or registered tag): the policy's start, the KL reference"
    )
    data: list[Path] = field(
        default_factory=lambda: [Path("data/world/rl")],
        metadata={
            "help": "RL rows (.jsonl files or folders): {prompt, answers, kind, passages, gold_passage} "
            "(default: data/world/rl)",
            "nargs": "+",
            "type": Path,
        },
    )
    kinds: list[str] = field(
        default_factory=lambda: list(KINDS),
        metadata={"help": "train on rows of these kinds", "nargs": "+", "choices": KINDS, "type": str},
    )
    reward_model: str | None = field(
        default=None, metadata={"help": "rlhf: the reward model checkpoint (directory or tag)", "type": str}
    )
    judge_url: str | None = field(
        default=None, metadata={"help": "rlaif: the judge's OpenAI-compatible base URL (…/v1)", "type": str}
    )
    judge_model: str | None = field(
        default=None, metadata={"help": "rlaif: the judge's model name", "type": str}
    )
    constitution: Path | None = field(
        default=None,
        metadata={
            "help": "rlaif: the file of written principles the judge applies (default: "
            "trainer/constitution.md)",
            "type": Path,
        },
    )
    vllm_url: str | None = field(
        default=None,
        metadata={
            "help": "roll out on a `trl vllm-serve` server at this URL (TRL's server mode; needs vllm "
            "and a CUDA GPU); default: transformers generate in-process",
            "type": str,
        },
    )
    beta: float = field(default=0.04, metadata={"help": "weight of the KL penalty to the SFT reference"})
    num_generations: int = field(
        default=8, metadata={"help": "completions sampled per prompt (GRPO's group)"}
    )
    prompts_per_step: int = field(default=4, metadata={"help": "prompts per optimizer step"})
    max_steps: int = field(default=100, metadata={"help": "optimizer steps"})
    lr: float = field(default=1e-5, metadata={"help": "learning rate (constant after a short warmup)"})
    warmup: float = field(default=0.0, metadata={"help": "warmup: steps, or a fraction of all steps if < 1"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the rollouts"})
    max_completion_length: int = field(default=32, metadata={"help": "tokens generated per completion"})
    lora_r: int = field(default=0, metadata={"help": "LoRA rank; 0 trains every weight"})
    lora_alpha: int | None = lora_alpha_field()
    eval_questions: list[Path] = field(
        default_factory=list,
        metadata={
            "help": "held-out set: RL-row files, or world question files (with --eval-docs); default: "
            "--eval-rows grounded rows (at most half) split off --data",
            "nargs": "+",
            "type": Path,
        },
    )
    eval_docs: list[Path] = field(
        default_factory=list,
        metadata={
            "help": "document folders to ask --eval-questions grounded from",
            "nargs": "+",
            "type": Path,
        },
    )
    eval_rows: int = field(
        default=64,
        metadata={
            "help": "grounded rows held out of --data to choose the kept step (when no --eval-questions)"
        },
    )
    test_rows: int = field(
        default=64,
        metadata={
            "help": "grounded rows held out of --data as a test set, answered only by the SFT model and the "
            "kept weights: the step is chosen on the validation rows, so its gain there is biased upward"
        },
    )
    eval_every: int = field(
        default=10, metadata={"help": "held-out evaluation (and resumable save) every N steps"}
    )
    guard_threshold: float = field(
        default=0.05,
        metadata={
            "help": "warn when held-out exact match falls this far below its best while the reward rises"
        },
    )
    eval_batch_size: int = field(default=32, metadata={"help": "prompts per held-out generation batch"})
    limit: int | None = field(
        default=None, metadata={"help": "train on at most N rows (shuffled)", "type": int}
    )
    out: Path | None = out_field("rl")  # noqa: RUF009 (a field(), not a shared default)
    tag: str | None = tag_field("<parent tag>-<method>")
    resume: bool = field(default=False, metadata={"help": "continue from the last resumable save in --out"})
    seed: int = field(default=0, metadata={"help": "seed of the split, shuffling and sampling"})
    threads: int | None = threads_field()

    def __post_init__(self) -> None:
        if not self.from_:
            raise ValueError("--from is required")
        if self.method not in METHODS:
            raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.method == "rlhf" and not self.reward_model:
            raise ValueError(
                "--method rlhf needs --reward-model CKPT (train one with `python -m trainer reward-model`)"
            )
        if self.method == "rlaif" and not (self.judge_url and self.judge_model):
            raise ValueError("--method rlaif needs --judge-url and --judge-model (and maybe --constitution)")
        if self.beta < 0:
            raise ValueError(f"--beta must be >= 0, got {self.beta}")
        if self.num_generations < 2:
            raise ValueError(
                "--num-generations must be at least 2 (GRPO compares completions within a group)"
            )
        for name in (
            "prompts_per_step",
            "max_steps",
            "max_completion_length",
            "eval_every",
            "eval_batch_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if self.eval_docs and not self.eval_questions:
            raise ValueError("--eval-docs needs --eval-questions")


# -- rewards -----------------------------------------------------------------------------------------


class ScoreReward:
    """A scorer's `.score(prompts, completions) -> floats` as a TRL reward function named `name`."""

    def __init__(self, name: str, scorer: Any) -> None:
        self.__name__ = name
        self.scorer = scorer

    def __call__(self, prompts: list[Any], completions: list[Any], **_: Any) -> list[float]:
        return [float(s) for s in self.scorer.score(prompts, [completion_text(c) for c in completions])]


def make_rewards(cfg: RLConfig, out: Path) -> tuple[list[Any], list[float]]:
    """The reward functions of `cfg.method` and their weights."""
    if cfg.method == "rlvr":
        return list(RLVR_FUNCS.values()), [RLVR_WEIGHTS[name] for name in RLVR_FUNCS]
    if cfg.method == "rlhf":
        from trainer.scorer import RewardScorer

        assert cfg.reward_model is not None
        scorer: Any = RewardScorer(cfg.reward_model)  # a directory or a registered tag
        return [ScoreReward("reward_model", scorer), answer_rewards], [1.0, 0.0]
    from trainer.judge import DEFAULT_CONSTITUTION, Judge

    assert cfg.judge_url and cfg.judge_model
    judge = Judge(
        cfg.judge_url,
        cfg.judge_model,
        cfg.constitution or DEFAULT_CONSTITUTION,
        api_key=os.environ.get("KC_JUDGE_API_KEY"),
        log_path=out / "judge.jsonl",
    )
    return [ScoreReward("judge", judge), answer_rewards], [1.0, 0.0]


def reward_name(name: str) -> str:
    """`answer_rewards` (TRL names a reward by its function) -> `answer`."""
    return name.removesuffix("_rewards")


# -- the run -----------------------------------------------------------------------------------------


def grpo_args(cfg: RLConfig, out: Path, cuda: bool) -> Any:
    """TRL's GRPOConfig for this run."""
    from trl import GRPOConfig

    vllm: dict[str, Any] = {}
    if cfg.vllm_url:
        vllm = {"use_vllm": True, "vllm_mode": "server", "vllm_server_base_url": cfg.vllm_url.rstrip("/")}
    return hf_args(
        GRPOConfig,
        out / "trainer",
        cuda,
        cfg.seed,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.prompts_per_step * cfg.num_generations,
        gradient_accumulation_steps=1,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        beta=cfg.beta,
        learning_rate=cfg.lr,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=cfg.warmup,
        logging_steps=1,
        save_strategy="steps",
        save_steps=cfg.eval_every,
        save_total_limit=1,
        save_only_model=False,
        **vllm,
    )


def run_rl(
    cfg: RLConfig, reward_funcs: list[Any] | None = None, reward_weights: list[float] | None = None
) -> dict[str, Any]:
    """Train `cfg.from_` with GRPO on `cfg.method`'s reward; returns a summary (out, tag, metrics, report).
    `reward_funcs` (with `reward_weights`) replace the method's rewards: the Python API's way to run the
    guard against a deliberately hackable reward."""
    parent = resolve_parent(cfg.from_)
    files = expand_paths(cfg.data, JSONL_SUFFIXES)
    data_sha256 = hash_files(files)
    train_rows, items, test_items = heldout_split(cfg, read_rl_rows(files))
    if cfg.vllm_url and importlib.util.find_spec("vllm") is None:
        raise ValueError(
            "--vllm-url needs vllm in the trainer's environment (TRL's server mode pushes weights to the "
            "server over NCCL: a CUDA host with `pip install trl[vllm]`, the server started with "
            "`trl vllm-serve --model CKPT`); without --vllm-url, rollouts use transformers"
        )

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from transformers.trainer_utils import get_last_checkpoint
    from transformers.utils import logging as hf_logging
    from trl import GRPOTrainer

    from trainer.rl_guard import BEST_FILE, Guard
    from trainer.rl_report import write_report

    hf_logging.disable_progress_bar()  # loading and periodic-save bars would break the one-line-per-step log
    run = open_run(parent, cfg, "rl", cfg.method, chat="RL prompts are chat messages")
    out, tokenizer = run.out, run.tokenizer
    done = read_lineage(out)
    if cfg.resume and done.get("phase") == "rl" and done.get("metrics", {}).get("steps", 0) >= cfg.max_steps:
        logger.info("--resume: %s is already complete (step %d)", out, done["metrics"]["steps"])
        return {
            "out": str(out),
            "tag": done["tag"],
            "parent": done["parent"],
            "method": done["method"],
            "metrics": done["metrics"],
            "warnings": done["guard"]["warnings"],
            "report": done["report"],
        }
    resume_from = (
        get_last_checkpoint(str(out / "trainer")) if cfg.resume and (out / "trainer").is_dir() else None
    )
    resume_step = int(resume_from.rsplit("-", 1)[1]) if resume_from else 0
    if resume_from:
        logger.info("resuming from %s (step %d)", resume_from, resume_step)
    elif cfg.resume:
        logger.info("--resume: no resumable save in %s, starting from step 0", out / "trainer")

    model = AutoModelForCausalLM.from_pretrained(str(run.parent), dtype=torch.float32)
    set_generation_tokens(model, tokenizer)  # rollouts end at the end of the assistant's turn

    if reward_funcs is None:
        reward_funcs, reward_weights = make_rewards(cfg, out)
    names = [str(getattr(f, "__name__", type(f).__name__)) for f in reward_funcs]  # as TRL names them
    args = grpo_args(cfg, out, run.cuda)
    args.reward_weights = reward_weights
    guard = Guard(cfg, out, items, test_items, tokenizer, names, resume_step)
    trainer = quiet(
        GRPOTrainer(
            model=model,
            reward_funcs=reward_funcs,
            args=args,
            train_dataset=Dataset.from_list(train_rows),
            processing_class=tokenizer,
            peft_config=peft_lora(cfg.lora_r, cfg.lora_alpha) if cfg.lora_r else None,
            callbacks=[guard],
        )
    )
    logger.info(
        "rl %s from %s: %d training rows (%s), %d held out to choose the step, %d to test it; "
        "%d prompts x %d completions per step, beta %g, lr %.2e, %s, rollouts via %s",
        cfg.method,
        run.parent,
        len(train_rows),
        ", ".join(cfg.kinds),
        len(items),
        len(test_items),
        cfg.prompts_per_step,
        cfg.num_generations,
        cfg.beta,
        cfg.lr,
        f"LoRA r={cfg.lora_r}" if cfg.lora_r else "full fine-tuning",
        cfg.vllm_url or "transformers",
    )
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - started

    guard.keep_best(trainer.model)
    final = final_model(trainer.model, bool(cfg.lora_r), out)
    metrics = guard.metrics(int(trainer.state.global_step), seconds)
    state = guard.state
    shown = [reward_name(n) for n in names]
    report = write_report(out, cfg, run.tag, run.parent, shown, reward_weights, guard.rows, state, metrics)
    lineage = run.save(
        final,
        data_sha256,
        cfg,
        metrics,
        method=cfg.method,
        rewards=dict(zip(shown, reward_weights or [1.0] * len(names), strict=True)),
        data={"files": [str(f) for f in files], "rows": len(train_rows), "heldout": len(items)},
        kept_step=state["best_step"],
        guard={"threshold": cfg.guard_threshold, "warnings": state["warnings"]},
        report=report,
    )
    # The checkpoint is complete: the resumable state and the best weights' copy are no longer needed.
    (out / BEST_FILE).unlink(missing_ok=True)
    shutil.rmtree(out / "trainer", ignore_errors=True)
    return {
        **run.summary(lineage["metrics"]),
        "method": cfg.method,
        "warnings": state["warnings"],
        "report": report,
    }
