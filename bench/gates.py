"""rag's two abstention gates on real questions, the old rules beside the new, without a language model.

    KC_HOME=/tmp/g python -m indexer ingest data/python-docs/whatsnew
    KC_HOME=/tmp/g python bench/gates.py data/python-docs/questions.jsonl [--json]

Relevance gate (before generation): per category, how many questions each rule lets through to the model,
on the same retrieved passages (`Rag.retrieve`, k = KC_RAG_K). Old rule: every capitalised word of the
question occurs in one retrieved passage. New rule: `Rag.gate` (see service/strategies/rag.py). A
question may also be a folder of question files (a world's `questions/`).

Support check (after generation): hand-made answers to questions about the 3.14 and 3.15 pages, each
scored against the indexed passage that holds its marker. Old score: the share of the answer's content
words in the passage. New score: `support()`. Both are compared with KC_RAG_MIN_SUPPORT.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from core.answers import contains_answer, strip_citations
from core.logging import setup_logging
from core.schemas import SearchHit
from indexer.retriever import IndexRetriever
from service.settings import ServiceSettings
from service.strategies.base import STOPWORDS, StrategyContext, content_words
from service.strategies.rag import Rag, relevance, support

ANSWERABLE = ("new", "updated", "retained")

# (question, a string of the passage that answers it, answer, should the check accept it)
SUPPORT_CASES: tuple[tuple[str, str, str, bool], ...] = (
    (
        "Which PEP introduced template string literals (t-strings) in Python 3.14?",
        "PEP 750: Template string literals",
        "PEP 750 [1]",
        True,
    ),
    (
        "Which PEP introduced template string literals (t-strings) in Python 3.14?",
        "PEP 750: Template string literals",
        "According to the passage, template string literals were introduced in Python 3.14 by PEP 750, "
        "which adds a 't' prefix that returns an object instead of a simple str, so that programs can "
        "process the static and interpolated parts of the string safely [1].",
        True,
    ),
    (
        "Which PEP introduced template string literals (t-strings) in Python 3.14?",
        "PEP 750: Template string literals",
        "PEP 751 introduced template string literals (t-strings) in Python 3.14 [1].",
        False,
    ),
    (
        "By how much did Python 3.14 speed up textwrap's dedent() function?",
        "average of 2.4x",
        "Well, the dedent() function got a lot faster in this release, and the documentation says that "
        "it improves performance by an average of 2.4x, but of course that depends on the input you give "
        "it and on your machine [1].",
        True,
    ),
    (
        "By how much did Python 3.14 speed up textwrap's dedent() function?",
        "average of 2.4x",
        "It is about 3.5x faster on average [1].",
        False,
    ),
    (
        "Which start method became the default for ProcessPoolExecutor on Unix platforms other than "
        "macOS in Python 3.14?",
        "is now the default start",
        "forkserver [1]",
        True,
    ),
    (
        "Which start method became the default for ProcessPoolExecutor on Unix platforms other than "
        "macOS in Python 3.14?",
        "is now the default start",
        "The default start method is now forkserver, replacing fork, except on Windows and macOS, "
        "where spawn is still used [1].",
        True,
    ),
    (
        "Which start method became the default for ProcessPoolExecutor on Unix platforms other than "
        "macOS in Python 3.14?",
        "is now the default start",
        "The default start method is spawn on Linux [1].",
        False,
    ),
    (
        "What is the name of the high-frequency statistical sampling profiler added in Python 3.15?",
        "named Tachyon",
        "Tachyon [1]",
        True,
    ),
    (
        "What is the name of the high-frequency statistical sampling profiler added in Python 3.15?",
        "named Tachyon",
        "The profiler is called Pyroscope, a high-frequency statistical sampling profiler [1].",
        False,
    ),
)


def old_names(question: str) -> set[str]:
    """The rule before issue 20: every capitalised word is a name."""
    return {
        w.lower() for w in re.findall(r"[^\W_]+", question) if w[0].isupper() and w.lower() not in STOPWORDS
    }


def old_gate(rag: Rag, question: str, hits: list[SearchHit], cosines: dict[int, float]) -> str | None:
    """The relevance gate before issue 20: every name in one passage, then the score threshold."""
    if not hits:
        return "retrieval found no passage"
    wanted = old_names(question)
    if wanted:
        best = max(hits, key=lambda h: len(wanted & set(content_words(f"{h.title} {h.text}"))))
        missing = wanted - set(content_words(f"{best.title} {best.text}"))
        if missing:
            return f"no retrieved passage mentions {', '.join(sorted(missing))}"
    score = max(relevance(question, h.text, cosines.get(h.chunk_id, 0.0)) for h in hits)
    threshold = rag.ctx.settings.rag_min_score
    return None if score >= threshold else f"best relevance {score:.2f} < {threshold}"


def old_support(answer: str, passage: str) -> float:
    """The support score before issue 20: the share of the answer's content words in the passage."""
    words = content_words(strip_citations(answer))
    have = set(content_words(passage))
    return sum(w in have for w in words) / len(words) if words else 0.0


