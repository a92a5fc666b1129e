"""The causal-LM training loop shared by pretraining and continued pretraining.

AdamW (no weight decay on norms), linear warmup then cosine decay to `min_lr_ratio`, gradient clipping,
gradient accumulation, held-out loss every `eval_every` steps, a resumable state (`train_state.pt`,
written atomically) and a checkpoint every `save_every` steps, one fixed-format log line per step:

    step 120/3000 | loss 2.3456 | lr 3.00e-03 | tok/s 10,234 | mfu 2.31% | gnorm 0.81 | 0.40s

and the same numbers in `metrics.jsonl`. Distributed without code changes: under `torchrun` (RANK and
WORLD_SIZE set) the model is wrapped in DDP and each rank draws its own share of every batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.hardware import cpu_flags, cpu_mhz, native_bf16, use_bf16
from trainer.data import Windows

logger = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class LoopConfig:
    """Optimisation and bookkeeping of a training run."""

    max_steps: int = field(default=1000, metadata={"help": "optimizer steps"})
    lr: float = field(default=3e-3, metadata={"help": "peak learning rate"})
    min_lr_ratio: float = field(
        default=0.1, metadata={"help": "final learning rate / peak, after cosine decay"}
    )
    warmup_steps: int = field(default=50, metadata={"help": "linear warmup steps"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay (matrices only)"})
    beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    beta2: float = field(default=0.95, metadata={"help": "AdamW beta2"})
    grad_clip: float = field(default=1.0, metadata={"help": "clip the gradient norm to this (0: off)"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    eval_every: int = field(
        default=250, metadata={"help": "held-out loss every N steps (0: only at the end)"}
    )
    eval_batches: int = field(default=20, metadata={"help": "held-out batches per evaluation"})
    save_every: int = field(default=250, metadata={"help": "checkpoint and resumable state every N steps"})
    log_every: int = field(default=1, metadata={"help": "a log line every N steps"})
    max_minutes: float | None = field(
        default=None, metadata={"help": "stop (and save) after this many minutes of training", "type": float}
    )
    stop_at: int | None = field(
        default=None,
        metadata={
            "help": "stop (and save) at this step, the schedule still aiming at --max-steps: train a "
            "long run in slices with --resume",
            "type": int,
        },
    )
    peak_tflops: float | None = field(
        default=None,
        metadata={"help": "peak TFLOP/s of one device, for MFU (default: detected)", "type": float},
    )

    def __post_init__(self) -> None:
        for name in ("max_steps", "grad_accum", "log_every", "eval_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every", "save_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


def lr_at(step: int, cfg: LoopConfig) -> float:
    """Learning rate of optimizer step `step` (0-based): linear warmup, then cosine to lr x min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


# -- devices, distribution, FLOPs --------------------------------------------------------------------


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_from_env() -> Dist:
    """Rank and world size as torchrun / accelerate launch set them; one process otherwise."""
    return Dist(
        rank=int(os.environ.get("RANK", 0)),
        world=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def pick_device(dist: Dist) -> Any:
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_device(dist.local_rank)
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")


def init_distributed(dist: Dist, device: Any) -> None:
    import torch.distributed as tdist

    if dist.world > 1 and not tdist.is_initialized():
        tdist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


_GPU_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}


def detect_peak_tflops(device: Any, threads: int) -> float:
    """Peak dense TFLOP/s: GPU by name (bf16), CPU from its vector width, clock and the threads used."""
    import torch

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in _GPU_BF16_TFLOPS.items():
            if key in name:
                return value
        return 100.0
    flags = cpu_flags()
    # fp32 FLOPs per cycle per core: two FMA units x vector lanes x 2
    per_cycle = 64 if "avx512f" in flags else 32 if "avx2" in flags else 8
    return threads * cpu_mhz() * 1e6 * per_cycle / 1e12


