"""The plots of an eval report, drawn from what `python -m eval run` writes (summary.json, and the rows of
results.jsonl for long context's natural answer positions): base64 PNGs for `service.report_pages`.

matplotlib's object API (`Figure`, no pyplot): the gateway draws in worker threads, and pyplot's global
state is not thread-safe.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

CATEGORY_ORDER = ("retained", "new", "updated", "unanswerable", "multi_hop", "hostile")
ORACLE = "oracle"  # eval.oracle.ORACLE: the oracle router's name in summary.json


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _figure(width: float, height: float = 3.6) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def accuracy_by_category(summary: dict[str, Any]) -> str:
    """Grouped bars: each strategy's accuracy on each question category."""
    strategies = list(summary)
    cats = [c for c in CATEGORY_ORDER if any(c in s["by_category"] for s in summary.values())]
    fig = _figure(8)
    ax = fig.subplots()
    width = 0.8 / max(len(strategies), 1)
    for i, name in enumerate(strategies):
        values = [summary[name]["by_category"].get(c, {}).get("value", 0.0) for c in cats]
        ax.bar([j + i * width for j in range(len(cats))], values, width, label=name)
    ax.set_xticks([j + width * (len(strategies) - 1) / 2 for j in range(len(cats))], cats)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=8, ncols=min(len(strategies), 5))
    ax.set_title("Accuracy by strategy and question category")
    return _png(fig)


def accuracy_vs_cost(summary: dict[str, Any], costs: dict[str, dict[str, Any]]) -> str:
    """Accuracy against tokens per answer (the frontier dashed), and against the seconds it took once to
    absorb the new documents where the run recorded them."""
    strategies = list(summary)
    absorbed = {n: c["absorb_seconds"] for n, c in costs.items() if c.get("absorb_seconds") is not None}
    panels = 2 if absorbed else 1
    fig = _figure(5 * panels)
    axes = fig.subplots(1, panels, squeeze=False)
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
            front = sorted((xs[n], summary[n]["accuracy"]["value"]) for n, c in costs.items()
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
    return _png(fig)


def long_context_position(
    rows: Sequence[dict[str, Any]], sweep: dict[str, dict[str, dict[str, Any]]] | None
) -> str | None:
    """long context's accuracy against where the answer was in the window: the sweep when the run made one
    (and against the number of documents in the window), else the natural variation of the newest-first
    packing; None when the run has neither."""
    if sweep:
        fig = _figure(10)
        axes = fig.subplots(1, 2)
        for n, cells in sweep.items():
            order = sorted(cells, key=float)
            axes[0].plot(
                [float(x) for x in order], [cells[x]["value"] for x in order], marker="o", label=f"{n} docs"
            )
        axes[0].set_xlabel("position of the answer's document (0 = first, 1 = last)")
        axes[0].legend(fontsize=8)
        ns = list(sweep)
        axes[1].plot([sweep[n][next(iter(sweep[n]))]["docs_in_window"] for n in ns],
                     [_mean([c["value"] for c in sweep[n].values()]) for n in ns], marker="o")  # fmt: skip
        axes[1].set_xlabel("documents in the window (mean over positions)")
        for ax in axes:
            ax.set_ylabel("accuracy")
            ax.set_ylim(0, 1)
        fig.suptitle("Long context: lost in the middle? (answer placed by the sweep)")
        return _png(fig)
    positioned = [
        r for r in rows if r.get("strategy") == "long_context" and r.get("answer_position") is not None
    ]
    if not positioned:
        return None
    buckets: list[list[dict[str, Any]]] = [[] for _ in range(5)]
    for r in positioned:
        buckets[min(int(float(r["answer_position"]) * 5), 4)].append(r)
    centers = [b / 5 + 0.1 for b, rs in enumerate(buckets) if rs]
    ys = [_mean([float(bool(r.get("correct"))) for r in rs]) for rs in buckets if rs]
    fig = _figure(5)
    ax = fig.subplots()
    ax.plot(centers, ys, marker="o")
    ax.set_xlabel("position of the answer in the window (0 = start)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("Long context: lost in the middle? (natural order: newest first)")
    return _png(fig)


def report_figures(full: dict[str, Any], rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Every plot of one report: name -> base64 PNG, in the order they are shown."""
    summary = full.get("strategies") or {}
    if not summary:
        return {}
    out = {
        "accuracy_by_category": accuracy_by_category(summary),
        "accuracy_vs_cost": accuracy_vs_cost(summary, full.get("costs") or {}),
    }
    position = long_context_position(
        [r for r in rows if r.get("variant") is None], full.get("lc_sweep_results")
    )
    if position is not None:
        out["long_context_position"] = position
    return out
