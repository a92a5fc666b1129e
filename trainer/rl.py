"""Post-training with RL: TRL's GRPOTrainer, a KL penalty to the SFT reference, a reward-hacking guard.

    python -m trainer rl --method rlvr --from sft/TAG [--data data/world/rl] [--max-steps 100]
    python -m trainer rl --method rlhf --from sft/TAG --reward-model CKPT
    python -m trainer rl --method rlaif --from sft/TAG --judge-url http://127.0.0.1:8000/v1 \
        --judge-model NAME --constitution FILE

Rewards: `rlvr` the verifiers of `trainer.rewards` (answer, citation, format); `rlhf` a pairwise reward
model's score (`trainer.reward_model.RewardScorer`); `rlaif` an AI judge's score against a constitution
(`trainer.judge.Judge`, any OpenAI-compatible endpoint; prompts and raw judgments go to `judge.jsonl`).
For rlhf and rlaif the verifier's answer reward is computed too, with weight 0: it shows on every step
next to the proxy.

Each step samples `--num-generations` completions for each of `--prompts-per-step` prompts (transformers
`generate` on CPU; with `--vllm-url`, a `trl vllm-serve` server: TRL's server mode), scores them and
takes a GRPO step; `--beta` weighs the KL penalty to the frozen SFT model. Every `--eval-every` steps the
guard answers held-out questions greedily and scores exact match. When the reward has risen while that
accuracy fell more than `--guard-threshold` below its best, it logs a WARNING and records it. The output
checkpoint is the best step by held-out accuracy (ties: the later step), not necessarily the last.

Written into the checkpoint directory: the weights (phase `rl`, registered), `metrics.jsonl` (one row per
step), `guard.json`, `report.md`, `report.json` and `rl.png` (see `trainer.rl_report`).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.answers import exact_match
from core.jsonl import iter_jsonl
from trainer.checkpoint import (
    default_out,
    read_lineage,
    resolve_checkpoint,
    save_checkpoint,
    set_generation_tokens,
)
from trainer.data import JSONL_SUFFIXES, expand_paths, hash_files
from trainer.evaluate import Item, generate, question_items, read_docs, score, wilson
from trainer.rewards import RLVR_FUNCS, RLVR_WEIGHTS, answer_rewards, completion_text

logger = logging.getLogger(__name__)

METHODS = ("rlvr", "rlhf", "rlaif")
KINDS = ("grounded", "closed_book", "abstain")
GUARD_FILE, BEST_FILE, METRICS_FILE = "guard.json", "best_state.safetensors", "metrics.jsonl"


@dataclass(frozen=True)
class RLConfig:
    """What `python -m trainer rl` optimises, against which reward, and how it watches for reward hacking."""

    method: str = field(
        default="", metadata={"help": "where the reward comes from", "choices": METHODS, "required": True}
    )
    from_: str = field(
        default="",
        metadata={
            "flag": "from",
            "required": True,
            "metavar": "CKPT",
            "help": "the SFT checkpoint (directory or registered tag): the policy's start, the KL reference",
        },
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
    lora_alpha: int | None = field(
        default=None, metadata={"help": "LoRA alpha (default: 2 x rank)", "type": int}
    )
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
    out: Path | None = field(
        default=None,
        metadata={"help": "checkpoint directory (default: $KC_HOME/checkpoints/rl/<tag>)", "type": Path},
    )
    tag: str | None = field(
        default=None, metadata={"help": "checkpoint tag (default: <parent tag>-<method>)", "type": str}
    )
    resume: bool = field(default=False, metadata={"help": "continue from the last resumable save in --out"})
    seed: int = field(default=0, metadata={"help": "seed of the split, shuffling and sampling"})
    threads: int | None = field(
        default=None, metadata={"help": "CPU threads (default: all cores)", "type": int}
    )

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


# -- data --------------------------------------------------------------------------------------------


def read_rl_rows(files: list[Path]) -> list[dict[str, Any]]:
    """RL rows with every column the rewards read; `kind` defaults to grounded when passages are given."""
    rows = []
    for f in files:
        for n, row in iter_jsonl(f):
            if not isinstance(row, dict) or not isinstance(row.get("prompt"), list) or not row.get("answers"):
                raise ValueError(f"{f}:{n}: an RL row needs `prompt` (chat messages) and `answers`")
            passages = [str(p) for p in row.get("passages") or []]
            kind = row.get("kind") or ("grounded" if passages else "closed_book")
            if kind not in KINDS:
                raise ValueError(f"{f}:{n}: kind {kind!r} is not one of {', '.join(KINDS)}")
            rows.append(
                {
                    "prompt": [{"role": m["role"], "content": m["content"]} for m in row["prompt"]],
                    "answers": [str(a) for a in row["answers"]],
                    "kind": kind,
                    "passages": passages,
                    "gold_passage": row.get("gold_passage"),
                }
            )
    if not rows:
        raise ValueError(f"no RL rows in {', '.join(map(str, files))}")
    return rows


def row_item(row: dict[str, Any]) -> Item:
    return Item(row["prompt"], row["answers"], citation=row.get("gold_passage"))


def heldout_split(
    cfg: RLConfig, rows: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[Item], list[Item]]:
    """(training rows, validation items, test items). Test: --test-rows grounded rows of the data (at most
    a third of them). Validation: --eval-questions, else --eval-rows of the other grounded rows (at most
    half). No training row repeats a held-out prompt."""
    rng = random.Random(cfg.seed)
    rows = list(rows)
    rng.shuffle(rows)
    grounded = [i for i, r in enumerate(rows) if r["kind"] == "grounded"]
    n_test = min(cfg.test_rows, len(grounded) // 3)
    test = [row_item(rows[i]) for i in grounded[:n_test]]
    grounded = grounded[n_test:]
    if cfg.eval_questions:
        docs: dict[str, str] | None = None
        for folder in cfg.eval_docs:
            docs = {**(docs or {}), **read_docs(folder)}
        items: list[Item] = []
        for f in expand_paths(cfg.eval_questions, JSONL_SUFFIXES):
            first: Any = next(iter_jsonl(f), (0, {}))[1]
            if isinstance(first, dict) and "prompt" in first:
                items += [row_item(r) for r in read_rl_rows([f])]
            else:
                items += question_items(f, docs, 3, rng, None)[0]
    else:
        grounded = grounded[: min(cfg.eval_rows, len(grounded) // 2)]  # at least as many left to train on
        items = [row_item(rows[i]) for i in grounded]
    held = {json.dumps(it.messages, sort_keys=True) for it in (*items, *test)}
    train = [
        r for r in rows if json.dumps(r["prompt"], sort_keys=True) not in held and r["kind"] in cfg.kinds
    ]
    if cfg.limit is not None:
        train = train[: cfg.limit]
    if not items:
        raise ValueError("no held-out items: give --eval-questions, or data with grounded rows")
    if not train:
        raise ValueError(
            f"no training rows of kinds {', '.join(cfg.kinds)} left after holding out the eval set"
        )
    return train, items, test


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
        from trainer.reward_model import RewardScorer

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


# -- the guard ---------------------------------------------------------------------------------------


def heldout_eval(
    model: Any, tokenizer: Any, items: list[Item], batch_size: int, max_new: int
) -> dict[str, Any]:
    """Greedy answers to the held-out items: exact match with its 95% CI, citation accuracy."""
    was_training = model.training
    try:
        preds = generate(model, tokenizer, [it.messages for it in items], batch_size, max_new)
    finally:
        model.train(was_training)
    result = score(items, preds)
    hits = [exact_match(p, it.answers) for it, p in zip(items, preds, strict=True)]
    correct = sum(hits)
    return {
        "n": len(items),
        "hits": "".join("1" if h else "0" for h in hits),  # per item, for paired comparisons of two steps
        "correct": correct,
        "exact_match": result["exact_match"],
        "ci95": wilson(correct, len(items)),
        **({"citation_accuracy": result["citation_accuracy"]} if "citation_accuracy" in result else {}),
        "examples": result["examples"][:3],
    }


def summarise_test(test: dict[str, Any] | None) -> dict[str, Any]:
    """The test set's figures for the lineage: the SFT model's and the kept weights' exact match, and the
    difference with its paired-bootstrap 95% interval."""
    if not test:
        return {}
    from trainer.rl_report import paired_diff

    diff, lo, hi = paired_diff(test["before"]["hits"], test["kept"]["hits"])
    return {
        "test_n": test["before"]["n"],
        "test_em_before": test["before"]["exact_match"],
        "test_em_kept": test["kept"]["exact_match"],
        "test_diff": diff,
        "test_diff_ci95": [lo, hi],
    }


def check_guard(evals: list[dict[str, Any]], threshold: float) -> dict[str, Any] | None:
    """The reward-hacking signal at the latest evaluation: held-out exact match more than `threshold`
    below the best so far while the mean reward since the last evaluation is above the reward at that best
    (at step 0, the first reward measured). None when there is none."""
    now = evals[-1]
    best = max(reversed(evals[:-1]), key=lambda e: e["exact_match"], default=None)  # ties: the later, as kept
    if best is None or now.get("reward") is None:
        return None
    best_reward = best.get("reward")
    if best_reward is None:
        best_reward = next((e["reward"] for e in evals if e.get("reward") is not None), None)
    drop = best["exact_match"] - now["exact_match"]
    if drop > threshold and best_reward is not None and now["reward"] > best_reward:
        return {
            "step": now["step"],
            "heldout_em": now["exact_match"],
            "best_em": best["exact_match"],
            "best_step": best["step"],
            "reward": now["reward"],
            "reward_at_best": best_reward,
            "drop": drop,
        }
    return None


def _guard_callback(
    cfg: RLConfig,
    out: Path,
    items: list[Item],
    test_items: list[Item],
    tokenizer: Any,
    names: list[str],
    resume_step: int,
) -> Any:
    import torch
    from safetensors.torch import load_file, save_file
    from transformers import TrainerCallback

    class Guard(TrainerCallback):
        """One log line and metrics row per step; held-out exact match every `eval_every` steps; the
        reward-hacking check; the best trainable weights by held-out accuracy, in memory and on disk; the
        test set answered by the SFT weights before the first step and by the kept weights after the last."""

        def __init__(self) -> None:
            self.state: dict[str, Any] = {"evals": [], "warnings": [], "best_step": None}
            self.best: dict[str, Any] | None = None
            self.rows: list[dict[str, Any]] = []
            if resume_step and (out / GUARD_FILE).exists():
                saved = json.loads((out / GUARD_FILE).read_text(encoding="utf-8"))
                saved["evals"] = [e for e in saved["evals"] if e["step"] <= resume_step]
                saved["warnings"] = [w for w in saved["warnings"] if w["step"] <= resume_step]
                self.state = saved
                if (out / BEST_FILE).exists():
                    self.best = load_file(str(out / BEST_FILE))
            metrics = out / METRICS_FILE
            if resume_step and metrics.exists():
                self.rows = [r for _, r in iter_jsonl(metrics) if r["step"] <= resume_step]
            metrics.write_text("".join(json.dumps(r) + "\n" for r in self.rows), encoding="utf-8")
            self.start = self.last = time.perf_counter()

        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            if not self.state["evals"]:
                if test_items:
                    self.state["test"] = {"before": self.score_test(model)}
                self.evaluate(model, 0, None)
            self.last = time.perf_counter()

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, model: Any = None, **kw: Any
        ) -> None:
            logs = logs or {}
            if "reward" not in logs:
                return
            now = time.perf_counter()
            row = {
                "step": state.global_step,
                "reward": logs["reward"],
                "rewards": {reward_name(n): logs.get(f"rewards/{n}/mean") for n in names},
                "reward_std": logs.get("reward_std"),
                "kl": logs.get("kl"),
                "completion_length": logs.get("completions/mean_length"),
                "loss": logs.get("loss"),
                "lr": logs.get("learning_rate"),
                "grad_norm": logs.get("grad_norm"),
                "entropy": logs.get("entropy"),
                "step_seconds": now - self.last,
                "elapsed_s": now - self.start,
            }
            if state.global_step % cfg.eval_every == 0 or state.global_step >= state.max_steps:
                window = [r["reward"] for r in self.rows[-(cfg.eval_every - 1) :]] + [row["reward"]]
                row["heldout_em"] = self.evaluate(model, state.global_step, sum(window) / len(window))
                row["eval_seconds"] = time.perf_counter() - now
            self.last = time.perf_counter()  # a step's seconds leave the evaluation out
            self.rows.append(row)
            with (out / METRICS_FILE).open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            parts = " ".join(f"{n} {v:.3f}" for n, v in row["rewards"].items() if v is not None)
            kl = row["kl"]
            logger.info(
                "step %d/%d | reward %.3f (%s) | kl %s | len %.1f | loss %.4f | %.1f s/step%s",
                row["step"],
                state.max_steps,
                row["reward"],
                parts,
                "-" if kl is None else f"{kl:.4f}",
                row["completion_length"] or 0.0,
                row["loss"] or 0.0,
                row["step_seconds"],
                f" | held-out EM {row['heldout_em']:.1%}" if "heldout_em" in row else "",
            )

        def evaluate(self, model: Any, step: int, reward: float | None) -> float:
            result = heldout_eval(model, tokenizer, items, cfg.eval_batch_size, cfg.max_completion_length)
            entry = {"step": step, "reward": reward, **{k: v for k, v in result.items() if k != "examples"}}
            evals = self.state["evals"]
            evals.append(entry)
            lo, hi = entry["ci95"]
            logger.info(
                "held-out | step %d | exact match %.1f%% [%.1f, %.1f] of %d",
                step,
                100 * entry["exact_match"],
                100 * lo,
                100 * hi,
                entry["n"],
            )
            alarm = check_guard(evals, cfg.guard_threshold)
            if alarm:
                self.state["warnings"].append(alarm)
                logger.warning(
                    "reward hacking? step %d: reward %.3f > %.3f at step %d, but held-out exact match %.1f%% "
                    "fell %.1f points below its best %.1f%% (step %d): keeping step %d's weights",
                    step,
                    alarm["reward"],
                    alarm["reward_at_best"],
                    alarm["best_step"],
                    100 * alarm["heldout_em"],
                    100 * alarm["drop"],
                    100 * alarm["best_em"],
                    alarm["best_step"],
                    alarm["best_step"],
                )
            best_em = max((e["exact_match"] for e in evals[:-1]), default=-1.0)
            if entry["exact_match"] >= best_em:  # ties: the later step, trained longer on the reward
                self.best = {
                    n: p.detach().to("cpu", copy=True).contiguous()
                    for n, p in model.named_parameters()
                    if p.requires_grad
                }
                save_file(self.best, str(out / BEST_FILE))
                self.state["best_step"] = step
            from trainer.checkpoint import write_json_atomic

            write_json_atomic(out / GUARD_FILE, self.state)
            return float(entry["exact_match"])

        def score_test(self, model: Any) -> dict[str, Any]:
            result = heldout_eval(
                model, tokenizer, test_items, cfg.eval_batch_size, cfg.max_completion_length
            )
            return {k: v for k, v in result.items() if k != "examples"}

        def restore_best(self, model: Any) -> None:
            if self.best is not None:
                with torch.no_grad():
                    missing = set(self.best) - {n for n, _ in model.named_parameters()}
                    if missing:
                        raise ValueError(f"best weights name unknown parameters: {sorted(missing)[:3]}")
                    params = dict(model.named_parameters())
                    for n, t in self.best.items():
                        params[n].copy_(t)

    return Guard()


# -- the run -----------------------------------------------------------------------------------------


def grpo_args(cfg: RLConfig, out: Path, cuda: bool) -> Any:
    """TRL's GRPOConfig for this run."""
    from trl import GRPOConfig

    vllm: dict[str, Any] = {}
    if cfg.vllm_url:
        vllm = {"use_vllm": True, "vllm_mode": "server", "vllm_server_base_url": cfg.vllm_url.rstrip("/")}
    return GRPOConfig(
        output_dir=str(out / "trainer"),
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
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        activation_checkpointing=False,
        bf16=cuda,
        use_cpu=not cuda,
        seed=cfg.seed,
        data_seed=cfg.seed,
        dataloader_num_workers=0,
        **vllm,
    )


