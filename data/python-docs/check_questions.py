"""Check the hand-written eval questions about the Python "What's New" pages.

Run from the repository root:

    python data/python-docs/check_questions.py

Options: `--questions PATH` (default: questions.jsonl beside this script), `--pages DIR` (default:
whatsnew/ beside this script, the post-cutoff 3.14 and 3.15 pages with YAML front matter) and
`--corpus DIR` (default: whatsnew-pre/ beside this script, the vendored pre-cutoff pages 2.0-3.13 that
support `retained` questions).

Each line of the question file is `{id, question, answers, category, supporting_doc_ids, as_of}`, the
schema of the synthetic world's questions (eval/world/README.md). The checker verifies:

- schema: exactly those keys with the right types, unique ids of the form `py-new-001`,
  `py-ret-001` or `py-una-001` (the prefix matching the category), an ISO `as_of` date;
- `new`: one supporting page among the post-cutoff pages, matched by its front matter `source:`;
  `retained`: one supporting page of version 3.8 to 3.12 in the corpus
  (`docs.python.org/3/whatsnew/X.Y` is version X.Y);
- for both: at most `MAX_ANSWER_WORDS` words per answer, the canonical answer (`answers[0]`) occurs
  in the supporting page as whole words (case-insensitive, whitespace folded) and not in the
  question itself, and every alias occurs there too or is a short form of the canonical answer
  (a substring of it, or the same calendar date written another way);
- `unanswerable`: `answers == [ABSTAIN_ANSWER]` and no supporting documents.

Prints each failure, then the counts per category and per supporting page version.
Exits 1 if anything fails, else 0.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from datetime import date, datetime
from pathlib import Path
from typing import TypedDict, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for core and eval

from core.jsonl import iter_jsonl
from core.loaders import split_front_matter
from core.prompts import ABSTAIN_ANSWER
from eval.whatsnew import load_pages

HERE = Path(__file__).resolve().parent
DEFAULT_QUESTIONS = HERE / "questions.jsonl"
DEFAULT_PAGES = HERE / "whatsnew"
DEFAULT_CORPUS = HERE / "whatsnew-pre"  # the pre-cutoff pages, vendored

DOC_PREFIX = "docs.python.org/3/whatsnew/"
RETAINED_VERSIONS = ("3.8", "3.9", "3.10", "3.11", "3.12")
ID_PREFIX = {"new": "py-new-", "retained": "py-ret-", "unanswerable": "py-una-"}
ID_PATTERN = re.compile(r"py-(new|ret|una)-\d{3}")
MAX_ANSWER_WORDS = 5
DATE_FORMATS = ("%Y-%m-%d", "%d %B %Y", "%B %d, %Y")


class Question(TypedDict):
    id: str
    question: str
    answers: list[str]
    category: str
    supporting_doc_ids: list[str]
    as_of: str


def load_new_pages(folder: Path) -> dict[str, str]:
    """Map each post-cutoff page's `source` (its doc id) to its full text, front matter included."""
    pages: dict[str, str] = {}
    for path in sorted(folder.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        source = split_front_matter(text)[0].get("source")
        if source:
            pages[str(source)] = text
    return pages


def load_old_pages(corpus: Path) -> dict[str, str]:
    """Map the doc id of each pre-cutoff page allowed for `retained` questions to its text."""
    versions = {page.version: page.text for page in load_pages(corpus)}
    return {DOC_PREFIX + v: versions[v] for v in RETAINED_VERSIONS if v in versions}


def fold(text: str) -> str:
    """Lower-case with every run of whitespace folded to one space, so line breaks do not matter."""
    return " ".join(text.split()).lower()


def occurs(needle: str, haystack: str) -> bool:
    """True if `needle` occurs in `haystack` as whole words: no word character right before or after."""
    pattern = r"(?<!\w)" + re.escape(fold(needle)) + r"(?!\w)"
    return re.search(pattern, fold(haystack)) is not None


def version_key(version: str) -> tuple[int, ...]:
    """'3.10' -> (3, 10), so that 3.9 sorts before 3.10."""
    return tuple(int(part) for part in version.split("."))


def as_date(text: str) -> date | None:
    for fmt in DATE_FORMATS:
        try:
            return datetime.strptime(text.strip(), fmt).date()
        except ValueError:
            continue
    return None


def is_short_form(alias: str, canonical: str) -> bool:
    """An alias the page need not state: part of the canonical answer, or the same date."""
    if fold(alias) in fold(canonical):
        return True
    day = as_date(alias)
    return day is not None and day == as_date(canonical)


def schema_problems(raw: dict[str, object]) -> list[str]:
    """What is wrong with the shape of one record (empty if it is well-formed)."""
    expected = set(Question.__annotations__)
    if set(raw) != expected:
        return [f"keys {sorted(raw)} != {sorted(expected)}"]
    problems: list[str] = []
    for key in ("id", "question", "category", "as_of"):
        if not isinstance(raw[key], str) or not raw[key]:
            problems.append(f"{key} must be a non-empty string")
    for key in ("answers", "supporting_doc_ids"):
        value = raw[key]
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            problems.append(f"{key} must be a list of non-empty strings")
    if problems:
        return problems
    category = str(raw["category"])
    if category not in ID_PREFIX:
        problems.append(f"unknown category {category!r}")
    elif not ID_PATTERN.fullmatch(str(raw["id"])) or not str(raw["id"]).startswith(ID_PREFIX[category]):
        problems.append(f"id {raw['id']!r} should look like {ID_PREFIX[category]}001")
    if as_date(str(raw["as_of"])) is None:
        problems.append(f"as_of {raw['as_of']!r} is not a date")
    if not str(raw["question"]).endswith("?"):
        problems.append("question should end with '?'")
    answers = cast(list[str], raw["answers"])
    if not answers:
        problems.append("answers is empty")
    elif len({fold(a) for a in answers}) != len(answers):
        problems.append("answers has duplicates")
    return problems


def answer_problems(q: Question, pages: dict[str, str]) -> list[str]:
    """Check a `new` or `retained` question against the one page that supports it."""
    if len(q["supporting_doc_ids"]) != 1 or q["supporting_doc_ids"][0] not in pages:
        return [f"supporting_doc_ids {q['supporting_doc_ids']} should be one of {sorted(pages)}"]
    page = pages[q["supporting_doc_ids"][0]]
    canonical, *aliases = q["answers"]
    problems = [
        f"answer {a!r} is over {MAX_ANSWER_WORDS} words"
        for a in q["answers"]
        if len(a.split()) > MAX_ANSWER_WORDS
    ]
    if not occurs(canonical, page):
        problems.append(f"canonical answer {canonical!r} is not in the page")
    if occurs(canonical, q["question"]):
        problems.append(f"canonical answer {canonical!r} is given away by the question")
    problems += [
        f"alias {a!r} is neither in the page nor a short form of {canonical!r}"
        for a in aliases
        if not occurs(a, page) and not is_short_form(a, canonical)
    ]
    return problems


def unanswerable_problems(q: Question) -> list[str]:
    problems: list[str] = []
    if q["answers"] != [ABSTAIN_ANSWER]:
        problems.append(f"answers should be [{ABSTAIN_ANSWER!r}]")
    if q["supporting_doc_ids"]:
        problems.append("supporting_doc_ids should be empty")
    return problems


def check(
    questions: list[dict[str, object]], new_pages: dict[str, str], old_pages: dict[str, str]
) -> tuple[list[str], Counter[str], Counter[tuple[str, str]]]:
    """All failures as 'id: problem', and the counts per category and per (category, version)."""
    failures: list[str] = []
    by_category: Counter[str] = Counter()
    by_version: Counter[tuple[str, str]] = Counter()
    seen: set[str] = set()
    for n, raw in enumerate(questions, start=1):
        label = str(raw.get("id", f"line {n}"))
        problems = schema_problems(raw)
        if label in seen:
            problems.append("duplicate id")
        seen.add(label)
        if not problems:
            q = cast(Question, raw)  # shape checked by schema_problems
            if q["category"] == "unanswerable":
                problems = unanswerable_problems(q)
            else:
                problems = answer_problems(q, new_pages if q["category"] == "new" else old_pages)
            by_category[q["category"]] += 1
            for doc in q["supporting_doc_ids"]:
                by_version[q["category"], doc.removeprefix(DOC_PREFIX)] += 1
        failures += [f"{label}: {p}" for p in problems]
    return failures, by_category, by_version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=Path, default=DEFAULT_QUESTIONS)
    parser.add_argument("--pages", type=Path, default=DEFAULT_PAGES)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    args = parser.parse_args(argv)

    try:
        questions = [raw for _, raw in iter_jsonl(args.questions)]
    except ValueError as err:  # names the file and the line
        print(err)
        return 1
    new_pages = load_new_pages(args.pages)
    old_pages = load_old_pages(args.corpus)
    failures, by_category, by_version = check(questions, new_pages, old_pages)

    for failure in failures:
        print(f"FAIL {failure}")
    print(f"{len(questions)} questions: " + ", ".join(f"{c} {n}" for c, n in sorted(by_category.items())))
    for category, version in sorted(by_version, key=lambda key: (key[0], version_key(key[1]))):
        print(f"  {category} {version}: {by_version[category, version]}")
    print(f"{len(failures)} failures" if failures else "OK")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
