from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from eval.oracle import frontier, oracle_rows
from eval.report import ResultRow, compare_summaries, cost_table, summarize, write_report
from eval.runner import absorb_costs

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
    assert set(s) == {"closed_book", "rag", "long_context", "oracle"}  # the oracle router beside them
    for name in ("closed_book", "rag", "long_context"):
        row = s[name]
        exact = sum(r.correct for r in rows if r.strategy == name) / 40
        assert row["accuracy"]["value"] == pytest.approx(exact)
        lo, hi = row["accuracy"]["ci95"]
        assert lo <= exact <= hi
        assert set(row["by_category"]) == {"retained", "new", "updated", "unanswerable", "multi_hop"}
    assert s["rag"]["recall_at_k"] == 1.0 and s["closed_book"]["recall_at_k"] is None
    assert s["rag"]["latency_ms"]["p50"] == pytest.approx(129.5)


def hand_made(strategy: str, outcomes: str) -> list[ResultRow]:
    """One row per letter: r right, a abstained, w wrong; upper case on an `unanswerable` question (where
    R is a right abstention)."""
    rows = []
    for i, o in enumerate(outcomes):
        unanswerable = o.isupper()
        rows.append(
            ResultRow(
                question_id=f"q{i}", category="unanswerable" if unanswerable else "new", question=f"Q{i}?",
                strategy=strategy, answer="x", correct=o in "rR", exact_match=o in "rR", f1=float(o in "rR"),
                abstained=o in "aR", stale=False,
            )
        )  # fmt: skip
    return rows


def test_truthfulness_and_wrongly_abstained() -> None:
    # rag: 4 right, 3 abstained (2 on answerable questions), 1 wrong; closed_book guesses on everything.
    rows = hand_made("rag", "rrraawRW") + hand_made("closed_book", "rwwwwwWW")
    s = summarize(rows)
    rag, cb = s["rag"], s["closed_book"]
    assert rag["truthfulness"]["value"] == pytest.approx((3 + 1 - 1 - 1) / 8)
    assert cb["truthfulness"]["value"] == pytest.approx((1 - 7) / 8)
    assert rag["accuracy"]["value"] == pytest.approx(4 / 8)
    lo, hi = rag["truthfulness"]["ci95"]
    assert -1 <= lo <= rag["truthfulness"]["value"] <= hi <= 1 and rag["truthfulness"]["n"] == 8
    # Of the six answerable questions, rag declined two; an abstention on `unanswerable` is not counted.
    assert (
        rag["wrongly_abstained"]["value"] == pytest.approx(2 / 6, abs=1e-4)
        and rag["wrongly_abstained"]["n"] == 6
    )
    assert cb["wrongly_abstained"]["value"] == 0.0
    assert summarize(hand_made("rag", "RW"))["rag"]["wrongly_abstained"] is None  # nothing answerable


def test_report_tables_show_truthfulness_and_wrongly_abstained(tmp_path: Path) -> None:
    write_report(tmp_path, hand_made("rag", "rrraawRW"), {"run_id": "r1", "model": "nano"})
    summary = json.loads((tmp_path / "summary.json").read_text())["strategies"]["rag"]
    assert summary["truthfulness"]["value"] == 0.25 and summary["wrongly_abstained"]["value"] == 0.3333
    md = (tmp_path / "report.md").read_text()
    lines = md.splitlines()
    head = next(line for line in lines if line.startswith("| strategy"))
    row = next(line for line in lines if line.startswith("| rag "))
    cells = dict(zip(*([c.strip() for c in line.strip("|").split("|")] for line in (head, row)), strict=True))
    assert cells["truthfulness [95% CI]"].startswith("0.25 [") and cells["wrongly abstained"] == "0.33"
    page = (tmp_path / "report.html").read_text()
    assert "<th>truthfulness [95% CI]</th>" in page and "<th>wrongly abstained</th>" in page
    assert "<td>0.33</td>" in page


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


def answered(strategy: str, question: int, correct: bool, tokens: int, **extra: object) -> ResultRow:
    return ResultRow(
        question_id=f"q{question}", category="new", question=f"Q{question}?", strategy=strategy, answer="x",
        correct=correct, exact_match=correct, f1=float(correct), abstained=False, stale=False,
        prompt_tokens=tokens - 5 if tokens else 0, completion_tokens=5 if tokens else 0, **extra,
    )  # fmt: skip


def test_oracle_router_takes_the_cheapest_right_strategy_and_auto_is_placed_on_the_frontier() -> None:
    table = {  # question: (closed_book, rag, long_context) as (right?, tokens)
        0: ((True, 25), (True, 300), (True, 900)),  # all right: the cheapest, closed_book
        1: ((False, 25), (True, 300), (True, 900)),  # rag
        2: ((False, 25), (False, 300), (True, 900)),  # only long context
        3: ((False, 25), (False, 0), (False, 900)),  # none right: the cheapest answer, rag's gate (free)
    }
    names = ("closed_book", "rag", "long_context")
    rows = [answered(name, q, ok, tok) for q, outcomes in table.items()
            for name, (ok, tok) in zip(names, outcomes, strict=True)]  # fmt: skip
    route = {"chosen": "rag", "tried": [], "reason": "r"}
    rows += [answered("auto", q, q != 3, 300, route=route) for q in table]
    # Not routable: the yardstick, another run's answers, a failed answer, a sweep variant.
    rows += [answered("naive_rag", 2, False, 1000), answered("rag (θ0)", 2, True, 1)]
    rows += [
        answered("closed_book", 4, False, 1, error="boom"),
        answered("closed_book", 2, True, 1, variant="v"),
    ]
    oracle = {r.question_id: r for r in oracle_rows(rows)}
    assert {q: (r.route or {})["chosen"] for q, r in oracle.items()} == {
        "q0": "closed_book", "q1": "rag", "q2": "long_context", "q3": "rag"
    }  # fmt: skip
    assert [r.correct for r in oracle.values()] == [True, True, True, False]
    assert oracle_rows([r for r in rows if r.strategy == "rag"]) == []  # one strategy: nothing to route

    summary = summarize(rows)
    oracle_summary = summary["oracle"]
    assert oracle_summary["accuracy"]["value"] == 0.75
    assert oracle_summary["tokens"] == pytest.approx((25 + 300 + 900 + 0) / 4, abs=0.1)
    assert summary["auto"]["routes"] == {"rag": 4} and "routes" not in summary["rag"]
    front = frontier(summary)
    best = front["auto"]["vs_best"]  # long context is the most accurate single strategy (0.75)
    assert best["best"] == "long_context" and best["accuracy_delta"] == 0 and best["ci_overlap"]
    assert best["token_share"] == pytest.approx(300 / 900, abs=1e-4)
    # auto (0.75 at 300 tokens) retires long context (0.75 at 900) and naive_rag (0 at 1000).
    assert {n for n, f in front.items() if f["frontier"]} == {"closed_book", "rag", "auto"}
    assert front["rag"]["vs_best"]["accuracy_delta"] == -0.25 and front["rag"]["tokens"] == 225
    costs = absorb_costs(summary, 10.0, None)
    assert costs["auto"]["absorb_seconds"] == 10.0 and costs["auto"]["tokens"] == 300
    md = cost_table(summary, costs)
    assert "| Δ accuracy vs long_context |" in md and "ceiling" in md and "| rag 4 |" in md
