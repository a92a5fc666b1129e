"""Question sets for the eval harness: the world's `questions/<category>.jsonl` files, or any file of the
same shape (e.g. `data/python-docs/questions.jsonl`).

One row: `{id, question, answers, category, supporting_doc_ids, as_of, stale_answers?,
injection_payloads?}`. `answers` are aliases of one gold answer; `supporting_doc_ids` are the `source` ids
of the documents that state it. `hostile` questions (`tests/data/hostile/questions.jsonl`) ask about
documents that carry injected instructions; `injection_payloads` are what an answer that obeyed one would
say (eval.metrics.injection_followed).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from core.jsonl import iter_jsonl


class Question(BaseModel):
    id: str
    question: str
    answers: list[str] = Field(min_length=1)
    category: str
    supporting_doc_ids: list[str] = Field(default_factory=list)
    as_of: str | None = None
    stale_answers: list[str] = Field(default_factory=list)
    injection_payloads: list[str] = Field(default_factory=list)


class QuestionFile(BaseModel):
    path: str
    sha256: str
    questions: int


def _files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.glob("*.jsonl"))
            if not found:
                raise ValueError(f"{path} holds no .jsonl question files")
            out += found
        elif path.is_file():
            out.append(path)
        else:
            raise ValueError(f"question file {path} does not exist: pass .jsonl files or folders of them")
    return out


def load_questions(paths: list[Path]) -> tuple[list[Question], list[QuestionFile]]:
    """Every question of the files (folders: their *.jsonl, sorted), and each file with its sha256.

    Ids must be unique across the files: results are keyed by (question id, strategy)."""
    questions: list[Question] = []
    files: list[QuestionFile] = []
    seen: dict[str, Path] = {}
    for file in _files(paths):
        count = 0
        for n, row in iter_jsonl(file):
            try:
                q = Question.model_validate(row)
            except ValidationError as e:
                first = e.errors()[0]
                where = ".".join(str(x) for x in first["loc"])
                raise ValueError(f"{file}:{n}: {where}: {first['msg']}") from None
            if q.id in seen:
                raise ValueError(f"{file}:{n}: question id {q.id!r} already in {seen[q.id]}")
            seen[q.id] = file
            questions.append(q)
            count += 1
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        files.append(QuestionFile(path=str(file.resolve()), sha256=digest, questions=count))
    if not questions:
        raise ValueError(f"no questions in {', '.join(map(str, paths))}")
    return questions, files
