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
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from eval.metrics import bootstrap_ci, mean, percentile, truthfulness
from eval.oracle import ORACLE, oracle_rows

CATEGORY_ORDER = ("retained", "new", "updated", "unanswerable", "multi_hop")
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


def _fmt_rate(rate: dict[str, Any] | None) -> str:
    if not rate or not rate.get("n"):
        return "–"
    lo, hi = rate["ci95"]
    return f"{rate['value']:.2f} [{lo:.2f}, {hi:.2f}]"


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "–" if value is None else format(value, fmt)


def markdown_table(summary: dict[str, Any]) -> str:
    cats = [c for c in CATEGORY_ORDER if any(c in s["by_category"] for s in summary.values())]
    head = ["strategy", "accuracy [95% CI]", "truthfulness [95% CI]", "EM", "F1", *cats, "stale", "abstain",
            "wrongly abstained", "recall@k", "coverage", "p50 ms", "p95 ms", "prompt tok",
            "completion tok"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in summary.items():
        cells = [
            name,
            _fmt_rate(s["accuracy"]),
            _fmt_rate(s.get("truthfulness")),
            _num(s.get("exact_match")),
            _num(s.get("f1")),
            *(f"{s['by_category'][c]['value']:.2f}" if c in s["by_category"] else "–" for c in cats),
            f"{s['stale_rate_updated']['value']:.2f}" if s["stale_rate_updated"] else "–",
            f"{s['abstention_accuracy']['value']:.2f}" if s.get("abstention_accuracy") else "–",
            f"{s['wrongly_abstained']['value']:.2f}" if s.get("wrongly_abstained") else "–",
            _num(s["recall_at_k"]),
            _num(s.get("coverage")),
            f"{s['latency_ms']['p50']:.0f}",
            f"{s['latency_ms']['p95']:.0f}",
            f"{s['prompt_tokens']:.0f}",
            f"{s['completion_tokens']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cost_table(summary: dict[str, Any], costs: dict[str, dict[str, Any]]) -> str:
    """Accuracy beside what it cost: tokens per answer (prompt + completion, every try of auto's route
    included), the distance to the best single strategy and the frontier (eval.oracle.frontier, in
    `costs`), and once, to absorb the new documents; auto's routes and the oracle router's picks."""
    best = next((c["vs_best"]["best"] for c in costs.values() if c.get("vs_best")), None)
    head = ["strategy", "accuracy [95% CI]", "tokens / answer", "prompt tok / question",
            f"Δ accuracy vs {best or 'best'}", f"tokens vs {best or 'best'}", "frontier", "absorb once (s)",
            "how", "forgetting (retained)", "routes"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, c in costs.items():
        s = summary[name]
        seconds = c.get("absorb_seconds")
        vs = c.get("vs_best") or {}
        share = vs.get("token_share")
        delta = (
            "–" if not vs else f"{vs['accuracy_delta']:+.2f}" + ("" if vs["ci_overlap"] else " (CIs apart)")
        )
        cells = [
            name,
            _fmt_rate(s["accuracy"]),
            f"{c.get('tokens', s['prompt_tokens'] + s['completion_tokens']):.0f}",
            f"{c['prompt_tokens']:.0f}",
            delta,
            "–" if share is None else f"{share:.0%}",
            "yes" if c.get("frontier") else ("ceiling" if name == ORACLE else "–"),
            "not recorded" if seconds is None else f"{seconds:.1f}",
            c.get("how", ""),
            _num(c.get("forgetting_retained"), "+.2f"),
            " · ".join(f"{route} {n}" for route, n in (s.get("routes") or {}).items()) or "–",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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


def sweep_table(sweep: dict[str, dict[str, dict[str, Any]]]) -> str:
    positions = sorted({p for cells in sweep.values() for p in cells}, key=float)
    head = ["documents asked", *(f"answer at {p}" for p in positions), "docs in window (mean)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, cells in sweep.items():
        window = mean([c["docs_in_window"] for c in cells.values()])
        lines.append(
            "| " + " | ".join([n, *(_fmt_rate(cells.get(p)) for p in positions), f"{window:.1f}"]) + " |"
        )
    return "\n".join(lines)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def plots(
    rows: Sequence[ResultRow],
    summary: dict[str, Any],
    costs: dict[str, dict[str, Any]] | None = None,
    sweep: dict[str, dict[str, dict[str, Any]]] | None = None,
) -> dict[str, str]:
    """Base64 PNGs: accuracy by strategy × category, accuracy against cost, and long context's accuracy
    against the answer's position and the number of documents in the window (the sweep when there is
    one, else the natural variation of the newest-first packing)."""
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

    absorbed = {
        n: c["absorb_seconds"] for n, c in (costs or {}).items() if c.get("absorb_seconds") is not None
    }
    panels = 2 if absorbed else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6), squeeze=False)
    per_answer = {n: summary[n].get("tokens", summary[n]["prompt_tokens"]) for n in strategies}
    for ax, (label, xs) in zip(
        axes[0],
        [("tokens per answer (prompt + completion)", per_answer),
         ("seconds to absorb the new documents (once)", absorbed)],
        strict=False,
    ):  # fmt: skip
        points: dict[tuple[float, float], list[str]] = {}  # strategies at the same point share a label
        for name, x in xs.items():
            points.setdefault((x, summary[name]["accuracy"]["value"]), []).append(name)
        for i, ((x, y), names) in enumerate(sorted(points.items())):
            star = names == [ORACLE]
            ax.scatter(x, y, s=140 if star else 60, marker="*" if star else "o")
            # Neighbours in x get their labels at three heights, so that close points stay legible.
            ax.annotate(", ".join(names), (x, y), fontsize=8, xytext=(4, 4 + 10 * (i % 3)),
                        textcoords="offset points")  # fmt: skip
        if label.startswith("tokens"):
            # The frontier of what this run can serve: no other system as accurate for fewer tokens.
            front = sorted((xs[n], summary[n]["accuracy"]["value"]) for n, c in (costs or {}).items()
                           if c.get("frontier") and n in xs)  # fmt: skip
            if len(front) > 1:
                ax.plot(*zip(*front, strict=True), linestyle="--", color="grey", linewidth=1)
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        if label.startswith("seconds"):
            ax.set_xscale("symlog", linthresh=1.0)
        elif xs and min(xs.values()) > 0:  # costs a hundred times apart (closed book, long context)
            ax.set_xscale("log")
    legend = (
        " (dashed: the frontier of what can be served; ★: the oracle router)" if ORACLE in summary else ""
    )
    fig.suptitle(f"Accuracy against cost{legend}")
    out["accuracy_vs_cost"] = _png(fig)
    plt.close(fig)

    if sweep:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for n, cells in sweep.items():
            order = sorted(cells, key=float)
            axes[0].plot(
                [float(x) for x in order], [cells[x]["value"] for x in order], marker="o", label=f"{n} docs"
            )
        axes[0].set_xlabel("position of the answer's document (0 = first, 1 = last)")
        axes[0].legend(fontsize=8)
        ns = list(sweep)
        axes[1].plot([sweep[n][next(iter(sweep[n]))]["docs_in_window"] for n in ns],
                     [mean([c["value"] for c in sweep[n].values()]) for n in ns], marker="o")  # fmt: skip
        axes[1].set_xlabel("documents in the window (mean over positions)")
        for ax in axes:
            ax.set_ylabel("accuracy")
            ax.set_ylim(0, 1)
        fig.suptitle("Long context: lost in the middle? (answer placed by the sweep)")
        out["long_context_position"] = _png(fig)
        plt.close(fig)
        return out
    positioned = [r for r in rows if r.strategy == "long_context" and r.answer_position is not None]
    if positioned:
        positions = [(min(int((r.answer_position or 0.0) * 5), 4), r) for r in positioned]
        buckets = [[r for b, r in positions if b == bucket] for bucket in range(5)]
        centers = [b / 5 + 0.1 for b, rs in enumerate(buckets) if rs]
        ys = [mean([float(r.correct) for r in rs]) for rs in buckets if rs]
        fig, ax = plt.subplots(figsize=(5, 3.6))
        ax.plot(centers, ys, marker="o")
        ax.set_xlabel("position of the answer in the window (0 = start)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.set_title("Long context: lost in the middle? (natural order: newest first)")
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
    sections: list[tuple[str, str, str]] = []  # (title, markdown, note)
    if cost:
        sections.append(("Cost of absorbing the new documents", cost_table(summary, cost),
                         "Forgetting: closed_book's accuracy on `retained` minus cpt's, in this run "
                         "(positive: CPT lost old knowledge)."))  # fmt: skip
    if sweep:
        sections.append(("Long context: answer position and documents in the window", sweep_table(sweep),
                         "Each question is asked with its supporting document placed at the position among "
                         "the newest other documents; the window may hold fewer than asked."))  # fmt: skip
    skipped = meta.get("skipped") or {}
    md = [
        f"# {title}",
        "",
        f"Model: `{meta.get('model', '?')}` · index version {meta.get('index_version', '?')} · "
        f"{len({r.question_id for r in rows})} questions · {meta.get('mode', 'in-process')}",
        "",
        markdown_table(summary),
        "",
        "Accuracy: the answer states an alias of the gold answer (unanswerable: the model abstains). "
        "Brackets: 95% bootstrap confidence interval. stale: share of `updated` questions answered with "
        "the pre-cutoff value. abstain: abstention accuracy on `unanswerable`. wrongly abstained: share of "
        "the answerable questions (all but `unanswerable`) the strategy abstained on. truthfulness: CRAG's "
        "score, +1 a right answer, 0 an abstention, -1 a wrong one, averaged over the questions (from -1 "
        "to 1; positive: more right than wrong). recall@k: supporting documents (those in the index) "
        "among the retrieved passages' documents.",
        "",
    ]
    md += [f"- skipped `{name}`: {why}" for name, why in skipped.items()] + ([""] if skipped else [])
    for heading, table, note in sections:
        md += [f"## {heading}", "", table, "", note, ""]
    md += [_reference_md(), ""]
    (run_dir / "report.md").write_text("\n".join(md))
    images = plots(rows, summary, cost, sweep)
    body = "".join(f'<h2>{html.escape(k.replace("_", " "))}</h2><img src="data:image/png;base64,{v}"/>'
                   for k, v in images.items())  # fmt: skip
    extra = "".join(
        f"<h2>{html.escape(h)}</h2>{_md_table_to_html(t)}<p>{html.escape(n)}</p>" for h, t, n in sections
    )
    skipped_html = "".join(f"<p>skipped <code>{html.escape(k)}</code>: {html.escape(v)}</p>"
                           for k, v in skipped.items())  # fmt: skip
    table_html = _md_table_to_html(markdown_table(summary))
    ref_html = _md_table_to_html("\n".join(_reference_md().splitlines()[2:]))
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 8px}"
        "img{max-width:100%}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>Model <code>{html.escape(str(meta.get('model', '?')))}</code> · "
        f"index version {html.escape(str(meta.get('index_version', '?')))}</p>"
        f"{table_html}{skipped_html}{extra}{body}"
        f"<h2>Published context</h2><p>{html.escape(REFERENCE_SOURCE)}</p>"
        f"{ref_html}</body></html>"
    )
    (run_dir / "report.html").write_text(page)
    return full


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
