"""Check the labelled retrieval queries against the Python "What's New" corpus.

Run from the repository root:

    python bench/data/check_queries.py

Options: `--queries PATH` (default: python_docs_queries.jsonl beside this script) and
`--corpus DIR [DIR ...]` (default: the vendored pages, data/python-docs/whatsnew-pre and whatsnew).

For every query it verifies that the labelled `version` is a page of the corpus, that every
`must_contain` string occurs verbatim (case-sensitive) in that page's text, and that all of them occur
together within one span of `WINDOW` characters at least once, so that a retrieved chunk of ~800
characters can hold them all. As a warning only, it reports how often the first `must_contain` string
occurs in other pages: such a string can make a chunk of the wrong page count as a hit.
Exits 1 if any query fails or the query file is malformed, else 0.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict, cast

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the repository root, for core and eval.whatsnew's page reader

from core.jsonl import iter_jsonl  # noqa: E402
from eval.whatsnew import load_pages as read_pages  # noqa: E402

WINDOW = 600
DEFAULT_QUERIES = Path(__file__).with_name("python_docs_queries.jsonl")
DEFAULT_CORPUS = [ROOT / "data/python-docs/whatsnew-pre", ROOT / "data/python-docs/whatsnew"]
KINDS = ("identifier", "paraphrase")


class Query(TypedDict):
    id: str
    query: str
    version: str
    must_contain: list[str]
    kind: str


def load_pages(folders: Sequence[Path]) -> dict[str, str]:
    """Map each What's New version ("3.14") to its page text, oldest first."""
    return {page.version: page.text for folder in folders for page in read_pages(folder)}


def occurrences(text: str, needle: str) -> list[int]:
    """Start offsets of every (possibly overlapping) occurrence of `needle` in `text`."""
    starts: list[int] = []
    i = text.find(needle)
    while i >= 0:
        starts.append(i)
        i = text.find(needle, i + 1)
    return starts


def within_window(text: str, needles: Sequence[str], window: int = WINDOW) -> bool:
    """True if some span of at most `window` characters holds a whole occurrence of every needle.

    A shortest such span starts where one of the occurrences starts, so trying each start suffices.
    """
    found = {needle: occurrences(text, needle) for needle in needles}
    starts = sorted({s for positions in found.values() for s in positions})
    return any(
        all(any(lo <= s and s + len(needle) <= lo + window for s in found[needle]) for needle in needles)
        for lo in starts
    )


def schema_problems(raw: dict[str, object]) -> list[str]:
    """What is wrong with the shape of one query record (empty if it is well-formed)."""
    missing = [key for key in Query.__annotations__ if key not in raw]
    if missing:
        return [f"missing fields {missing}"]
    problems = [
        f"{key} must be a non-empty string"
        for key in ("id", "query", "version", "kind")
        if not isinstance(raw[key], str) or not raw[key]
    ]
    must = raw["must_contain"]
    if not (isinstance(must, list) and 1 <= len(must) <= 2 and all(isinstance(s, str) and s for s in must)):
        problems.append("must_contain must be a list of 1-2 non-empty strings")
    elif any("\n" in s for s in must):
        problems.append("must_contain strings must be single-line (a chunker may re-flow whitespace)")
    if raw["kind"] not in KINDS:
        problems.append(f"kind {raw['kind']!r} is not one of {KINDS}")
    return problems


def query_failures(q: Query, pages: dict[str, str]) -> list[str]:
    """Why one query fails against the corpus (empty if it passes)."""
    text = pages.get(q["version"])
    if text is None:
        return [f"version {q['version']!r} is not in the corpus"]
    missing = [s for s in q["must_contain"] if s not in text]
    if missing:
        return [f"not in page {q['version']}: {s!r}" for s in missing]
    if not within_window(text, q["must_contain"]):
        return [f"{q['must_contain']} never occur within {WINDOW} characters of each other"]
    return []


def other_page_counts(q: Query, pages: dict[str, str]) -> dict[str, int]:
    """Occurrences of the first must_contain string in each other page where it occurs."""
    first = q["must_contain"][0]
    return {v: text.count(first) for v, text in pages.items() if v != q["version"] and first in text}


def load_queries(path: Path) -> tuple[list[Query], list[str]]:
    """The well-formed queries of `path`, and a failure line for each malformed or duplicate record."""
    queries: list[Query] = []
    failures: list[str] = []
    for line_no, raw in iter_jsonl(path):
        problems = schema_problems(raw)
        failures += [f"line {line_no} ({raw.get('id', '?')}): {p}" for p in problems]
        if not problems:
            queries.append(cast(Query, raw))
    ids = Counter(q["id"] for q in queries)
    failures += [f"duplicate id {i!r} ({n} records)" for i, n in ids.items() if n > 1]
    return queries, failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=Path, default=DEFAULT_QUERIES)
    parser.add_argument("--corpus", type=Path, nargs="+", default=DEFAULT_CORPUS)
    args = parser.parse_args(argv)

    pages = load_pages(args.corpus)
    try:
        queries, failures = load_queries(args.queries)
    except ValueError as err:  # not JSON lines: names the file and the line
        print(f"FAIL {err}")
        return 1
    shared = 0
    for q in queries:
        failures += [f"{q['id']}: {f}" for f in query_failures(q, pages)]
        elsewhere = other_page_counts(q, pages)
        if elsewhere:
            shared += 1
            where = ", ".join(f"{v}: {n}" for v, n in elsewhere.items())
            print(f"warning {q['id']}: {q['must_contain'][0]!r} also occurs in other pages ({where})")

    kinds = Counter(q["kind"] for q in queries)
    versions = Counter(q["version"] for q in queries)
    print(f"{len(queries)} queries; " + ", ".join(f"{k}: {kinds[k]}" for k in KINDS))
    print("per version: " + ", ".join(f"{v}: {versions[v]}" for v in pages if versions[v]))
    print(f"{shared} queries whose first must_contain string also occurs in other pages")
    for failure in failures:
        print(f"FAIL {failure}")
    print(f"{len(failures)} failures" if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
