"""Turn per-question results into the comparison a person reads: summary.json, report.md and a
self-contained report.html with plots.

One results row is one question asked with one strategy (see `ResultRow`); everything here is computed
from those rows, so a report can be rebuilt from `results.jsonl` alone.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from eval.metrics import bootstrap_ci, mean, percentile

CATEGORY_ORDER = ("retained", "new", "updated", "unanswerable", "multi_hop")

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
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retrieve_ms: float = 0.0
    generate_ms: float = 0.0
    error: str | None = None

    @property
    def total_ms(self) -> float:
        return self.retrieve_ms + self.generate_ms


def _rate(rows: Sequence[ResultRow], attr: str) -> dict[str, Any]:
    values = [float(getattr(r, attr)) for r in rows]
    lo, hi = bootstrap_ci(values)
    return {"value": round(mean(values), 4), "ci95": [round(lo, 4), round(hi, 4)], "n": len(values)}


def summarize(rows: Iterable[ResultRow]) -> dict[str, Any]:
    """Per strategy: accuracy (with 95% bootstrap CIs) overall and per category, EM, F1, stale rate on
    `updated`, abstention accuracy on `unanswerable`, retrieval recall, coverage, latency, tokens."""
    by_strategy: dict[str, list[ResultRow]] = {}
    for row in rows:
        by_strategy.setdefault(row.strategy, []).append(row)
    out: dict[str, Any] = {}
    for strategy, srows in by_strategy.items():
        cats = {c: [r for r in srows if r.category == c] for c in CATEGORY_ORDER}
        totals = [r.total_ms for r in srows]
        recalls = [r.recall_at_k for r in srows if r.recall_at_k is not None]
        coverages = [r.coverage for r in srows if r.coverage is not None]
        out[strategy] = {
            "questions": len(srows),
            "errors": sum(r.error is not None for r in srows),
            "accuracy": _rate(srows, "correct"),
            "exact_match": _rate(srows, "exact_match")["value"],
            "f1": round(mean([r.f1 for r in srows]), 4),
            "by_category": {c: _rate(cr, "correct") for c, cr in cats.items() if cr},
            "stale_rate_updated": _rate(cats["updated"], "stale") if cats["updated"] else None,
            "abstention_accuracy": _rate(cats["unanswerable"], "abstained") if cats["unanswerable"] else None,
            "false_abstention_rate": _rate([r for r in srows if r.category != "unanswerable"], "abstained")[
                "value"
            ],
            "recall_at_k": round(mean(recalls), 4) if recalls else None,
            "coverage": round(mean(coverages), 4) if coverages else None,
            "latency_ms": {"p50": round(percentile(totals, 50), 1), "p95": round(percentile(totals, 95), 1)},
            "prompt_tokens": round(mean([r.prompt_tokens for r in srows]), 1),
            "completion_tokens": round(mean([r.completion_tokens for r in srows]), 1),
        }
    return out


def _fmt_rate(rate: dict[str, Any] | None) -> str:
    if not rate or not rate.get("n"):
        return "–"
    lo, hi = rate["ci95"]
    return f"{rate['value']:.2f} [{lo:.2f}, {hi:.2f}]"


def markdown_table(summary: dict[str, Any]) -> str:
    cats = [c for c in CATEGORY_ORDER if any(c in s["by_category"] for s in summary.values())]
    head = ["strategy", "accuracy [95% CI]", *cats, "stale", "recall@k", "p50 ms", "prompt tok"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in summary.items():
        cells = [
            name,
            _fmt_rate(s["accuracy"]),
            *(f"{s['by_category'][c]['value']:.2f}" if c in s["by_category"] else "–" for c in cats),
            f"{s['stale_rate_updated']['value']:.2f}" if s["stale_rate_updated"] else "–",
            f"{s['recall_at_k']:.2f}" if s["recall_at_k"] is not None else "–",
            f"{s['latency_ms']['p50']:.0f}",
            f"{s['prompt_tokens']:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def plots(rows: Sequence[ResultRow], summary: dict[str, Any]) -> dict[str, str]:
    """Base64 PNGs: accuracy by strategy × category, accuracy against cost, and (when long-context rows
    carry positions) accuracy against the answer's position in the window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    strategies = list(summary)
    cats = [c for c in CATEGORY_ORDER if any(c in s["by_category"] for s in summary.values())]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / max(len(strategies), 1)
    for i, name in enumerate(strategies):
        values = [summary[name]["by_category"].get(c, {}).get("value", 0.0) for c in cats]
        ax.bar([j + i * width for j in range(len(cats))], values, width, label=name)
    ax.set_xticks([j + width * (len(strategies) - 1) / 2 for j in range(len(cats))], cats)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8, ncols=min(len(strategies), 5))
    ax.set_title("Accuracy by strategy and question category")
    out["accuracy_by_category"] = _png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name in strategies:
        s = summary[name]
        ax.scatter(s["prompt_tokens"], s["accuracy"]["value"], s=60)
        ax.annotate(name, (s["prompt_tokens"], s["accuracy"]["value"]), fontsize=8, xytext=(4, 4),
                    textcoords="offset points")  # fmt: skip
    ax.set_xlabel("prompt tokens per question")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("Accuracy against cost")
    out["accuracy_vs_cost"] = _png(fig)
    plt.close(fig)

    positioned = [r for r in rows if r.strategy == "long_context" and r.answer_position is not None]
    if positioned:
        positions = [(min(int((r.answer_position or 0.0) * 5), 4), r) for r in positioned]
        buckets = [[r for b, r in positions if b == bucket] for bucket in range(5)]
        xs = [b / 5 + 0.1 for b, rs in enumerate(buckets) if rs]
        ys = [mean([float(r.correct) for r in rs]) for rs in buckets if rs]
        fig, ax = plt.subplots(figsize=(5, 3.6))
        ax.plot(xs, ys, marker="o")
        ax.set_xlabel("position of the answer in the window (0 = start)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.set_title("Long context: lost in the middle?")
        out["long_context_position"] = _png(fig)
        plt.close(fig)
    return out


def _reference_md() -> str:
    lines = [
        f"Published context — {REFERENCE_SOURCE}:",
        "",
        "| setting | accuracy |",
        "|---|---|",
    ]
    lines += [f"| {name} | {value:.3f} |" for name, value in REFERENCE_ROWS]
    return "\n".join(lines)


def write_report(run_dir: Path, rows: Sequence[ResultRow], meta: dict[str, Any]) -> dict[str, Any]:
    """Write summary.json, report.md and report.html into run_dir; return the summary."""
    summary = summarize(rows)
    (run_dir / "summary.json").write_text(json.dumps({**meta, "strategies": summary}, indent=2, default=str))
    title = f"keepcurrent eval — {meta.get('run_id', run_dir.name)}"
    md = [
        f"# {title}",
        "",
        f"Model: `{meta.get('model', '?')}` · index version {meta.get('index_version', '?')} · "
        f"{len({r.question_id for r in rows})} questions",
        "",
        markdown_table(summary),
        "",
        "Accuracy: the answer states an alias of the gold answer (unanswerable: the model abstains). "
        "Brackets: 95% bootstrap confidence interval. stale: share of `updated` questions answered with "
        "the pre-cutoff value.",
        "",
        _reference_md(),
        "",
    ]
    (run_dir / "report.md").write_text("\n".join(md))
    images = plots(rows, summary)
    body = "".join(f'<h2>{html.escape(k.replace("_", " "))}</h2><img src="data:image/png;base64,{v}"/>'
                   for k, v in images.items())  # fmt: skip
    table_html = _md_table_to_html(markdown_table(summary))
    ref_html = _md_table_to_html("\n".join(_reference_md().splitlines()[2:]))
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px}"
        "img{max-width:100%}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>Model <code>{html.escape(str(meta.get('model', '?')))}</code></p>"
        f"{table_html}{body}<h2>Published context</h2><p>{html.escape(REFERENCE_SOURCE)}</p>"
        f"{ref_html}</body></html>"
    )
    (run_dir / "report.html").write_text(page)
    return summary


def _md_table_to_html(table: str) -> str:
    rows = [line.strip("|").split("|") for line in table.splitlines() if not line.startswith("|---")]
    head, *body = rows
    th = "".join(f"<th>{html.escape(c.strip())}</th>" for c in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><tr>{th}</tr>{trs}</table>"


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
