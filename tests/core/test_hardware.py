"""The precision rule (core.hardware): bf16 where the hardware multiplies it, the setting's overrides."""

from __future__ import annotations

import pytest
import torch

from core import hardware
from core.settings import Settings
from trainer.loop import autocast_dtype


@pytest.fixture
def cpu_with_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))


@pytest.fixture
def cpu_without_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "fma"}))


def test_auto_follows_the_cpu_flags(cpu_with_bf16: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KC_PRECISION", raising=False)
    assert hardware.native_bf16("cpu") and hardware.use_bf16("cpu")
    assert autocast_dtype("auto", "cpu") is torch.bfloat16
    monkeypatch.setenv("KC_PRECISION", "fp32")
    assert not hardware.use_bf16("cpu") and autocast_dtype("auto", "cpu") is None


def test_without_native_bf16_training_stays_float32(
    cpu_without_bf16: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("KC_PRECISION", raising=False)
    assert not hardware.use_bf16("cpu") and autocast_dtype("auto", "cpu") is None
    assert autocast_dtype("bfloat16", "cpu") is None  # a preset's bf16, emulated: slower than fp32
    assert "training in float32 instead" in caplog.text
    assert hardware.use_bf16("cpu", "bf16")  # asked for by name: given
    assert autocast_dtype("float32", "cpu") is None


def test_the_engine_serves_float32_unless_bf16_is_asked_for(
    cpu_with_bf16: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.engines.embedded import serving_dtype

    monkeypatch.delenv("KC_PRECISION", raising=False)
    assert serving_dtype() is torch.float32  # auto: batch-independent greedy answers
    monkeypatch.setenv("KC_PRECISION", "bf16")
    assert serving_dtype() is torch.bfloat16


def test_a_bad_setting_names_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KC_PRECISION", "fp16")
    with pytest.raises(ValueError, match=r"auto.*fp32.*bf16"):
        Settings()
