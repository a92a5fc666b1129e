"""Pretraining data: read documents and chat rows, drop exact and near duplicates (with a report), hold
out a split, tokenize and pack into fixed-length windows that batches are drawn from by step number.

Documents are read by `core.loaders`, exactly as the indexer reads them (every suffix it supports but
.jsonl: .md/.markdown/.txt/.rst with the front matter stripped, .html, .pdf; a file it cannot read is
skipped with the reason logged), or are `.jsonl` rows with a `text` field; chat rows are `.jsonl` rows
with `messages`, rendered with the chat template. Near-duplicate
removal (MinHash over word n-grams, verified by exact Jaccard) applies to documents only: chat rows of
grounded QA share their passages on purpose and differ in the question, so they are only deduplicated
exactly.

Batches are a pure function of (seed, step, rank): a resumed run sees exactly the batches it would have.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from core.jsonl import iter_jsonl
from core.loaders import SUPPORTED_SUFFIXES, iter_files, read_files
from trainer.tokenizer import IM_END, IM_START, render_chat

logger = logging.getLogger(__name__)

JSONL_SUFFIXES = (".jsonl",)  # training rows (chat or document), read here; every other suffix: core
Kind = Literal["doc", "chat"]


@dataclass(frozen=True)
class Record:
    id: str
    text: str
    kind: Kind


def expand_paths(paths: Sequence[Path], suffixes: Collection[str] = SUPPORTED_SUFFIXES) -> list[Path]:
    """Files under `paths` (folders walked as the indexer walks them: recursively, sorted, hidden files
    and folders skipped) with a known suffix, and files named outright; error when none."""
    files: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise ValueError(f"{p} does not exist")
        files.extend(f for f in iter_files(p) if f == p or f.suffix.lower() in suffixes)
    if not files:
        raise ValueError(f"no {'/'.join(sorted(suffixes))} files under {', '.join(map(str, paths))}")
    return files


def hash_files(files: Iterable[Path]) -> str:
    """sha256 over the files' names and contents: the data manifest hash recorded in lineage.json."""
    h = hashlib.sha256()
    for f in sorted(Path(x) for x in files):
        h.update(f.name.encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()


def read_records(files: Sequence[Path]) -> list[Record]:
    """Documents and chat rows from files, in order: .jsonl rows are training rows (a row with neither
    `messages` nor `text` is an error); every other file gives the documents `core.loaders` reads from it
    (the indexer's), each with the file's name as its id, or nothing when it is skipped."""
    rows = {f for f in files if f.suffix.lower() in JSONL_SUFFIXES}
    docs = {r.path: r.documents for r in read_files(f for f in files if f not in rows)}
    records: list[Record] = []
    for f in files:
        if f in rows:
            for n, row in iter_jsonl(f):
                rid = f"{f.name}:{n}"
                if isinstance(row, dict) and isinstance(row.get("messages"), list):
                    records.append(Record(rid, render_chat(row["messages"]), "chat"))
                elif isinstance(row, dict) and isinstance(row.get("text"), str):
                    records.append(Record(rid, row["text"], "doc"))
                else:
                    raise ValueError(f"{f}:{n}: a row needs `messages` (chat) or `text` (document)")
        else:
            records.extend(Record(f.name, d.text, "doc") for d in docs[f])
    return records


# -- deduplication -----------------------------------------------------------------------------------


@dataclass
class DedupReport:
    input: int = 0
    kept: int = 0
    exact_dropped: int = 0
    near_dropped: int = 0
    near_threshold: float = 0.0
    examples: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"dedup: {self.input} records -> {self.kept} kept; dropped {self.exact_dropped} exact and "
            f"{self.near_dropped} near duplicates (Jaccard >= {self.near_threshold:g} on word n-grams)"
        )


_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return (z ^ (z >> np.uint64(31))) & _MASK64


