"""`python -m eval compare RUN_A RUN_B`: what changed between two runs.

Per strategy and metric: the value in each run, the delta (B − A) and, for rates with a 95% bootstrap
interval, whether the two intervals overlap (overlapping: the change may be noise). Then the questions
whose answers flipped between right and wrong, per strategy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from core.settings import Settings
from eval.report import CATEGORY_ORDER
from eval.runner import latest_rows, read_results

# (label, path into a strategy's summary); rates with a CI are dicts {value, ci95, n}.
METRICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("accuracy", ("accuracy",)),
    *((f"accuracy {c}", ("by_category", c)) for c in CATEGORY_ORDER),
    ("exact_match", ("exact_match",)),
    ("f1", ("f1",)),
    ("stale_rate_updated", ("stale_rate_updated",)),
    ("abstention_accuracy", ("abstention_accuracy",)),
    ("truthfulness", ("truthfulness",)),
    ("wrongly_abstained", ("wrongly_abstained",)),
    ("recall_at_k", ("recall_at_k",)),
    ("coverage", ("coverage",)),
    ("latency p50 ms", ("latency_ms", "p50")),
    ("latency p95 ms", ("latency_ms", "p95")),
    ("prompt_tokens", ("prompt_tokens",)),
    ("completion_tokens", ("completion_tokens",)),
)


def resolve_run(spec: str, settings: Settings | None = None) -> Path:
    """A report folder, or a run id under $KC_HOME/reports."""
    settings = settings or Settings()
    for candidate in (Path(spec).expanduser(), settings.resolved_home / "reports" / spec):
        if (candidate / "summary.json").is_file():
            return candidate
    raise ValueError(
        f"run {spec!r}: no summary.json in {spec} nor in {settings.resolved_home / 'reports' / spec}"
    )


def _get(summary: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = summary
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _overlap(a: Any, b: Any) -> bool | None:
    if not (isinstance(a, dict) and isinstance(b, dict)):
        return None
    (alo, ahi), (blo, bhi) = a["ci95"], b["ci95"]
    return bool(alo <= bhi and blo <= ahi)


def _value(x: Any) -> float | None:
    if isinstance(x, dict):
        return float(x["value"])
    return None if x is None else float(x)


def compare_runs(dir_a: Path, dir_b: Path) -> dict[str, Any]:
    a = json.loads((dir_a / "summary.json").read_text())
    b = json.loads((dir_b / "summary.json").read_text())
    sa, sb = a["strategies"], b["strategies"]
    changes: list[dict[str, Any]] = []
    for strategy in [*sa, *(s for s in sb if s not in sa)]:
        if strategy not in sa or strategy not in sb:
            changes.append({"strategy": strategy, "only_in": "a" if strategy in sa else "b"})
            continue
        for label, path in METRICS:
            xa, xb = _get(sa[strategy], path), _get(sb[strategy], path)
            va, vb = _value(xa), _value(xb)
            if va is None or vb is None:  # a category or metric one of the runs does not have
                continue
            changes.append({
                "strategy": strategy, "metric": label, "a": va, "b": vb,
                "delta": round(vb - va, 4),
                "ci_overlap": _overlap(xa, xb),
            })  # fmt: skip
    rows_a = {(r.question_id, r.strategy): r for r in latest_rows(read_results(dir_a / "results.jsonl"))
              if r.variant is None}  # fmt: skip
    rows_b = {(r.question_id, r.strategy): r for r in latest_rows(read_results(dir_b / "results.jsonl"))
              if r.variant is None}  # fmt: skip
    flips = [
        {
            "question_id": qid,
            "strategy": strategy,
            "category": rb.category,
            "question": rb.question,
            "now": "right" if rb.correct else "wrong",
            "answer_a": rows_a[qid, strategy].answer,
            "answer_b": rb.answer,
            "answers": rb.answers,
        }
        for (qid, strategy), rb in sorted(rows_b.items())
        if (qid, strategy) in rows_a and rows_a[qid, strategy].correct != rb.correct
    ]
    return {
        "a": {"dir": str(dir_a), "run_id": a.get("run_id"), "model": a.get("model")},
        "b": {"dir": str(dir_b), "run_id": b.get("run_id"), "model": b.get("model")},
        "common_answers": len(rows_a.keys() & rows_b.keys()),
        "changes": changes,
        "flips": flips,
    }


def _fmt(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}".rstrip("0").rstrip(".") if abs(x) < 100 else f"{x:.0f}"


def format_comparison(result: dict[str, Any], max_flips: int = 40) -> str:
    a, b = result["a"], result["b"]
    lines = [
        f"A: {a['run_id']} ({a['model']})",
        f"B: {b['run_id']} ({b['model']})",
        "",
        "| strategy | metric | A | B | B − A | 95% CIs overlap |",
        "|---|---|---|---|---|---|",
    ]
    for c in result["changes"]:
        if "only_in" in c:
            lines.append(f"| {c['strategy']} | only in run {c['only_in'].upper()} | | | | |")
            continue
        overlap = {True: "yes", False: "NO", None: ""}[c["ci_overlap"]]
        delta = f"{c['delta']:+.3f}"
        lines.append(
            f"| {c['strategy']} | {c['metric']} | {_fmt(c['a'])} | {_fmt(c['b'])} | {delta} | {overlap} |"
        )
    flips = result["flips"]
    up = sum(f["now"] == "right" for f in flips)
    lines += ["", f"{len(flips)} answers flipped of {result['common_answers']} in both runs: "
              f"{up} wrong -> right, {len(flips) - up} right -> wrong"]  # fmt: skip
    for f in flips[:max_flips]:
        arrow = "wrong -> right" if f["now"] == "right" else "right -> wrong"
        lines.append(
            f"  {f['strategy']:<12} {f['question_id']:<18} {arrow}: {f['answer_a']!r} -> {f['answer_b']!r}"
        )
    if len(flips) > max_flips:
        lines.append(f"  ... and {len(flips) - max_flips} more (--json lists them all)")
    return "\n".join(lines)