def autocast_dtype(dtype: str, device_type: str) -> Any:
    """The autocast dtype of a run asked for `dtype` ("float32", "bfloat16", "float16", or "auto": the
    `KC_PRECISION` rule of `core.hardware`); None trains in float32. A CPU without native bf16 falls back
    to float32 (emulated bf16 is slower)."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if use_bf16(device_type) else None
    if dtype == "float32":
        return None
    if device_type == "cpu" and not (dtype == "bfloat16" and native_bf16("cpu")):
        logger.warning("%s autocast asked for on a CPU without it: training in float32 instead", dtype)
        return None
    return getattr(torch, dtype)


def flops_per_token(model: Any, seq_len: int) -> float:
    """Training FLOPs per token: 6 x matmul parameters + 12 x layers x hidden x seq (PaLM, appendix B)."""
    cfg = model.config
    n = sum(p.numel() for p in model.parameters())
    if not cfg.tie_word_embeddings:
        n -= model.get_input_embeddings().weight.numel()  # a lookup, not a matmul
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attn = 12 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim * seq_len
    return float(6 * n + attn)


# -- the loop ----------------------------------------------------------------------------------------


@dataclass
class Pool:
    """A source of packed windows and how many of them go into each micro-batch of a rank."""

    name: str
    windows: Windows
    per_micro_batch: int


SaveFn = Callable[[Any, int, dict[str, Any]], None]


def plain_loss(model: Any, ids: Any, labels: Any) -> Any:
    return model(input_ids=ids, labels=labels).loss


def document_positions(ids: Any, eos_id: int) -> Any:
    """Position ids that restart after every `eos_id` in each packed window. Given these (and no attention
    mask), transformers' causal mask keeps each record to itself: a packed record sees only its own
    tokens, at the positions it will have when asked alone."""
    import torch

    length = ids.shape[1]
    index = torch.arange(length, device=ids.device).expand_as(ids)
    starts = torch.zeros_like(ids, dtype=torch.bool)
    starts[:, 1:] = ids[:, :-1] == eos_id
    first = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values
    return index - first


def document_inputs(ids: Any, eos_id: int) -> dict[str, Any]:
    """The forward arguments that keep each packed record to itself (a cache would turn transformers'
    packed-sequence mask off)."""
    return {"position_ids": document_positions(ids, eos_id), "use_cache": False}


def mean_loss(
    forward: Callable[[Any, Any, Any], Any],
    model: Any,
    windows: Windows,
    batch: int,
    limit: int | None,
    device: Any,
) -> float | None:
    """Token-weighted mean loss over the first `limit` batches of `windows` in order (None: no tokens).
    Call under `torch.no_grad()` with the model in eval mode."""
    import torch

    total, count = 0.0, 0
    for ids, labels in windows.ordered_batches(batch, limit):
        ids_t = torch.from_numpy(ids).to(device)
        lab_t = torch.from_numpy(labels).to(device)
        n = int((lab_t[:, 1:] != -100).sum())
        if n:
            total += float(forward(model, ids_t, lab_t)) * n
            count += n
    return total / count if count else None


@dataclass
class LoopResult:
    step: int
    metrics: dict[str, Any]
    stopped_early: bool = False
    resumed_from: int | None = None


class TrainLoop:
    """Train `model` on batches drawn from `pools`; `save_fn(model, step, metrics)` writes a checkpoint."""

    def __init__(
        self,
        model: Any,
        pools: list[Pool],
        heldout: dict[str, Windows],
        cfg: LoopConfig,
        run_dir: Path,
        save_fn: SaveFn,
        *,
        seq_len: int,
        dtype: str = "float32",
        threads: int = 1,
        dist: Dist | None = None,
        document_eos: int | None = None,
    ) -> None:
        import torch

        if not pools or all(p.per_micro_batch <= 0 for p in pools):
            raise ValueError("nothing to train on: every data pool is empty")
        self.cfg = cfg
        self.pools = [p for p in pools if p.per_micro_batch > 0]
        self.heldout = heldout
        self.run_dir = run_dir
        self.save_fn = save_fn
        self.seq_len = seq_len
        self.document_eos = document_eos
        self.dist = dist or dist_from_env()
        self.device = pick_device(self.dist)
        init_distributed(self.dist, self.device)
        self.model = model.to(self.device)
        self.autocast_dtype = autocast_dtype(dtype, self.device.type)
        precision = str(self.autocast_dtype).removeprefix("torch.") if self.autocast_dtype else "float32"
        logger.info("precision: %s on %s", precision, self.device.type)
        self.ddp_model = model
        if self.dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp_model = DistributedDataParallel(
                model, device_ids=[self.dist.local_rank] if self.device.type == "cuda" else None
            )
        decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=cfg.lr,
            betas=(cfg.beta1, cfg.beta2),
            fused=self.device.type == "cuda",
        )
        self.flops_per_token = flops_per_token(model, seq_len)
        self.peak_flops = (cfg.peak_tflops or detect_peak_tflops(self.device, threads)) * 1e12
        self.tokens_per_step = (
            sum(p.per_micro_batch for p in self.pools) * seq_len * cfg.grad_accum * self.dist.world
        )

    # -- state ---------------------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.run_dir / STATE_FILE

    def _save_state(self, step: int, elapsed: float, metrics: dict[str, Any]) -> None:
        import torch

        tmp = self.state_path.with_name(f".{STATE_FILE}.tmp")
        torch.save(
            {
                "step": step,
                "elapsed_s": elapsed,
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "metrics": metrics,
                "torch_rng": torch.get_rng_state(),
            },
            tmp,
        )
        os.replace(tmp, self.state_path)

    def _load_state(self) -> tuple[int, float, dict[str, Any]]:
        import torch

        state = torch.load(self.state_path, map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"].cpu())
        return int(state["step"]), float(state["elapsed_s"]), dict(state["metrics"])

    def _append_metrics(self, row: dict[str, Any]) -> None:
        if self.dist.is_main:
            with (self.run_dir / METRICS_FILE).open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")

    def _truncate_metrics(self, step: int) -> None:
        path = self.run_dir / METRICS_FILE
        if not path.exists() or not self.dist.is_main:
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the kill
            if row.get("step", 0) <= step:
                keep.append(line)
        path.write_text("".join(ln + "\n" for ln in keep))

    # -- steps ---------------------------------------------------------------------------------------

    def _micro_batch(self, micro_step: int) -> tuple[Any, Any]:
        import torch

        ids, labels = [], []
        for p in self.pools:
            i, lab = p.windows.batch(micro_step, p.per_micro_batch, self.dist.rank, self.dist.world)
            ids.append(i)
            labels.append(lab)
        return (
            torch.from_numpy(np.concatenate(ids)).to(self.device, non_blocking=True),
            torch.from_numpy(np.concatenate(labels)).to(self.device, non_blocking=True),
        )

    def _forward_loss(self, model: Any, ids: Any, labels: Any) -> Any:
        import torch

        extra = document_inputs(ids, self.document_eos) if self.document_eos is not None else {}
        if self.autocast_dtype is not None:
            with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                return model(input_ids=ids, labels=labels, **extra).loss
        return model(input_ids=ids, labels=labels, **extra).loss

    def evaluate(self) -> dict[str, float]:
        """Token-weighted mean loss on each held-out pool."""
        import torch

        out: dict[str, float] = {}
        self.model.eval()
        batch = max(1, sum(p.per_micro_batch for p in self.pools))
        with torch.no_grad():
            for name, windows in self.heldout.items():
                loss = mean_loss(
                    self._forward_loss, self.model, windows, batch, self.cfg.eval_batches, self.device
                )
                if loss is not None:
                    out[name] = loss
        self.model.train()
        return out

    def run(self, resume: bool = False) -> LoopResult:
        import torch

        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        step, elapsed = 0, 0.0
        metrics: dict[str, Any] = {}
        resumed_from = None
        if resume and self.state_path.exists():
            step, elapsed, metrics = self._load_state()
            resumed_from = step
            self._truncate_metrics(step)
            logger.info("resumed from %s at step %d (%.1f min trained)", self.state_path, step, elapsed / 60)
        elif resume:
            logger.warning("--resume: no %s in %s, starting from step 0", STATE_FILE, self.run_dir)
        if step >= cfg.max_steps:
            logger.info("already at step %d of %d: nothing to train", step, cfg.max_steps)
            return LoopResult(step, metrics, resumed_from=resumed_from)

        self.model.train()
        stopped_early = False
        session_start = time.perf_counter()
        while step < cfg.max_steps:
            t0 = time.perf_counter()
            lr = lr_at(step, cfg)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            loss_sum = 0.0
            for m in range(cfg.grad_accum):
                ids, labels = self._micro_batch(step * cfg.grad_accum + m)
                sync = self.dist.world == 1 or m == cfg.grad_accum - 1
                ctx = self.ddp_model.no_sync() if not sync else contextlib.nullcontext()
                with ctx:
                    loss = self._forward_loss(self.ddp_model, ids, labels) / cfg.grad_accum
                    loss.backward()
                loss_sum += float(loss.detach())
            grad_norm = (
                float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip))
                if cfg.grad_clip > 0
                else float("nan")
            )
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            step += 1
            dt_step = time.perf_counter() - t0
            tok_s = self.tokens_per_step / dt_step
            mfu = self.flops_per_token * tok_s / (self.peak_flops * self.dist.world)
            elapsed_now = elapsed + time.perf_counter() - session_start
            metrics = {
                "step": step,
                "loss": loss_sum,
                "lr": lr,
                "tokens_per_s": tok_s,
                "mfu": mfu,
                "grad_norm": grad_norm,
                "tokens_seen": step * self.tokens_per_step,
                "elapsed_s": elapsed_now,
                **{k: v for k, v in metrics.items() if k.startswith("heldout")},
            }
            if self.dist.is_main and (step % cfg.log_every == 0 or step == cfg.max_steps):
                logger.info(
                    "step %d/%d | loss %.4f | lr %.2e | tok/s %s | mfu %.2f%% | gnorm %.2f | %.2fs",
                    step,
                    cfg.max_steps,
                    loss_sum,
                    lr,
                    f"{tok_s:,.0f}",
                    100 * mfu,
                    grad_norm,
                    dt_step,
                )
                self._append_metrics(
                    {
                        k: metrics[k]
                        for k in (
                            "step",
                            "loss",
                            "lr",
                            "tokens_per_s",
                            "mfu",
                            "grad_norm",
                            "tokens_seen",
                            "elapsed_s",
                        )
                    }
                )
            stop_now = cfg.max_minutes is not None and elapsed_now >= cfg.max_minutes * 60
            if cfg.stop_at is not None and step >= cfg.stop_at:
                stop_now = True
            done = step == cfg.max_steps or stop_now
            if (
                self.heldout
                and self.dist.is_main
                and ((cfg.eval_every and step % cfg.eval_every == 0) or done)
            ):
                held = self.evaluate()
                for name, value in held.items():
                    metrics[name] = value
                logger.info(
                    "eval step %d | %s", step, " | ".join(f"{k} {v:.4f}" for k, v in sorted(held.items()))
                )
                self._append_metrics({"step": step, **held})
            if done or (cfg.save_every and step % cfg.save_every == 0):
                if self.dist.is_main:
                    self._save_state(step, elapsed_now, metrics)
                    self.save_fn(self.model, step, metrics)
                if self.dist.world > 1:
                    import torch.distributed as tdist

                    tdist.barrier()
            if stop_now and step < cfg.max_steps:
                logger.warning("stopping at step %d of %d (--max-minutes or --stop-at)", step, cfg.max_steps)
                stopped_early = True
                break
        return LoopResult(step, metrics, stopped_early=stopped_early, resumed_from=resumed_from)