def read_questions(path: Path) -> list[dict[str, Any]]:
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    return [json.loads(line) for f in files for line in f.read_text().splitlines() if line.strip()]


def gate_rows(rag: Rag, questions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    k = rag.ctx.settings.rag_k
    rows = []
    for q in questions:
        hits, cosines, version = rag.retrieve(q["question"], k)
        rows.append(
            {
                "id": q.get("id"),
                "category": q["category"],
                "question": q["question"],
                "old": old_gate(rag, q["question"], hits, cosines),
                "new": rag.gate(q["question"], hits, cosines, version),
                "answer_in_passages": contains_answer(" ".join(h.text for h in hits), q.get("answers", [])),
            }
        )
    return rows


def supersede_table(rag: Rag, questions: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per category: questions whose k passages hold the answer (and, for `updated`, a stale answer)
    before (the first k of the ranking) and after supersession (`Rag.retrieve_and_gate` with
    KC_RAG_SUPERSEDE: 2k read, the superseded dropped, k kept), and how many questions' passages changed."""
    k = rag.ctx.settings.rag_k
    on = Rag(replace(rag.ctx, settings=rag.ctx.settings.model_copy(update={"rag_supersede": True})))
    table: dict[str, dict[str, int]] = {}
    for q in questions:
        hits = rag.retrieve(q["question"], k).hits
        kept = on.retrieve_and_gate(q["question"], k)[0]
        t = table.setdefault(q["category"], Counter())
        t["questions"] += 1
        t["changed"] += [h.chunk_id for h in hits] != [h.chunk_id for h in kept]
        for when, hs in (("before", hits), ("after", kept)):
            text = " ".join(h.text for h in hs)
            t[f"answer_{when}"] += contains_answer(text, q.get("answers", []))
            t[f"stale_{when}"] += contains_answer(text, q.get("stale_answers", []))
    return {c: dict(t) for c, t in sorted(table.items())}


def gate_table(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for category in sorted({r["category"] for r in rows}):
        rs = [r for r in rows if r["category"] == category]
        table[category] = {
            "questions": len(rs),
            "old_passed": sum(r["old"] is None for r in rs),
            "new_passed": sum(r["new"] is None for r in rs),
            # Only these blocks cost an answer for sure: the passages held it.
            "old_blocked_answer_there": sum(r["old"] is not None and r["answer_in_passages"] for r in rs),
            "new_blocked_answer_there": sum(r["new"] is not None and r["answer_in_passages"] for r in rs),
        }
    return table


def passage_with(retriever: IndexRetriever, marker: str) -> SearchHit | None:
    return next((hit for hit in retriever.search(marker, 20, "bm25") if marker in hit.text), None)


def support_rows(retriever: IndexRetriever, threshold: float) -> list[dict[str, Any]]:
    rows = []
    for question, marker, answer, right in SUPPORT_CASES:
        hit = passage_with(retriever, marker)
        if hit is None:  # an index without the 3.14/3.15 pages (a world's): no support cases
            continue
        old = old_support(answer, hit.text)
        new = support(answer, f"{hit.title} {hit.text}", question)
        rows.append(
            {
                "answer": answer,
                "should_accept": right,
                "old": round(old, 3),
                "new": round(new, 3),
                "old_accepts": old >= threshold,
                "new_accepts": new >= threshold,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("questions", type=Path, help="a questions .jsonl file or a folder of them")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    setup_logging("WARNING")
    settings = ServiceSettings()
    retriever = IndexRetriever(settings)
    if retriever.version == 0:
        raise SystemExit(f"the index under {settings.resolved_home} is empty: ingest documents first")
    rag = Rag(StrategyContext(None, retriever, None, settings, "keepcurrent", None))  # type: ignore[arg-type]
    rows = gate_rows(rag, read_questions(args.questions))
    table = gate_table(rows)
    checks = support_rows(retriever, settings.rag_min_support)
    superseded = supersede_table(rag, read_questions(args.questions))
    if args.json:
        print(json.dumps({"gate": table, "gate_rows": rows, "support": checks, "supersede": superseded}))
        return
    print(
        f"relevance gate, k={settings.rag_k}, KC_RAG_MIN_SCORE={settings.rag_min_score} "
        f"(passed = sent to the model)"
    )
    head = f"{'category':<13}{'questions':>10}{'old passed':>12}{'new passed':>12}"
    print(f"{head}   blocked with the answer in the passages")
    for category, t in table.items():
        blocked = (
            f"   old {t['old_blocked_answer_there']}, new {t['new_blocked_answer_there']}"
            if category in ANSWERABLE
            else ""
        )
        print(f"{category:<13}{t['questions']:>10}{t['old_passed']:>12}{t['new_passed']:>12}{blocked}")
    changed = [r for r in rows if (r["old"] is None) != (r["new"] is None)]
    print(f"\nverdicts that changed ({len(changed)}):")
    for r in changed:
        print(f"  {r['category']:<13}{'passes' if r['new'] is None else 'blocked'} now: {r['question']}")
        print(f"  {'':<13}old: {r['old'] or 'passed'}; new: {r['new'] or 'passed'}")
    reasons = Counter((r["new"] or "passed").split(" (")[0].split(" mentions")[0] for r in rows)
    print("\nnew rule's verdicts:", dict(reasons))
    print(f"\nsupport check, KC_RAG_MIN_SUPPORT={settings.rag_min_support}")
    print(f"{'should':<8}{'old':>6}{'new':>6}  old new  answer")
    for c in checks:
        marks = " ".join(
            "ok " if c[f"{rule}_accepts"] == c["should_accept"] else "BAD" for rule in ("old", "new")
        )
        should = "accept" if c["should_accept"] else "reject"
        print(f"{should:<8}{c['old']:>6.2f}{c['new']:>6.2f}  {marks}  {c['answer'][:80]}")
    for rule in ("old", "new"):
        right = sum(c[f"{rule}_accepts"] == c["should_accept"] for c in checks)
        print(f"{rule} rule: {right}/{len(checks)} verdicts right")
    print(f"\nsupersession (k={settings.rag_k}): questions whose passages hold the answer / a stale answer")
    print(f"{'category':<13}{'questions':>10}{'changed':>9}{'answer':>14}{'stale':>14}")
    for category, t in superseded.items():
        answer = f"{t['answer_before']} -> {t['answer_after']}"
        stale = f"{t['stale_before']} -> {t['stale_after']}"
        print(f"{category:<13}{t['questions']:>10}{t['changed']:>9}{answer:>14}{stale:>14}")


if __name__ == "__main__":
    main()
