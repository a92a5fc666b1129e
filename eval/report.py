"""Turn per-question results into the comparison a person reads: summary.json, report.md and a
self-contained report.html with plots.

One results row is one question asked with one strategy (see `ResultRow`); everything here is computed
from those rows, so a report can be rebuilt from `results.jsonl` alone. The tables' cells, report.html and
its plots come from service/report_pages.py (with report_tables.py and report_plots.py), the one renderer
that the gateway's `/reports` pages use too.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from eval.metrics import bootstrap_ci, mean, percentile, truthfulness
from eval.oracle import ORACLE, oracle_rows
from service import report_tables
from service.report_pages import render_report
from service.report_plots import CATEGORY_ORDER
from service.report_tables import SUMMARY_NOTE, Table

STRATEGY_ORDER = ("closed_book", "rag", "naive_rag", "long_context", "cpt", "auto", ORACLE)

# Context, not a comparison: another model, another dataset (Ovadia et al. 2024, "Fine-Tuning or
# Retrieval? Comparing Knowledge Injection in LLMs", Mistral-7B on current-events questions).
REFERENCE_SOURCE = "Ovadia et al. 2024, Mistral-7B on current-events questions (another model and dataset)"
REFERENCE_ROWS = (
    ("base model (closed book)", 0.481),
    ("base + RAG", 0.875),
    ("fine-tuned on the documents", 0.504),
    ("fine-tuned on paraphrases", 0.588),
)


class ResultRow(BaseModel):
    """One question × one strategy, as written to results.jsonl."""

    question_id: str
    category: str
    question: str
    strategy: str
    variant: str | None = Field(
        None, description="a variant of the strategy (long_context sweep: n=8,pos=0.5)"
    )
    answer: str
    correct: bool
    exact_match: bool
    f1: float
    abstained: bool
    stale: bool
    answers: list[str] = Field(default_factory=list)
    citations: list[dict[str, Any]] = Field(default_factory=list)
    recall_at_k: float | None = None
    coverage: float | None = Field(None, description="long_context: share of the corpus in the window")
    docs_in_window: int | None = None
    answer_position: float | None = Field(None, description="long_context: 0 = start of window, 1 = end")
    answer_in_window: bool | None = Field(None, description="long_context: a supporting document was packed")
    retrieved: list[str] = Field(default_factory=list, description="sources of the passages in the prompt")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retrieve_ms: float = 0.0
    generate_ms: float = 0.0
    checkpoint_id: str | None = None
    abstain_reason: str | None = None
    model_text: str | None = Field(None, description="the model's text when the gateway replaced it")
    route: dict[str, Any] | None = Field(
        None, description="auto (and the oracle router): the route taken, as the gateway's `route`"
    )
    error: str | None = None

    @property
    def total_ms(self) -> float:
        return self.retrieve_ms + self.generate_ms


def _mean_ci(values: Sequence[float]) -> dict[str, Any]:
    lo, hi = bootstrap_ci(values)
    return {"value": round(mean(values), 4), "ci95": [round(lo, 4), round(hi, 4)], "n": len(values)}


def _rate(rows: Sequence[ResultRow], attr: str) -> dict[str, Any]:
    return _mean_ci([float(getattr(r, attr)) for r in rows])


def summarize(rows: Iterable[ResultRow]) -> dict[str, Any]:
    """Per strategy: accuracy and truthfulness (with 95% bootstrap CIs) overall, accuracy per category, EM,
    F1, stale rate on `updated`, abstention accuracy on `unanswerable` and the share of the answerable
    questions wrongly abstained on, retrieval recall, coverage, latency, tokens (prompt, completion and
    their sum per answer), and for auto the routes it chose. With two or more of the routable strategies
    in the rows, the oracle router (eval.oracle) is summarised beside them as `oracle`."""
    rows = list(rows)
    by_strategy: dict[str, list[ResultRow]] = {}
    for row in [*rows, *oracle_rows(rows)]:
        if row.variant is None:  # variants (the long_context sweep) have their own table
            by_strategy.setdefault(row.strategy, []).append(row)
    out: dict[str, Any] = {}
    for strategy in sorted(by_strategy, key=_strategy_rank):
        srows = by_strategy[strategy]
        cats = {c: [r for r in srows if r.category == c] for c in CATEGORY_ORDER}
        answerable = [r for r in srows if r.category != "unanswerable"]
        totals = [r.total_ms for r in srows]
        recalls = [r.recall_at_k for r in srows if r.recall_at_k is not None]
        coverages = [r.coverage for r in srows if r.coverage is not None]
        windows = [r.docs_in_window for r in srows if r.docs_in_window is not None]
        in_window = [r.answer_in_window for r in srows if r.answer_in_window is not None]
        out[strategy] = {
            "questions": len(srows),
            "errors": sum(r.error is not None for r in srows),
            "accuracy": _rate(srows, "correct"),
            "truthfulness": _mean_ci([float(truthfulness(r.correct, r.abstained)) for r in srows]),
            "exact_match": _rate(srows, "exact_match")["value"],
            "f1": round(mean([r.f1 for r in srows]), 4),
            "by_category": {c: _rate(cr, "correct") for c, cr in cats.items() if cr},
            "stale_rate_updated": _rate(cats["updated"], "stale") if cats["updated"] else None,
            "abstention_accuracy": _rate(cats["unanswerable"], "abstained") if cats["unanswerable"] else None,
            "wrongly_abstained": _rate(answerable, "abstained") if answerable else None,
            "recall_at_k": round(mean(recalls), 4) if recalls else None,
            "coverage": round(mean(coverages), 4) if coverages else None,
            "docs_in_window": round(mean(windows), 2) if windows else None,
            "answer_in_window": round(mean([float(x) for x in in_window]), 4) if in_window else None,
            "latency_ms": {"p50": round(percentile(totals, 50), 1), "p95": round(percentile(totals, 95), 1)},
            "prompt_tokens": round(mean([r.prompt_tokens for r in srows]), 1),
            "completion_tokens": round(mean([r.completion_tokens for r in srows]), 1),
            "tokens": round(mean([r.prompt_tokens + r.completion_tokens for r in srows]), 1),
        }
        routes = Counter(str(r.route["chosen"]) for r in srows if r.route)
        if routes:
            out[strategy]["routes"] = dict(sorted(routes.items(), key=lambda kv: -kv[1]))
    return out


def _strategy_rank(name: str) -> tuple[int, str]:
    return (STRATEGY_ORDER.index(name) if name in STRATEGY_ORDER else len(STRATEGY_ORDER), name)


def markdown_table(summary: dict[str, Any]) -> str:
    return report_tables.summary_table(summary).markdown()


def cost_table(summary: dict[str, Any], costs: dict[str, dict[str, Any]]) -> str:
    """Accuracy beside what it cost (service.report_tables.cost_table), as Markdown."""
    return report_tables.cost_table(summary, costs).markdown()


def sweep_summary(rows: Iterable[ResultRow]) -> dict[str, dict[str, dict[str, Any]]]:
    """long_context sweep rows (variant "n=8,pos=0.5") -> {n: {pos: accuracy with CI}}, plus where the
    answer actually was (the window may hold fewer documents than asked)."""
    groups: dict[tuple[int, float], list[ResultRow]] = {}
    for r in rows:
        if r.strategy == "long_context" and r.variant and r.variant.startswith("n="):
            n_part, pos_part = (part.split("=")[1] for part in r.variant.split(","))
            groups.setdefault((int(n_part), float(pos_part)), []).append(r)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (n, pos), rs in sorted(groups.items()):
        cell = _rate(rs, "correct")
        cell["docs_in_window"] = round(mean([float(r.docs_in_window or 0) for r in rs]), 2)
        cell["answer_in_window"] = round(mean([float(bool(r.answer_in_window)) for r in rs]), 4)
        out.setdefault(str(n), {})[f"{pos:g}"] = cell
    return out


def _reference() -> Table:
    return Table(["setting", "accuracy"], [[name, f"{value:.3f}"] for name, value in REFERENCE_ROWS])


CostsFn = Callable[[dict[str, Any]], dict[str, dict[str, Any]]]


def write_report(
    run_dir: Path, rows: Sequence[ResultRow], meta: dict[str, Any], costs: CostsFn | None = None
) -> dict[str, Any]:
    """Write summary.json, report.md and report.html into run_dir; return the summary.json content.

    `costs` turns the per-strategy summary into the cost table (eval.runner.absorb_costs)."""
    summary = summarize(rows)
    cost = costs(summary) if costs else {}
    sweep = sweep_summary(rows)
    full = {**meta, "strategies": summary, "costs": cost, "lc_sweep_results": sweep}
    (run_dir / "summary.json").write_text(json.dumps(full, indent=2, default=str))
    title = f"keepcurrent eval — {meta.get('run_id', run_dir.name)}"
    skipped = meta.get("skipped") or {}
    md = [
        f"# {title}",
        "",
        f"Model: `{meta.get('model', '?')}` · index version {meta.get('index_version', '?')} · "
        f"{len({r.question_id for r in rows})} questions · {meta.get('mode', 'in-process')}",
        "",
        markdown_table(summary),
        "",
        SUMMARY_NOTE,
        "",
    ]
    md += [f"- skipped `{name}`: {why}" for name, why in skipped.items()] + ([""] if skipped else [])
    for heading, table, note in report_tables.sections(full):
        md += [f"## {heading}", "", table.markdown(), "", note, ""]
    md += [f"Published context — {REFERENCE_SOURCE}:", "", _reference().markdown(), ""]
    (run_dir / "report.md").write_text("\n".join(md))
    published = ("Published context", _reference(), REFERENCE_SOURCE)
    page = render_report(full, [r.model_dump(mode="json") for r in rows], extra=[published])
    (run_dir / "report.html").write_text(page)
    return full


def compare_summaries(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Accuracy deltas (b − a) per strategy and category, for `python -m eval compare RUN_A RUN_B`."""
    out = []
    for strategy in sorted(set(a) | set(b)):
        sa, sb = a.get(strategy), b.get(strategy)
        if sa is None or sb is None:
            out.append({"strategy": strategy, "only_in": "b" if sa is None else "a"})
            continue
        row: dict[str, Any] = {
            "strategy": strategy,
            "accuracy": [sa["accuracy"]["value"], sb["accuracy"]["value"]],
            "delta": round(sb["accuracy"]["value"] - sa["accuracy"]["value"], 4),
        }
        for c in CATEGORY_ORDER:
            if c in sa["by_category"] and c in sb["by_category"]:
                row[c] = round(sb["by_category"][c]["value"] - sa["by_category"][c]["value"], 4)
        out.append(row)
    return out
