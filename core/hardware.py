"""What this machine computes fast, and so which precision training and serving use.

`KC_PRECISION` (auto | fp32 | bf16), one setting:
- auto (the default): training autocasts its matmuls to bfloat16 where the hardware multiplies it natively
  (a CUDA GPU that supports it, an x86 CPU with AVX512-BF16 or AMX), keeping float32 master weights, and
  runs in float32 elsewhere (emulated bf16 is slower than fp32); the embedded engine serves in float32,
  because in bf16 a greedy answer can depend on what else is in the batch (rounding follows the padded
  shape: the engine's test that batched answers equal answers asked alone failed once in four in bf16);
- bf16: both in bf16 (the engine loads bf16 weights: faster prefill, batch-dependent answers);
- fp32: both in float32.

Measured on the development machine (2 cores with AVX512-BF16, SmolLM2-135M): a full fine-tuning step of
8 x 256 tokens 13.4 s in fp32, 8.0 s under bf16 autocast (1.7x); a 1,024-token prefill 2.1 s with fp32
weights, 1.35 s with bf16 ones (1.6x).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

Precision = Literal["auto", "fp32", "bf16"]

# /proc/cpuinfo flags of the x86 instructions that multiply bf16 (Cooper Lake on; AMX: Sapphire Rapids on)
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def _cpuinfo() -> str:
    """/proc/cpuinfo, read once (empty where it cannot be read: not Linux)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo cannot be read."""
    line = next((ln for ln in _cpuinfo().splitlines() if ln.startswith("flags")), "")
    return frozenset(line.partition(":")[2].split())


def cpu_mhz() -> float:
    """The highest clock /proc/cpuinfo reports (2,000 MHz where it says nothing)."""
    mhz = [float(ln.split(":")[1]) for ln in _cpuinfo().splitlines() if ln.startswith("cpu MHz")]
    return max(mhz, default=2000.0)


def native_bf16(device_type: str) -> bool:
    """Whether `device_type` ("cpu" or "cuda") multiplies bf16 in hardware."""
    if device_type == "cuda":
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return bool(_BF16_FLAGS & cpu_flags())


def precision_setting() -> Precision:
    """`KC_PRECISION`, validated by the settings."""
    from core.settings import Settings

    return Settings().precision


def use_bf16(device_type: str, precision: Precision | None = None) -> bool:
    """Training's rule above: `precision` (default: the `KC_PRECISION` setting) resolved for `device_type`."""
    precision = precision or precision_setting()
    if precision == "auto":
        return native_bf16(device_type)
    return precision == "bf16"
