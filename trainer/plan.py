"""The memory and compute plan of a model: what serving and training it take, before anything runs.

    python -m trainer plan --params 300e9 [--tokens 6e12] [--context 4096] [--json]

Inference: weights at fp32/bf16/int8/int4, and the KV cache per token and per request. Training (mixed
precision AdamW): bf16 weights and gradients, fp32 master weights and two Adam moments, i.e. 16 bytes per
parameter, plus activations (34 bytes x seq x hidden per layer and sequence with selective recomputation,
Korthikanti et al. 2022), and the 80 GB GPUs that holds when fully sharded. Compute: the Chinchilla
compute-optimal token count (~20 tokens per parameter, Hoffmann et al. 2022) and 6 x N x D FLOPs.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

CHINCHILLA_TOKENS_PER_PARAM = 20
ADAM_BYTES_PER_PARAM = 16  # bf16 weights 2 + bf16 grads 2 + fp32 master 4 + fp32 m 4 + fp32 v 4
_SUFFIX = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def parse_count(text: str | float | int) -> float:
    """'300e9', '300B', '1.07M', '6T' -> a number."""
    if isinstance(text, int | float):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmbgt]?)\s*", text.lower())
        if not m:
            raise ValueError(f"{text!r} is not a count: use e.g. 300e9, 300B, 1.07M")
        value = float(m.group(1)) * _SUFFIX.get(m.group(2), 1.0)
    if not value > 0:
        raise ValueError(f"count must be positive, got {text!r}")
    return value


@dataclass(frozen=True)
class PlanConfig:
    """What `python -m trainer plan` computes the plan for."""

    params: str = field(
        default="", metadata={"help": "parameter count, e.g. 300e9, 7B, 1.07M", "required": True}
    )
    tokens: str | None = field(
        default=None,
        metadata={"help": "training tokens (default: Chinchilla-optimal, 20 per parameter)", "type": str},
    )
    context: int = field(default=4096, metadata={"help": "context length of a request, for the KV cache"})
    layers: int | None = field(
        default=None, metadata={"help": "layers (default: estimated, hidden = 128 x layers)", "type": int}
    )
    hidden: int | None = field(
        default=None, metadata={"help": "hidden size (default: estimated)", "type": int}
    )
    kv_heads: int | None = field(
        default=None,
        metadata={"help": "KV heads, for GQA (default: as many as attention heads)", "type": int},
    )
    head_dim: int = field(default=128, metadata={"help": "attention head dimension"})
    gpu_memory_gb: float = field(default=80.0, metadata={"help": "memory of one GPU, GB"})
    gpu_tflops: float = field(default=989.0, metadata={"help": "peak dense bf16 TFLOP/s of one GPU (H100)"})
    mfu: float = field(
        default=0.4, metadata={"help": "model FLOPs utilisation assumed for the time estimate"}
    )


def make_plan(cfg: PlanConfig) -> dict[str, Any]:
    n = parse_count(cfg.params)
    for name in ("context", "head_dim"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 < cfg.mfu <= 1:
        raise ValueError(f"--mfu must be in (0, 1], got {cfg.mfu}")
    estimated = cfg.layers is None or cfg.hidden is None
    if cfg.layers is not None and cfg.hidden is not None:
        layers, hidden = cfg.layers, cfg.hidden
    elif cfg.hidden is not None:
        hidden = cfg.hidden
        layers = max(1, round(n / (12 * hidden * hidden)))
    elif cfg.layers is not None:
        layers = cfg.layers
        hidden = max(cfg.head_dim, round(math.sqrt(n / (12 * layers)) / cfg.head_dim) * cfg.head_dim)
    else:
        # N ~ 12 L d^2 with d ~ 128 L, the aspect ratio of GPT-3 and Llama.
        layers = max(1, round((n / (12 * 128**2)) ** (1 / 3)))
        hidden = max(cfg.head_dim, round(128 * layers / cfg.head_dim) * cfg.head_dim)
    heads = max(1, hidden // cfg.head_dim)
    kv_heads = cfg.kv_heads or heads
    tokens = parse_count(cfg.tokens) if cfg.tokens is not None else CHINCHILLA_TOKENS_PER_PARAM * n

    kv_per_token = 2 * layers * kv_heads * cfg.head_dim * 2  # K and V, bf16
    kv_per_request = kv_per_token * cfg.context
    weights = {"fp32": 4 * n, "bf16": 2 * n, "int8": 1 * n, "int4": 0.5 * n}
    gpu = cfg.gpu_memory_gb * 1e9
    states = ADAM_BYTES_PER_PARAM * n
    activations = 34 * cfg.context * hidden * layers
    flops = 6 * n * tokens
    gpu_seconds = flops / (cfg.gpu_tflops * 1e12 * cfg.mfu)
    return {
        "model": {
            "params": n,
            "layers": layers,
            "hidden": hidden,
            "heads": heads,
            "kv_heads": kv_heads,
            "head_dim": cfg.head_dim,
            "shape_estimated": estimated,
        },
        "inference": {
            "weights_bytes": weights,
            "kv_cache_bytes_per_token": kv_per_token,
            "context": cfg.context,
            "kv_cache_bytes_per_request": kv_per_request,
            "gpus_bf16_one_request": math.ceil((weights["bf16"] + kv_per_request) / gpu),
        },
        "training": {
            "weights_bytes": 2 * n,
            "gradients_bytes": 2 * n,
            "master_weights_bytes": 4 * n,
            "adam_states_bytes": 8 * n,
            "states_bytes": states,
            "activations_bytes_per_sequence": activations,
            "gpus_min": math.ceil(states / gpu + activations / gpu),
            "gpu_memory_gb": cfg.gpu_memory_gb,
        },
        "compute": {
            "chinchilla_tokens": CHINCHILLA_TOKENS_PER_PARAM * n,
            "tokens": tokens,
            "tokens_per_param": tokens / n,
            "flops": flops,
            "gpu_hours": gpu_seconds / 3600,
            "gpu_tflops": cfg.gpu_tflops,
            "mfu": cfg.mfu,
        },
    }


def human_bytes(b: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= scale:
            return f"{b / scale:,.3g} {unit}" if b / scale < 1000 else f"{b / scale:,.0f} {unit}"
    return f"{b:,.0f} B"


def human_count(x: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def format_plan(plan: dict[str, Any]) -> str:
    m, inf, tr, c = plan["model"], plan["inference"], plan["training"], plan["compute"]
    w = inf["weights_bytes"]
    shape = "estimated" if m["shape_estimated"] else "given"
    lines = [
        f"plan for {human_count(m['params'])} parameters ({m['params']:.3g}): {m['layers']} layers, hidden "
        f"{m['hidden']}, {m['heads']} heads x {m['head_dim']}, {m['kv_heads']} KV heads ({shape} shape)",
        "  inference",
        f"    weights        fp32 {human_bytes(w['fp32'])} | fp16/bf16 {human_bytes(w['bf16'])} | "
        f"int8 {human_bytes(w['int8'])} | int4 {human_bytes(w['int4'])}",
        f"    KV cache       {human_bytes(inf['kv_cache_bytes_per_token'])} per token, "
        f"{human_bytes(inf['kv_cache_bytes_per_request'])} per request of {inf['context']:,} tokens (bf16)",
        f"    GPUs           {inf['gpus_bf16_one_request']} x {tr['gpu_memory_gb']:g} GB for bf16 weights "
        "+ one request",
        "  training (mixed-precision AdamW, 16 bytes/parameter)",
        f"    weights {human_bytes(tr['weights_bytes'])} + gradients {human_bytes(tr['gradients_bytes'])} + "
        f"fp32 master {human_bytes(tr['master_weights_bytes'])} + Adam {human_bytes(tr['adam_states_bytes'])}"
        f" = {human_bytes(tr['states_bytes'])}",
        f"    activations    ~{human_bytes(tr['activations_bytes_per_sequence'])} per sequence "
        "(selective recompute)",
        f"    GPUs           at least {tr['gpus_min']} x {tr['gpu_memory_gb']:g} GB "
        "(states + one sequence's activations, fully sharded)",
        "  compute",
        f"    tokens         Chinchilla-optimal {human_count(c['chinchilla_tokens'])} "
        f"({c['chinchilla_tokens']:.3g}); planned {human_count(c['tokens'])} "
        f"({c['tokens_per_param']:.3g} per parameter)",
        f"    FLOPs          6 N D = {c['flops']:.3g}; {human_count(c['gpu_hours'])} GPU-hours at "
        f"{c['gpu_tflops']:g} TFLOP/s and {c['mfu']:.0%} MFU",
    ]
    return "\n".join(lines)


def preset_plan(model: Any, num_params: int, tokens: float, seq_len: int) -> dict[str, Any]:
    """The plan of a training run of a preset: its exact shape, its context and its token budget."""
    cfg = PlanConfig(
        params=str(num_params),
        tokens=str(tokens),
        context=seq_len,
        layers=model.num_layers,
        hidden=model.hidden_size,
        kv_heads=model.num_kv_heads,
        head_dim=model.head_dim,
    )
    return make_plan(cfg)
