"""RL's reward-hacking guard: a TrainerCallback that logs each GRPO step, answers the held-out items every
`--eval-every` steps, warns when the reward rises while held-out exact match falls, and keeps the best
weights by held-out accuracy (which the run saves, not the last step's).

Written into the run's directory: `metrics.jsonl` (one row per step), `guard.json` (every evaluation,
the warnings, the kept step; what `--resume` reads back) and `best_state.safetensors` (the kept trainable
weights). Imports transformers: `trainer.rl` imports it where the run starts.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback

from core.answers import exact_match
from core.jsonl import iter_jsonl
from trainer.checkpoint import write_json_atomic
from trainer.evaluate import Item, generate, score, wilson
from trainer.rl import reward_name

if TYPE_CHECKING:
    from trainer.rl import RLConfig

logger = logging.getLogger("trainer.rl")  # the run's lines, under the run's name

GUARD_FILE, BEST_FILE, METRICS_FILE = "guard.json", "best_state.safetensors", "metrics.jsonl"


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


class Guard(TrainerCallback):
    """One log line and metrics row per step; held-out exact match every `eval_every` steps; the
    reward-hacking check; the best trainable weights by held-out accuracy, in memory and on disk; the
    test set answered by the SFT weights before the first step and by the kept weights after the last.
    `names` are the reward functions as TRL names them; `resume_step` > 0 reads back the state saved up
    to that step."""

    def __init__(
        self,
        cfg: RLConfig,
        out: Path,
        items: list[Item],
        test_items: list[Item],
        tokenizer: Any,
        names: list[str],
        resume_step: int,
    ) -> None:
        self.cfg, self.out, self.items, self.test_items = cfg, out, items, test_items
        self.tokenizer, self.names, self.resume_step = tokenizer, names, resume_step
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
            if self.test_items:
                self.state["test"] = {"before": self.score_test(model)}
            self.evaluate(model, 0, None)
        self.last = time.perf_counter()

    def on_log(
        self, args: Any, state: Any, control: Any, logs: Any = None, model: Any = None, **kw: Any
    ) -> None:
        logs = logs or {}
        if "reward" not in logs:
            return
        every = self.cfg.eval_every
        now = time.perf_counter()
        row = {
            "step": state.global_step,
            "reward": logs["reward"],
            "rewards": {reward_name(n): logs.get(f"rewards/{n}/mean") for n in self.names},
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
        if state.global_step % every == 0 or state.global_step >= state.max_steps:
            window = [r["reward"] for r in self.rows[-(every - 1) :]] + [row["reward"]]
            row["heldout_em"] = self.evaluate(model, state.global_step, sum(window) / len(window))
            row["eval_seconds"] = time.perf_counter() - now
        self.last = time.perf_counter()  # a step's seconds leave the evaluation out
        self.rows.append(row)
        with (self.out / METRICS_FILE).open("a", encoding="utf-8") as f:
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
        cfg = self.cfg
        result = heldout_eval(
            model, self.tokenizer, self.items, cfg.eval_batch_size, cfg.max_completion_length
        )
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
            save_file(self.best, str(self.out / BEST_FILE))
            self.state["best_step"] = step
        write_json_atomic(self.out / GUARD_FILE, self.state)
        return float(entry["exact_match"])

    def score_test(self, model: Any) -> dict[str, Any]:
        cfg = self.cfg
        result = heldout_eval(
            model, self.tokenizer, self.test_items, cfg.eval_batch_size, cfg.max_completion_length
        )
        return {k: v for k, v in result.items() if k != "examples"}

    def keep_best(self, model: Any) -> None:
        """Put the kept step's weights back into `model` and answer the test set with them."""
        if self.best is not None:
            with torch.no_grad():
                missing = set(self.best) - {n for n, _ in model.named_parameters()}
                if missing:
                    raise ValueError(f"best weights name unknown parameters: {sorted(missing)[:3]}")
                params = dict(model.named_parameters())
                for n, t in self.best.items():
                    params[n].copy_(t)
        if (
            self.test_items and "test" in self.state
        ):  # (a run resumed from a save made before test sets: none)
            self.state["test"]["kept"] = self.score_test(model)

    def metrics(self, steps: int, seconds: float) -> dict[str, Any]:
        """The run's metrics for lineage.json: held-out accuracy before, after and at the kept step, the
        test set's, the warnings, the rewards and KL of the first and last steps, the time per step."""
        state = self.state
        evals = state["evals"]
        best = next(e for e in evals if e["step"] == state["best_step"])
        metrics = {
            "steps": steps,
            "best_step": state["best_step"],
            "heldout_em_before": evals[0]["exact_match"],
            "heldout_em_after": evals[-1]["exact_match"],
            "heldout_em_best": best["exact_match"],
            "heldout_n": evals[0]["n"],
            **summarise_test(state.get("test")),
            "guard_warnings": len(state["warnings"]),
            "train_seconds": seconds,
            "steps_per_s": (steps - self.resume_step) / seconds
            if seconds > 0
            else 0.0,  # evaluations included
        }
        rows = self.rows
        if rows:
            metrics |= {
                "reward_first": rows[0]["reward"],
                "reward_last": rows[-1]["reward"],
                "step_seconds_mean": sum(r["step_seconds"] for r in rows) / len(rows),  # evaluations excluded
            }
            kls = [r["kl"] for r in rows if r.get("kl") is not None]
            if kls:
                metrics |= {"kl_last": kls[-1], "kl_max": max(kls)}
        return metrics
