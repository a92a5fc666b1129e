"""The step-log callback of the HF-trainer phases (sft, reward-model): one fixed-format line per logged
step, the same numbers in metrics.jsonl, and `--max-minutes`.

    step 12/40 | loss 1.2345 | lr 9.50e-04 | tok/s 1,234 | mfu 0.42% | gnorm 0.81        (sft)
    step 12/40 | loss 0.6123 | acc 0.75 | margin 0.412 | lr 2.90e-04 | gnorm 1.02       (reward-model)

Imports transformers: import it where a run starts, not with a phase's config.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

Column = tuple[str, str, str]  # (label in the line, key of the metrics row, format spec)
Measure = Callable[[float], dict[str, float]]  # seconds since the last line -> the phase's own numbers


class StepLog(TrainerCallback):
    """Each log of the trainer that has a loss becomes a metrics.jsonl row (step, loss, the `logged` keys
    of the trainer's logs, lr, grad_norm, what `measure` adds, elapsed_s) and a line `step s/n | loss x`
    followed by `columns`. The clock starts when training starts, not at the data preparation before it."""

    def __init__(
        self,
        metrics_path: Path,
        max_minutes: float | None,
        log: logging.Logger,
        columns: Sequence[Column],
        *,
        logged: Sequence[str] = (),
        measure: Measure | None = None,
    ) -> None:
        self.metrics_path, self.max_minutes, self.log = metrics_path, max_minutes, log
        self.columns, self.logged, self.measure = columns, logged, measure
        metrics_path.unlink(missing_ok=True)
        self.start = self.last_t = time.perf_counter()

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.start = self.last_t = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
        if self.max_minutes is not None and time.perf_counter() - self.start >= self.max_minutes * 60:
            self.log.warning(
                "stopping at step %d: --max-minutes %.3g reached", state.global_step, self.max_minutes
            )
            control.should_training_stop = True
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
        logs = logs or {}
        if "loss" not in logs:
            return
        now = time.perf_counter()
        row = {
            "step": state.global_step,
            "loss": float(logs["loss"]),
            **{key: float(logs.get(key, float("nan"))) for key in self.logged},
            "lr": float(logs.get("learning_rate", 0.0)),
            "grad_norm": float(logs.get("grad_norm", float("nan"))),
            **(self.measure(now - self.last_t) if self.measure else {}),
            "elapsed_s": now - self.start,
        }
        self.last_t = now
        tail = "".join(f" | {label} {format(row[key], spec)}" for label, key, spec in self.columns)
        self.log.info("step %d/%d | loss %.4f%s", row["step"], state.max_steps, row["loss"], tail)
        with self.metrics_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
