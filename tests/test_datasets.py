"""The hand-written question sets still agree with the documents they are about."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["bench/data/check_queries.py", "data/python-docs/check_questions.py"])
def test_labelled_sets_check_out(script: str) -> None:
    proc = subprocess.run([sys.executable, script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
