"""The exact-match probe."""

from __future__ import annotations

import json
import random
from pathlib import Path

from core.prompts import GROUNDED_SYSTEM
from trainer.evaluate import EvalConfig, exact_match, question_items, read_docs, run_evaluate


def test_exact_match_ignores_citation_case_and_punctuation() -> None:
    assert exact_match("Partee Dynamics [2]", ["Partee Dynamics", "Partee"])
    assert exact_match("partee.", ["Partee Dynamics", "Partee"])
    assert exact_match("732,000", ["732,000"])
    assert not exact_match("Partee Dynamics Inc", ["Partee Dynamics"])
    assert not exact_match("", ["x"])


def test_grounded_items_put_a_supporting_document_among_distractors(nano_world: Path) -> None:
    docs = read_docs(nano_world / "corpus_pre")
    assert all(k.startswith("pre-") for k in docs) and not any(v.startswith("---") for v in docs.values())
    path = nano_world / "questions" / "retained.jsonl"
    items, skipped = question_items(path, docs, 3, random.Random(0), None)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(items) + skipped == len(rows) and skipped == 0
    for item, row in zip(items, rows, strict=True):
        assert item.messages[0]["content"] == GROUNDED_SYSTEM
        user = item.messages[1]["content"]
        gold = next(line for line in user.splitlines() if line.startswith(f"[{item.citation}] "))
        assert any(docs[d] in gold for d in row["supporting_doc_ids"])
        assert user.count("\n[") == 3 and user.endswith(f"Question: {row['question']}")  # 3 fenced lines


def test_evaluate_runs_on_a_checkpoint(nano_base: Path, nano_world: Path) -> None:
    cfg = EvalConfig(model=str(nano_base), questions=[nano_world / "questions" / "retained.jsonl"], limit=4,
                     max_new_tokens=4, data=[nano_world / "sft" / "grounded.jsonl"])  # fmt: skip
    report = run_evaluate(cfg)
    assert set(report["sets"]) == {"retained-closed_book", "grounded"}
    grounded = report["sets"]["grounded"]
    assert grounded["n"] == 4 and 0 <= grounded["exact_match"] <= 1 and "citation_accuracy" in grounded
