"""N-gram overlap between eval questions (with their answers) and a training corpus.

    python -m eval contamination --questions data/world/questions --corpus data/world/sft [--n 13] [--json]

A question is contaminated when any n-gram of "question answer" (lower-cased words) occurs in the corpus,
as in GPT-3's 13-gram test. Questions shorter than n words are matched as a whole, so that short factual
questions are checked at all. The corpus is chat/RL/preference .jsonl, .json, or text/markdown files,
given as files or folders. A JSON row is read as the model is trained on it: the strings of its fields
joined in order (a user question and the assistant answer after it are adjacent), leaving out metadata
such as message roles and row kinds.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import BaseModel, Field

from core.jsonl import iter_jsonl

logger = logging.getLogger(__name__)

CORPUS_SUFFIXES = (".jsonl", ".json", ".md", ".markdown", ".txt")
_WORD = re.compile(r"\w+")
# Values of these keys are labels, not text a model reads; between a question and its answer a "role"
# label would hide the pair.
METADATA_KEYS = frozenset(
    ("role", "kind", "rejected_kind", "category", "id", "source", "as_of", "supporting_doc_ids")
)


class Hit(BaseModel):
    id: str
    category: str
    ngram: str = Field(description="The first n-gram of the question found in the corpus.")
    source: str = Field(description="Where it was found: file, and line for jsonl.")


class CategoryCount(BaseModel):
    questions: int = 0
    contaminated: int = 0


class ContaminationReport(BaseModel):
    n: int
    questions: int
    contaminated: int
    rate: float
    by_category: dict[str, CategoryCount]
    corpus_files: int
    corpus_texts: int
    corpus_words: int
    skipped_files: list[str] = Field(description="Files under a corpus folder with an unknown suffix.")
    hits: list[Hit] = Field(description="One per contaminated question, in question order.")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def question_text(row: dict[str, object]) -> str:
    """The question followed by its first answer: the string a leak would reproduce."""
    answers = row.get("answers") or []
    first = answers[0] if isinstance(answers, list) and answers else ""
    return f"{row['question']} {first}"


def _expand(paths: Iterable[Path], suffixes: tuple[str, ...], what: str) -> tuple[list[Path], list[str]]:
    """Files named directly, plus the files with a known suffix under named folders (sorted)."""
    files: list[Path] = []
    skipped: list[str] = []
    for path in paths:
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
                if f.suffix.lower() in suffixes:
                    files.append(f)
                else:
                    skipped.append(str(f))
        else:
            raise FileNotFoundError(f"{what} {path}: no such file or directory")
    return files, skipped


def load_questions(paths: list[Path]) -> list[dict[str, object]]:
    files, _ = _expand(paths, (".jsonl",), "--questions")
    rows: list[dict[str, object]] = []
    for f in files:
        for lineno, row in iter_jsonl(f):
            if not isinstance(row, dict) or not isinstance(row.get("question"), str):
                raise ValueError(f"{f}:{lineno}: a question row needs a string 'question' field")
            rows.append(row)
    if not rows:
        raise ValueError(f"no questions in {', '.join(str(p) for p in paths)}")
    return rows


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            if k not in METADATA_KEYS:
                yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def row_text(row: object) -> str:
    """A JSON row as the model is trained on it: its strings in order, metadata left out."""
    return "\n".join(_strings(row))


def iter_corpus(files: list[Path]) -> Iterator[tuple[str, str]]:
    """(source, text) for every text of the corpus files."""
    for f in files:
        if f.suffix.lower() == ".jsonl":
            for lineno, line in enumerate(f.read_text(encoding="utf-8").splitlines(), start=1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ValueError(f"{f}:{lineno}: not valid JSON ({exc.msg})") from exc
                    yield f"{f}:{lineno}", row_text(row)
        elif f.suffix.lower() == ".json":
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{f}: not valid JSON ({exc.msg})") from exc
            rows = data if isinstance(data, list) else [data]
            for i, row in enumerate(rows):
                yield f"{f}[{i}]", row_text(row)
        else:
            try:
                yield str(f), f.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{f}: not UTF-8 text") from exc


class QuestionGrams:
    """The n-grams of eval questions (each "question answer"), to probe texts with.

    Questions shorter than n words are one gram of their whole length."""

    def __init__(self, questions: list[dict[str, object]], n: int = 13) -> None:
        if n < 1:
            raise ValueError(f"--n must be at least 1, got {n}")
        self.n = n
        self.grams: dict[tuple[str, ...], list[int]] = {}
        lengths_by_first: dict[str, set[int]] = {}
        for qi, row in enumerate(questions):
            toks = words(question_text(row))
            size = min(n, len(toks))
            for i in range(len(toks) - size + 1):
                gram = tuple(toks[i : i + size])
                self.grams.setdefault(gram, []).append(qi)
                lengths_by_first.setdefault(gram[0], set()).add(size)
        self.lengths = {first: sorted(sizes) for first, sizes in lengths_by_first.items()}

    def matches(self, toks: list[str]) -> Iterator[tuple[int, str]]:
        """(question index, the n-gram) for every gram of a question among the words `toks`."""
        # Only positions that start some question's n-gram can match: a dictionary probe per word.
        for i, tok in enumerate(toks):
            for size in self.lengths.get(tok, ()):
                gram = tuple(toks[i : i + size])
                for qi in self.grams.get(gram, ()):
                    yield qi, " ".join(gram)


def find_overlap(
    questions: list[dict[str, object]], corpus: Iterable[tuple[str, str]], n: int = 13
) -> tuple[dict[int, Hit], int, int]:
    """Contaminated questions by index, and the number of corpus texts and words scanned."""
    grams = QuestionGrams(questions, n)
    hits: dict[int, Hit] = {}
    n_texts = n_words = 0
    for source, text in corpus:
        toks = words(text)
        n_texts += 1
        n_words += len(toks)
        for qi, gram in grams.matches(toks):
            if qi not in hits:
                row = questions[qi]
                hits[qi] = Hit(
                    id=str(row.get("id", qi)),
                    category=str(row.get("category", "")),
                    ngram=gram,
                    source=source,
                )
    return hits, n_texts, n_words


def check_contamination(
    questions_paths: Iterable[Path], corpus_paths: Iterable[Path], n: int = 13
) -> ContaminationReport:
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    questions = load_questions(list(questions_paths))
    files, skipped = _expand(list(corpus_paths), CORPUS_SUFFIXES, "--corpus")
    if not files:
        raise ValueError(
            f"no corpus files ({', '.join(CORPUS_SUFFIXES)}) under {', '.join(map(str, corpus_paths))}"
        )
    hits, n_texts, n_words = find_overlap(questions, iter_corpus(files), n)
    by_category: dict[str, CategoryCount] = {}
    for qi, row in enumerate(questions):
        counts = by_category.setdefault(str(row.get("category", "")), CategoryCount())
        counts.questions += 1
        counts.contaminated += qi in hits
    report = ContaminationReport(
        n=n,
        questions=len(questions),
        contaminated=len(hits),
        rate=round(len(hits) / len(questions), 6),
        by_category=by_category,
        corpus_files=len(files),
        corpus_texts=n_texts,
        corpus_words=n_words,
        skipped_files=skipped,
        hits=[hits[qi] for qi in sorted(hits)],
    )
    logger.info(
        "%d of %d questions share a %d-gram with the corpus", report.contaminated, report.questions, n
    )
    return report


def format_report(report: ContaminationReport, max_hits: int = 20) -> str:
    lines = [
        f"{report.contaminated} of {report.questions} questions contaminated ({report.rate:.1%}) "
        f"at n={report.n}; corpus: {report.corpus_files} files, {report.corpus_texts} texts, "
        f"{report.corpus_words} words",
    ]
    for category, c in report.by_category.items():
        lines.append(f"  {category or '(none)':<14}{c.contaminated:>6} / {c.questions}")
    for hit in report.hits[:max_hits]:
        lines.append(f"  {hit.id}: '{hit.ngram}' in {hit.source}")
    if len(report.hits) > max_hits:
        lines.append(f"  ... and {len(report.hits) - max_hits} more (--json lists all)")
    if report.skipped_files:
        lines.append(f"  skipped {len(report.skipped_files)} files with other suffixes")
    return "\n".join(lines)