def shingles(text: str, n: int) -> set[str]:
    words = re.findall(r"\w+", text.lower())
    if len(words) <= n:
        return {" ".join(words)}
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def minhash(items: set[str], num_perm: int, seed: int = 0) -> np.ndarray:
    base = np.array(
        [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") for s in items],
        dtype=np.uint64,
    )
    seeds = _splitmix64(np.arange(num_perm, dtype=np.uint64) + np.uint64(seed))
    return _splitmix64(base[None, :] ^ seeds[:, None]).min(axis=1)


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def _dedup_key(text: str) -> str:
    """Exact-duplicate key of a text: case and whitespace folded (not answer matching: core.answers)."""
    return " ".join(text.lower().split())


def dedup(
    records: Sequence[Record],
    near_threshold: float = 0.8,
    ngram: int = 5,
    num_perm: int = 64,
    bands: int = 16,
) -> tuple[list[Record], DedupReport]:
    """Keep the first of each group of exact duplicates (whitespace and case ignored) and of each group of
    near-duplicate documents (Jaccard of word n-gram sets >= `near_threshold`; 1.0 or more disables it)."""
    if num_perm % bands:
        raise ValueError(f"num_perm {num_perm} must be a multiple of bands {bands}")
    report = DedupReport(input=len(records), near_threshold=near_threshold)
    seen: set[str] = set()
    kept: list[Record] = []
    buckets: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]
    kept_shingles: dict[int, set[str]] = {}
    rows = num_perm // bands
    for rec in records:
        key = hashlib.sha256(_dedup_key(rec.text).encode()).hexdigest()
        if key in seen:
            report.exact_dropped += 1
            continue
        seen.add(key)
        if rec.kind == "doc" and near_threshold < 1.0:
            sh = shingles(rec.text, ngram)
            sig = minhash(sh, num_perm)
            keys = [sig[b * rows : (b + 1) * rows].tobytes() for b in range(bands)]
            candidates = {j for b, k in enumerate(keys) for j in buckets[b].get(k, ())}
            match = next(
                (
                    (j, s)
                    for j in sorted(candidates)
                    if (s := jaccard(sh, kept_shingles[j])) >= near_threshold
                ),
                None,
            )
            if match is not None:
                report.near_dropped += 1
                if len(report.examples) < 10:
                    report.examples.append(
                        {"dropped": rec.id, "kept": kept[match[0]].id, "jaccard": round(match[1], 3)}
                    )
                continue
            idx = len(kept)
            kept_shingles[idx] = sh
            for b, k in enumerate(keys):
                buckets[b].setdefault(k, []).append(idx)
        kept.append(rec)
    report.kept = len(kept)
    return kept, report


