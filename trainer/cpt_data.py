"""CPT's data: the new documents as the indexer reads them, and the mixture of new and replayed windows laid
out in advance (replay windows evenly spaced, so the realised share is exact to one window).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.loaders import read_files
from trainer.data import Record, Windows, pack

logger = logging.getLogger("trainer.cpt")  # the run's lines, under the run's name


def read_documents(paths: list[Path]) -> tuple[list[Record], list[Path], list[str]]:
    """Documents under `paths` as the indexer reads them (`core.loaders.read_files`): (records, files read,
    "file: reason" skipped). The skips are logged once the run is sure to start, so that a bad --docs
    stays one line."""
    if missing := [p for p in paths if not p.exists()]:
        raise ValueError(f"--docs {missing[0]} does not exist")
    records: list[Record] = []
    files: list[Path] = []
    skipped: list[str] = []
    for read in read_files(paths, warn=False):
        if read.skipped is not None:
            skipped.append(f"{read.path}: {read.skipped}")
            continue
        files.append(read.path)
        records.extend(Record(d.uri, d.text, "doc") for d in read.documents)
    if not records:
        why = f" ({len(skipped)} files skipped, e.g. {skipped[0]})" if skipped else ""
        raise ValueError(f"no documents to train on under {', '.join(map(str, paths))}{why}")
    for reason in skipped[:5]:
        logger.info("skipped %s", reason)
    return records, files, skipped


class MixtureWindows(Windows):
    """Windows in an order laid out in advance (the CPT mixture), read straight through, not reshuffled."""

    def __init__(self, input_ids: Any, labels: Any, order: np.ndarray) -> None:
        super().__init__(input_ids, labels)
        self.order = order

    def indices(self, start: int, count: int) -> np.ndarray:
        return self.order[np.arange(start, start + count) % len(self.order)]


def mixture_order(
    n_new: int, n_replay: int, total: int, replay: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """`total` window indices into [new windows..., replay windows...]: floor(total x replay) replay windows
    evenly spaced, the rest new ones; each source is read in a fresh shuffled order per pass.

    Returns (order, is_replay)."""
    positions = np.arange(total)
    is_replay = np.floor((positions + 1) * replay) > np.floor(positions * replay)
    if n_replay == 0:
        is_replay[:] = False
    rng = np.random.default_rng(seed)

    def stream(n: int, count: int) -> np.ndarray:
        passes = math.ceil(count / n) if n else 0
        return np.concatenate([rng.permutation(n) for _ in range(passes)] or [np.zeros(0, np.int64)])[:count]

    order = np.empty(total, dtype=np.int64)
    order[~is_replay] = stream(n_new, int((~is_replay).sum()))
    order[is_replay] = n_new + stream(n_replay, int(is_replay.sum()))
    return order, is_replay


@dataclass
class Mixture:
    windows: MixtureWindows
    heldout: dict[str, Windows]
    max_steps: int
    report: dict[str, Any]


def build_mixture(
    new_seqs: list[list[int]],
    replay_seqs: list[list[int]],
    heldout_seqs: list[list[int]],
    *,
    seq_len: int,
    pad_id: int,
    replay: float,
    epochs: float,
    windows_per_step: int,
    max_steps: int | None,
    seed: int,
    replay_labels: list[list[int]] | None = None,
) -> Mixture:
    """Pack new and replay sequences into windows and lay out the run's mixture: `epochs` passes over the
    new windows plus the replay share, rounded up to whole steps (or exactly `max_steps` steps).
    `replay_labels` is the replayed rows' loss mask (default: every token)."""
    new_ids, new_labels = pack(new_seqs, seq_len, pad_id)
    n_new = len(new_ids)
    if replay > 0 and replay_seqs:
        rep_ids, rep_labels = pack(replay_seqs, seq_len, pad_id, labels=replay_labels)
    else:
        rep_ids = np.zeros((0, seq_len), dtype=np.int64)
        rep_labels = np.zeros((0, seq_len), dtype=np.int64)
    if max_steps is None:
        max_steps = max(1, math.ceil(epochs * n_new / (1 - replay) / windows_per_step))
    total = max_steps * windows_per_step
    order, is_replay = mixture_order(n_new, len(rep_ids), total, replay, seed)
    ids = np.concatenate([new_ids, rep_ids])
    labels = np.concatenate([new_labels, rep_labels])
    tokens = (labels != -100).sum(axis=1)[order]
    replay_windows = int(is_replay.sum())
    report = {
        "unit": "windows",
        "replay_asked": replay,
        "replay_windows": replay_windows,
        "total_windows": total,
        "replay_fraction_windows": replay_windows / total,
        "replay_fraction_tokens": float(tokens[is_replay].sum() / max(1, tokens.sum())),
        "new_windows": n_new,
        "new_tokens": int((new_labels != -100).sum()),
        "new_epochs": (total - replay_windows) / n_new,
        "replay_pool_windows": len(rep_ids),
        "seq_len": seq_len,
        "windows_per_step": windows_per_step,
        "steps": max_steps,
    }
    heldout: dict[str, Windows] = {}
    if heldout_seqs:
        h_ids, h_labels = pack(heldout_seqs, seq_len, pad_id)
        heldout["heldout_pre_loss"] = Windows(h_ids, h_labels, seed)
    return Mixture(MixtureWindows(ids, labels, order), heldout, max_steps, report)
