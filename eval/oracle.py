"""The oracle router and the accuracy-against-cost frontier: how far `auto`'s policy is from the best
routing of this run's strategies (Adaptive-RAG, Jeong et al. NAACL 2024, reports the same ceiling).

The oracle sees every answer of the run: per question it takes the cheapest servable strategy
(closed_book, rag, long_context, cpt) that was right, and when none was, the cheapest one (wrong either
way). Cost is tokens per answer, prompt plus completion, as the gateway counts them; an answer rag's gate
refused costs nothing. It is a ceiling computed after the fact, not a strategy anyone can serve. `auto`'s
own long-context fallback (the retrieval's documents, not the newest) is none of the four, so auto can be
right where the oracle is not.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # eval.report summarises the oracle's rows beside the strategies': no import cycle
    from eval.report import ResultRow

ORACLE = "oracle"
ROUTABLE = ("closed_book", "rag", "long_context", "cpt")


def tokens(row: ResultRow) -> int:
    return row.prompt_tokens + row.completion_tokens


def oracle_rows(rows: Iterable[ResultRow]) -> list[ResultRow]:
    """One row per question for the oracle router: a copy of the answer it routes to, renamed `oracle`,
    with `route` naming that strategy. Empty when fewer than two routable strategies answered."""
    by_question: dict[str, dict[str, ResultRow]] = {}
    for r in rows:
        if r.variant is None and r.strategy in ROUTABLE and r.error is None:
            by_question.setdefault(r.question_id, {})[r.strategy] = r
    if len({s for answers in by_question.values() for s in answers}) < 2:
        return []
    out = []
    for answers in by_question.values():
        right = [r for r in answers.values() if r.correct]
        pick = min(right or answers.values(), key=lambda r: (tokens(r), ROUTABLE.index(r.strategy)))
        why = "the cheapest right answer" if right else "none was right: the cheapest answer"
        route = {"chosen": pick.strategy, "tried": [], "reason": why}
        out.append(pick.model_copy(update={"strategy": ORACLE, "route": route}))
    return out


def frontier(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per entry of the summary: tokens per answer; whether it is on the accuracy-against-tokens frontier
    of this run's systems (no other is at least as accurate for fewer tokens, or more accurate for as few;
    the oracle and the reference runs, "rag (θ0)", are not candidates); and its distance to the best single
    strategy (the most accurate routable one, the cheaper on a tie): accuracy difference, share of its
    tokens, and whether the 95% intervals overlap."""
    runs = {n: s for n, s in summary.items() if n != ORACLE and " (" not in n}

    def cost(s: dict[str, Any]) -> float:
        return float(s.get("tokens", s["prompt_tokens"] + s["completion_tokens"]))

    singles = [n for n in runs if n in ROUTABLE]
    best = max(singles, key=lambda n: (runs[n]["accuracy"]["value"], -cost(runs[n])), default=None)
    out: dict[str, dict[str, Any]] = {}
    for name, s in summary.items():
        acc, c = s["accuracy"]["value"], cost(s)
        dominated = any(
            (o["accuracy"]["value"] >= acc and cost(o) < c) or (o["accuracy"]["value"] > acc and cost(o) <= c)
            for n, o in runs.items()
            if n != name
        )
        entry: dict[str, Any] = {"tokens": round(c, 1), "frontier": name in runs and not dominated}
        if best is not None:
            b = runs[best]
            lo, hi = s["accuracy"]["ci95"]
            blo, bhi = b["accuracy"]["ci95"]
            entry["vs_best"] = {
                "best": best,
                "accuracy_delta": round(acc - b["accuracy"]["value"], 4),
                "token_share": round(c / cost(b), 4) if cost(b) else None,
                "ci_overlap": bool(lo <= bhi and blo <= hi),
            }
        out[name] = entry
    return out
