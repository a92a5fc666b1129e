"""The tables of an eval report as cells, written as Markdown (report.md, `python -m eval` on the
terminal) or as HTML (service/report_pages.py): the one place where a summary.json becomes a table.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

from service.report_plots import CATEGORY_ORDER, ORACLE

SUMMARY_NOTE = (
    "Accuracy: the answer states an alias of the gold answer (unanswerable: the model abstains). "
    "Brackets: 95% bootstrap confidence interval. stale: share of `updated` questions answered with "
    "the pre-cutoff value. abstain: abstention accuracy on `unanswerable`. wrongly abstained: share of "
    "the answerable questions (all but `unanswerable`) the strategy abstained on. truthfulness: CRAG's "
    "score, +1 a right answer, 0 an abstention, -1 a wrong one, averaged over the questions (from -1 "
    "to 1; positive: more right than wrong). recall@k: supporting documents (those in the index) "
    "among the retrieved passages' documents."
)


@dataclass
class Table:
    head: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.head) + " |", "|" + "---|" * len(self.head)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in self.rows])

    def html(self) -> str:
        th = "".join(f"<th>{html.escape(c)}</th>" for c in self.head)
        trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self.rows)
        return f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table></div>'


def fmt_rate(rate: dict[str, Any] | None) -> str:
    if not rate or not rate.get("n"):
        return "–"
    lo, hi = rate["ci95"]
    return f"{rate['value']:.2f} [{lo:.2f}, {hi:.2f}]"


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "–" if value is None else format(value, fmt)


def _value(rate: dict[str, Any] | None) -> str:
    return f"{rate['value']:.2f}" if rate else "–"


def _categories(summary: dict[str, Any]) -> list[str]:
    return [c for c in CATEGORY_ORDER if any(c in s["by_category"] for s in summary.values())]


def summary_table(summary: dict[str, Any]) -> Table:
    """One row per strategy: accuracy and truthfulness with their CIs, the per-category accuracy, the
    abstention rates, retrieval, latency and tokens."""
    cats = _categories(summary)
    head = ["strategy", "accuracy [95% CI]", "truthfulness [95% CI]", "EM", "F1", *cats, "stale", "abstain",
            "wrongly abstained", "recall@k", "coverage", "p50 ms", "p95 ms", "prompt tok",
            "completion tok"]  # fmt: skip
    rows = [
        [
            name,
            fmt_rate(s["accuracy"]),
            fmt_rate(s.get("truthfulness")),
            _num(s.get("exact_match")),
            _num(s.get("f1")),
            *(_value(s["by_category"].get(c)) for c in cats),
            _value(s["stale_rate_updated"]),
            _value(s.get("abstention_accuracy")),
            _value(s.get("wrongly_abstained")),
            _num(s["recall_at_k"]),
            _num(s.get("coverage")),
            f"{s['latency_ms']['p50']:.0f}",
            f"{s['latency_ms']['p95']:.0f}",
            f"{s['prompt_tokens']:.0f}",
            f"{s['completion_tokens']:.1f}",
        ]
        for name, s in summary.items()
    ]
    return Table(head, rows)


def category_table(summary: dict[str, Any]) -> Table:
    """Accuracy per question category with its CI and the number of questions."""
    cats = _categories(summary)
    rows = []
    for name, s in summary.items():
        cells = [s["by_category"].get(c) for c in cats]
        rows.append([name, *(f"{fmt_rate(cell)} n={cell['n']}" if cell else "–" for cell in cells)])
    return Table(["strategy", *cats], rows)


def cost_table(summary: dict[str, Any], costs: dict[str, dict[str, Any]]) -> Table:
    """Accuracy beside what it cost: tokens per answer (prompt + completion, every try of auto's route
    included), the distance to the best single strategy and the frontier (eval.oracle.frontier, in
    `costs`), and once, to absorb the new documents; auto's routes and the oracle router's picks."""
    best = next((c["vs_best"]["best"] for c in costs.values() if c.get("vs_best")), None)
    head = ["strategy", "accuracy [95% CI]", "tokens / answer", "prompt tok / question",
            f"Δ accuracy vs {best or 'best'}", f"tokens vs {best or 'best'}", "frontier", "absorb once (s)",
            "how", "forgetting (retained)", "routes"]  # fmt: skip
    rows = []
    for name, c in costs.items():
        s = summary[name]
        seconds = c.get("absorb_seconds")
        vs = c.get("vs_best") or {}
        share = vs.get("token_share")
        delta = "–"
        if vs:
            delta = f"{vs['accuracy_delta']:+.2f}" + ("" if vs["ci_overlap"] else " (CIs apart)")
        tokens = c.get("tokens", s["prompt_tokens"] + s["completion_tokens"])
        routes = " · ".join(f"{route} {n}" for route, n in (s.get("routes") or {}).items())
        rows.append(
            [
                name,
                fmt_rate(s["accuracy"]),
                f"{tokens:.0f}",
                f"{c['prompt_tokens']:.0f}",
                delta,
                "–" if share is None else f"{share:.0%}",
                "yes" if c.get("frontier") else ("ceiling" if name == ORACLE else "–"),
                "not recorded" if seconds is None else f"{seconds:.1f}",
                c.get("how", ""),
                _num(c.get("forgetting_retained"), "+.2f"),
                routes or "–",
            ]
        )
    return Table(head, rows)


def sweep_table(sweep: dict[str, dict[str, dict[str, Any]]]) -> Table:
    """The long-context sweep: accuracy per number of documents asked and position of the answer."""
    positions = sorted({p for cells in sweep.values() for p in cells}, key=float)
    head = ["documents asked", *(f"answer at {p}" for p in positions), "docs in window (mean)"]
    rows = []
    for n, cells in sweep.items():
        window = sum(c["docs_in_window"] for c in cells.values()) / max(len(cells), 1)
        rows.append([n, *(fmt_rate(cells.get(p)) for p in positions), f"{window:.1f}"])
    return Table(head, rows)


def sections(full: dict[str, Any]) -> list[tuple[str, Table, str]]:
    """The tables after the summary, each as (heading, table, note): report.md and the pages alike."""
    out: list[tuple[str, Table, str]] = []
    summary, costs, sweep = full["strategies"], full.get("costs"), full.get("lc_sweep_results")
    if costs:
        out.append(("Cost of absorbing the new documents", cost_table(summary, costs),
                    "Forgetting: closed_book's accuracy on `retained` minus cpt's, in this run "
                    "(positive: CPT lost old knowledge)."))  # fmt: skip
    if sweep:
        out.append(("Long context: answer position and documents in the window", sweep_table(sweep),
                    "Each question is asked with its supporting document placed at the position among "
                    "the newest other documents; the window may hold fewer than asked."))  # fmt: skip
    return out
