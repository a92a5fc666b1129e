from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from eval.report import ResultRow, compare_summaries, summarize, write_report

PROMPT_TOKENS = {"closed_book": 20, "rag": 300, "long_context": 900, "cpt": 20}


def make_rows(accuracy: dict[str, float], n: int = 40, seed: int = 0) -> list[ResultRow]:
    rng = random.Random(seed)
    cats = ["retained", "new", "updated", "unanswerable", "multi_hop"]
    rows = []
    for strategy, p in accuracy.items():
        for i in range(n):
            correct = rng.random() < p
            cat = cats[i % len(cats)]
            rows.append(
                ResultRow(
                    question_id=f"q{i}",
                    category=cat,
                    question=f"Q{i}?",
                    strategy=strategy,
                    answer="x",
                    correct=correct,
                    exact_match=correct,
                    f1=float(correct),
                    abstained=cat == "unanswerable" and correct,
                    stale=cat == "updated" and not correct,
                    recall_at_k=1.0 if strategy == "rag" else None,
                    answer_position=(i % 10) / 10 if strategy == "long_context" else None,
                    prompt_tokens=PROMPT_TOKENS[strategy],
                    completion_tokens=5,
                    retrieve_ms=10.0 if strategy == "rag" else 0.0,
                    generate_ms=100.0 + i,
                )
            )
    return rows


def test_summary_counts_rates_and_intervals() -> None:
    rows = make_rows({"closed_book": 0.2, "rag": 0.8, "long_context": 0.5})
    s = summarize(rows)
    assert set(s) == {"closed_book", "rag", "long_context"}
    for name, row in s.items():
        exact = sum(r.correct for r in rows if r.strategy == name) / 40
        assert row["accuracy"]["value"] == pytest.approx(exact)
        lo, hi = row["accuracy"]["ci95"]
        assert lo <= exact <= hi
        assert set(row["by_category"]) == {"retained", "new", "updated", "unanswerable", "multi_hop"}
    assert s["rag"]["recall_at_k"] == 1.0 and s["closed_book"]["recall_at_k"] is None
    assert s["rag"]["latency_ms"]["p50"] == pytest.approx(129.5)


def test_write_report_produces_all_files(tmp_path: Path) -> None:
    rows = make_rows({"closed_book": 0.2, "rag": 0.8, "long_context": 0.5})
    write_report(tmp_path, rows, {"run_id": "r1", "model": "nano", "index_version": 3})
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["model"] == "nano" and "rag" in summary["strategies"]
    md = (tmp_path / "report.md").read_text()
    assert "| rag |" in md and "Ovadia" in md and "0.875" in md
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3  # categories, cost, long-context position
    assert "<script" not in page  # self-contained and static


def test_compare_reports_deltas() -> None:
    a = summarize(make_rows({"rag": 0.5}, seed=1))
    b = summarize(make_rows({"rag": 0.9, "cpt": 0.4}, seed=1))
    rows = {r["strategy"]: r for r in compare_summaries(a, b)}
    assert rows["rag"]["delta"] == pytest.approx(
        b["rag"]["accuracy"]["value"] - a["rag"]["accuracy"]["value"]
    )
    assert rows["cpt"] == {"strategy": "cpt", "only_in": "b"}