def run_rl(
    cfg: RLConfig, reward_funcs: list[Any] | None = None, reward_weights: list[float] | None = None
) -> dict[str, Any]:
    """Train `cfg.from_` with GRPO on `cfg.method`'s reward; returns a summary (out, tag, metrics, report).
    `reward_funcs` (with `reward_weights`) replace the method's rewards: the Python API's way to run the
    guard against a deliberately hackable reward."""
    parent = resolve_checkpoint(cfg.from_)
    parent_lineage = read_lineage(parent)
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
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_callback import PrinterCallback
    from transformers.trainer_utils import get_last_checkpoint
    from transformers.utils import logging as hf_logging
    from trl import GRPOTrainer

    from trainer.rl_report import write_report

    torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    hf_logging.disable_progress_bar()  # loading and periodic-save bars would break the one-line-per-step log
    parent_tag = parent_lineage.get("tag") or parent.name
    tag = cfg.tag or f"{parent_tag}-{cfg.method}"
    out = (cfg.out or default_out("rl", tag)).expanduser()
    out.mkdir(parents=True, exist_ok=True)
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

    tokenizer = AutoTokenizer.from_pretrained(str(parent))
    if tokenizer.chat_template is None:
        raise ValueError(f"{parent} has no chat template: RL prompts are chat messages")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    cuda = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(str(parent), dtype=torch.float32)
    set_generation_tokens(model, tokenizer)  # rollouts end at the end of the assistant's turn

    if reward_funcs is None:
        reward_funcs, reward_weights = make_rewards(cfg, out)
    names = [str(getattr(f, "__name__", type(f).__name__)) for f in reward_funcs]  # as TRL names them
    args = grpo_args(cfg, out, cuda)
    args.reward_weights = reward_weights
    peft_config = None
    if cfg.lora_r:
        from peft import LoraConfig

        from trainer.sft import LORA_TARGETS

        peft_config = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha or 2 * cfg.lora_r,
            target_modules=list(LORA_TARGETS),
            task_type="CAUSAL_LM",
        )
    guard = _guard_callback(cfg, out, items, test_items, tokenizer, names, resume_step)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[guard],
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout, which is for the result
    logger.info(
        "rl %s from %s: %d training rows (%s), %d held out to choose the step, %d to test it; "
        "%d prompts x %d completions per step, beta %g, lr %.2e, %s, rollouts via %s",
        cfg.method,
        parent,
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

    final: Any = trainer.model
    state = guard.state
    guard.restore_best(final)
    if test_items and "test" in state:  # (a run resumed from a save made before test sets existed: none)
        state["test"]["kept"] = guard.score_test(final)
    if cfg.lora_r:
        final.save_pretrained(str(out / "adapter"))
        final = final.merge_and_unload()
    evals = state["evals"]
    best = next(e for e in evals if e["step"] == state["best_step"])
    steps_run = int(trainer.state.global_step) - resume_step
    metrics = {
        "steps": int(trainer.state.global_step),
        "best_step": state["best_step"],
        "heldout_em_before": evals[0]["exact_match"],
        "heldout_em_after": evals[-1]["exact_match"],
        "heldout_em_best": best["exact_match"],
        "heldout_n": evals[0]["n"],
        **summarise_test(state.get("test")),
        "guard_warnings": len(state["warnings"]),
        "train_seconds": seconds,
        "steps_per_s": steps_run / seconds if seconds > 0 else 0.0,  # evaluations included
    }
    rows = guard.rows
    if rows:
        metrics |= {
            "reward_first": rows[0]["reward"],
            "reward_last": rows[-1]["reward"],
            "step_seconds_mean": sum(r["step_seconds"] for r in rows) / len(rows),  # evaluations excluded
        }
        kls = [r["kl"] for r in rows if r.get("kl") is not None]
        if kls:
            metrics |= {"kl_last": kls[-1], "kl_max": max(kls)}
    shown = [reward_name(n) for n in names]
    report = write_report(out, cfg, tag, parent, shown, reward_weights, rows, state, metrics)
    lineage = save_checkpoint(
        final,
        tokenizer,
        out,
        phase="rl",
        tag=tag,
        parent=parent,
        data_sha256=data_sha256,
        config=cfg,
        metrics=metrics,
        extra={
            "parent_tag": parent_tag,
            "method": cfg.method,
            "rewards": dict(zip(shown, reward_weights or [1.0] * len(names), strict=True)),
            "data": {"files": [str(f) for f in files], "rows": len(train_rows), "heldout": len(items)},
            "kept_step": state["best_step"],
            "guard": {"threshold": cfg.guard_threshold, "warnings": state["warnings"]},
            "report": report,
        },
    )
    # The checkpoint is complete: the resumable state and the best weights' copy are no longer needed.
    (out / BEST_FILE).unlink(missing_ok=True)
    shutil.rmtree(out / "trainer", ignore_errors=True)
    return {
        "out": str(out),
        "tag": tag,
        "parent": str(parent),
        "method": cfg.method,
        "metrics": lineage["metrics"],
        "warnings": state["warnings"],
        "report": report,
    }
