"""What every strategy shares: its dependencies, the prepared prompt, and the finished answer.

A strategy answers in two steps around generation, so that the gateway can stream between them:
`prepare(question)` retrieves or packs what the prompt needs and builds the chat messages (the sources
are known before the first token), and `finish(prepared, text)` turns the model's text into the answer:
citations mapped to documents, and for rag the support check that may replace it with ABSTAIN_ANSWER.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from core.engine import Engine
from core.prompts import ABSTAIN_ANSWER, Message
from core.protocols import Retriever
from service.config import ServiceSettings
from service.documents import DocumentStore
from service.protocol import Citation, Coverage, StrategyName


@dataclass
class StrategyContext:
    engine: Engine
    retriever: Retriever
    documents: DocumentStore
    settings: ServiceSettings
    chat_model: str
    cpt_model: str | None


@dataclass
class Prepared:
    strategy: StrategyName
    question: str
    model: str
    messages: list[Message]
    max_tokens: int
    sources: list[Citation] = field(default_factory=list)
    retrieve_ms: float = 0.0
    index_version: int | None = None
    coverage: Coverage | None = None
    abstain_reason: str | None = None  # set when the answer is ABSTAIN_ANSWER without asking the model


@dataclass
class Finished:
    text: str
    citations: list[Citation]
    abstained: bool
    abstain_reason: str | None = None
    model_text: str | None = None  # the model's own text when the gateway replaced it


class Strategy(Protocol):
    name: StrategyName

    async def prepare(
        self, question: str, *, model: str | None, k: int | None, max_tokens: int
    ) -> Prepared: ...

    def finish(self, prepared: Prepared, text: str) -> Finished: ...


# --- text helpers shared by rag's relevance gate and support check ---

STOPWORDS = frozenset(
    """a an the of in on at to for by with from is was were are be been being did does do what which who whom
    whose when where how why that this these those it its as and or not no there their they he she his her
    has have had will would can could about into than then so""".split()  # noqa: SIM905 (60 lines as a list)
)
_WORD = re.compile(r"[^\W_]+")
_CITE = re.compile(r"\s*\[\d+\]")


def content_words(text: str) -> list[str]:
    """Lower-cased words and numbers without stopwords ("732,000" gives "732", "000")."""
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def names(question: str) -> set[str]:
    """The question's capitalised words (names of people, places, things), lower-cased."""
    return {w.lower() for w in _WORD.findall(question) if w[0].isupper() and w.lower() not in STOPWORDS}


def strip_citations(text: str) -> str:
    return _CITE.sub("", text).strip()


def is_abstention(text: str) -> bool:
    return strip_citations(text).strip().rstrip(".").lower() == ABSTAIN_ANSWER.rstrip(".").lower()