def split_heldout(records: Sequence[Record], fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """A deterministic split by a hash of each record's id and text: (train, heldout)."""
    if not 0 <= fraction < 1:
        raise ValueError(f"heldout fraction must be in [0, 1), got {fraction}")
    train: list[Record] = []
    held: list[Record] = []
    for r in records:
        h = int.from_bytes(hashlib.sha256(f"{seed}:{r.id}:{r.text}".encode()).digest()[:8], "little")
        (held if h / 2**64 < fraction else train).append(r)
    if fraction > 0 and not held and len(train) > 1:
        held.append(train.pop())
    return train, held


def parse_repeats(items: Sequence[str]) -> dict[str, int]:
    """`NAME=N` items (a file name and how many times its rows are trained per pass) as a dict."""
    repeats: dict[str, int] = {}
    for item in items:
        name, _, count = item.rpartition("=")
        if not name or not count.isdigit() or int(count) < 1:
            raise ValueError(f"--mix-repeat takes NAME=N, N >= 1 (e.g. closed_book.jsonl=8), got {item!r}")
        repeats[name] = int(count)
    return repeats


def source_of(record: Record) -> str:
    """The name of the file a record was read from (its id is `name:line` or `name`)."""
    return record.id.rsplit(":", 1)[0]


def repeat_sources(records: Sequence[Record], repeats: dict[str, int]) -> list[Record]:
    """`records`, then the records of each repeated file again, round after round, until each has been
    listed N times."""
    out = list(records)
    for round_ in range(1, max(repeats.values(), default=1)):
        out.extend(r for r in records if repeats.get(source_of(r), 1) > round_)
    return out


# -- tokenization and packing ------------------------------------------------------------------------


def tokenize(tokenizer: Any, records: Sequence[Record], batch: int = 512) -> list[list[int]]:
    """Token ids of each record, followed by the end-of-document token."""
    eos = tokenizer.eos_token_id
    out: list[list[int]] = []
    for i in range(0, len(records), batch):
        enc = tokenizer([r.text for r in records[i : i + batch]], add_special_tokens=False)["input_ids"]
        out.extend([*ids, eos] for ids in enc)
    return out


def unigram_entropy(seqs: Iterable[Sequence[int]]) -> float:
    """Entropy of the token distribution, in nats: the loss of a model that ignores context."""
    counts = Counter(t for s in seqs for t in s)
    total = sum(counts.values())
    if total == 0:
        return 0.0
    p = np.array(list(counts.values()), dtype=np.float64) / total
    return float(-(p * np.log(p)).sum())


def assistant_labels(
    tokenizer: Any, records: Sequence[Record], seqs: Sequence[Sequence[int]]
) -> list[list[int]]:
    """Labels for `seqs` (from `tokenize`) that train only on what the assistant says in chat records:
    every other token of a chat row (system prompt, passages, question) is -100. Documents keep all."""
    out: list[list[int]] = []
    for record, ids in zip(records, seqs, strict=True):
        if record.kind != "chat":
            out.append(list(ids))
            continue
        spans, start = [], 0
        opener = f"{IM_START}assistant\n"
        while (begin := record.text.find(opener, start)) >= 0:
            end = record.text.find(IM_END, begin)
            end = len(record.text) if end < 0 else end + len(IM_END)
            spans.append((begin + len(opener), end))
            start = end
        offsets = tokenizer(record.text, add_special_tokens=False, return_offsets_mapping=True)[
            "offset_mapping"
        ]
        if len(offsets) + 1 != len(ids):
            raise ValueError(f"{record.id}: tokenization changed between passes")
        labels = [
            t if any(a <= o[0] < b for a, b in spans) else -100 for t, o in zip(ids, offsets, strict=False)
        ]
        out.append([*labels, -100])  # the end-of-document token after a chat row is not the assistant's
    return out


def pack(
    seqs: Sequence[Sequence[int]],
    seq_len: int,
    pad_id: int,
    open_bins: int = 16,
    labels: Sequence[Sequence[int]] | None = None,
) -> tuple[Any, Any]:
    """First-fit packing of whole sequences into windows of `seq_len` (a sequence longer than a window is
    cut into window-sized pieces), keeping a grounded QA row whole with its passages where it fits.
    `labels` (same shapes as `seqs`, -100 for tokens without loss) default to the ids themselves.

    Returns (input_ids, labels), int64 arrays of shape [windows, seq_len]; padding is labelled -100.
    """
    label_seqs = seqs if labels is None else labels
    pieces: list[tuple[Sequence[int], Sequence[int]]] = []
    for s, lab in zip(seqs, label_seqs, strict=True):
        if len(s) != len(lab):
            raise ValueError("labels must have the shape of the sequences")
        pieces.extend((s[i : i + seq_len], lab[i : i + seq_len]) for i in range(0, len(s), seq_len))
    bins: list[tuple[list[int], list[int]]] = []
    open_idx: list[int] = []  # the last few bins that still have room
    for piece, piece_labels in pieces:
        target = next((b for b in open_idx if len(bins[b][0]) + len(piece) <= seq_len), None)
        if target is None:
            bins.append(([], []))
            target = len(bins) - 1
            open_idx.append(target)
            if len(open_idx) > open_bins:
                open_idx.pop(0)
        bins[target][0].extend(piece)
        bins[target][1].extend(piece_labels)
        if len(bins[target][0]) == seq_len:
            open_idx.remove(target)
    ids = np.full((len(bins), seq_len), pad_id, dtype=np.int64)
    out_labels = np.full((len(bins), seq_len), -100, dtype=np.int64)
    for i, (b, lab) in enumerate(bins):
        ids[i, : len(b)] = b
        out_labels[i, : len(lab)] = lab
    return ids, out_labels


class Windows:
    """Packed windows that batches are drawn from: epoch after epoch, each in its own seeded order."""

    def __init__(self, input_ids: Any, labels: Any, seed: int = 0) -> None:
        if len(input_ids) == 0:
            raise ValueError("no training windows: the data is empty")
        self.input_ids = input_ids
        self.labels = labels
        self.seed = seed
        self._perms: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def tokens(self) -> int:
        return int((self.labels != -100).sum())

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(len(self))
        return self._perms[epoch]

    def indices(self, start: int, count: int) -> np.ndarray:
        """Window indices at global positions [start, start + count) of the endless shuffled stream."""
        n = len(self)
        return np.array([self._perm(k // n)[k % n] for k in range(start, start + count)], dtype=np.int64)

    def batch(self, step: int, per_rank: int, rank: int = 0, world: int = 1) -> tuple[Any, Any]:
        """The `per_rank` windows of `rank` at optimizer micro-step `step` (numpy input_ids, labels)."""
        idx = self.indices((step * world + rank) * per_rank, per_rank)
        return self.input_ids[idx], self.labels[idx]

    def ordered_batches(self, size: int, limit: int | None = None) -> Iterable[tuple[Any, Any]]:
        """Held-out evaluation: windows in order, at most `limit` batches."""
        n_batches = math.ceil(len(self) / size)
        for b in range(n_batches if limit is None else min(limit, n_batches)):
            yield self.input_ids[b * size : (b + 1) * size], self.labels[b * size : (b + 1) * size]
