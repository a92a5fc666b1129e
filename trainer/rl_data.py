"""RL's rows and held-out sets: the training rows (`{prompt, answers, kind, passages, gold_passage}`), the
validation items that choose the kept step and the test items that only measure it."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.jsonl import iter_jsonl
from trainer.data import JSONL_SUFFIXES, expand_paths
from trainer.evaluate import Item, question_items, read_docs

if TYPE_CHECKING:
    from trainer.rl import RLConfig

KINDS = ("grounded", "closed_book", "abstain")


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
