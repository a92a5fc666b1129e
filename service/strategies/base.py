"""What every strategy shares: its dependencies, the prepared prompt, and the finished answer.

A strategy answers in two steps around generation, so that the gateway can stream between them:
`prepare(question)` retrieves or packs what the prompt needs and builds the chat messages (the sources
are known before the first token), and `finish(prepared, text)` turns the model's text into the answer:
citations mapped to documents, and for rag the support check that may replace it with ABSTAIN_ANSWER.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Protocol

# Answer matching lives in core.answers; re-exported here for the strategies that import it from base.
from core.answers import is_abstention as is_abstention
from core.answers import strip_citations as strip_citations
from core.engine import Completion, Engine, Quote, SamplingParams
from core.prompts import Message
from core.protocols import Retriever
from service.api_schemas import Citation, Coverage, StrategyName
from service.documents import DocumentStore
from service.settings import ServiceSettings


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
    quote: Quote | None = None  # quote mode: what the answer must be a verbatim span of

    def sampling(self, params: SamplingParams | None) -> SamplingParams:
        """The request's sampling parameters (max_tokens by default) with this prompt's quote constraint."""
        params = params or SamplingParams(max_tokens=self.max_tokens)
        return params if self.quote is None else dataclasses.replace(params, quote=self.quote)


@dataclass
class Finished:
    text: str
    citations: list[Citation]
    abstained: bool
    abstain_reason: str | None = None
    model_text: str | None = None  # the model's own text when the gateway replaced it


@dataclass
class Spent:
    """What the routes `auto` tried before the one that answers cost: it counts in the answer's usage and
    latency (a fallback pays for its failed first try)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    retrieve_ms: float = 0.0
    generate_ms: float = 0.0

    def add(self, done: Completion) -> None:
        self.prompt_tokens += done.prompt_tokens
        self.completion_tokens += done.completion_tokens


class Finisher(Protocol):
    """What turns the model's text into the answer: a strategy, or auto's check of the route it took."""

    def finish(self, prepared: Prepared, text: str) -> Finished: ...


class Strategy(Finisher, Protocol):
    name: StrategyName

    async def prepare(
        self, question: str, *, model: str | None, k: int | None, max_tokens: int
    ) -> Prepared: ...


def with_history(messages: list[Message], history: list[Message] | None) -> list[Message]:
    """A strategy's messages with earlier chat turns between its system prompt and its question."""
    return [messages[0], *history, *messages[1:]] if history else messages


# --- text helpers of rag's relevance gate and support check (answer matching itself: core.answers) ---

STOPWORDS = frozenset(
    """a an the of in on at to for by with from is was were are be been being did does do what which who whom
    whose when where how why that this these those it its as and or not no there their they he she his her
    has have had will would can could about into than then so""".split()  # noqa: SIM905 (60 lines as a list)
)
_WORD = re.compile(r"[^\W_]+")
# A word, number or identifier with its inner dots, underscores, hyphens and apostrophes kept whole:
# "asyncio.TaskGroup", "2.4x", "RISC-V", "__lazy_modules__", "Python's".
_TOKEN = re.compile(r"\w+(?:[.\-'’]\w+)*")
_POSSESSIVE = re.compile(r"['’]s$", re.IGNORECASE)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_INNER_JOIN = re.compile(r"\w[._]\w")
_SENTENCE_END = re.compile(r"[.!?:]")


def content_words(text: str) -> list[str]:
    """Lower-cased words and numbers without stopwords ("732,000" gives "732", "000")."""
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def fold(text: str) -> str:
    """Every word and number, lower-cased, one space apart and padded with one, so that `f" {x} " in
    fold(text)` asks whether x occurs verbatim as whole words ("2.4x" is "2 4x" on both sides)."""
    return f" {' '.join(_WORD.findall(text.lower()))} "


def _tokens(text: str) -> list[tuple[str, bool, bool]]:
    """(token, starts a sentence, follows the previous token across nothing but spaces), possessives
    stripped: "Python's" is "Python", and ends a name ("Python's asyncio" is two)."""
    out = []
    end = 0
    possessive = False
    for m in _TOKEN.finditer(text):
        gap = text[end : m.start()]
        token = _POSSESSIVE.sub("", m.group())
        initial = end == 0 or _SENTENCE_END.search(gap) is not None
        out.append((token, initial, gap.isspace() and not possessive))
        possessive, end = token != m.group(), m.end()
    return out


def _is_number(token: str) -> bool:
    return _NUMBER.fullmatch(token) is not None


def _identifier(token: str) -> bool:
    """Spelt as a name or identifier wherever it stands: a capital after the first letter (CPython, PEP,
    TypeForm, RISC-V), letters with digits (abi3t, UTF-8, 2.4x) or an inner dot or underscore
    (asyncio.TaskGroup, sys._jit, __lazy_modules__); a plain number is not one."""
    if _is_number(token):
        return False
    return (
        any(c.isupper() for c in token[1:])
        or (any(c.isdigit() for c in token) and any(c.isalpha() for c in token))
        or _INNER_JOIN.search(token) is not None
    )


def _name_word(token: str, initial: bool) -> bool:
    """A capital marks a name only inside a sentence: at its start ("According to ...", "Starting with
    ...", "After ...") every word has one, so there only an identifier's spelling counts."""
    if token.lower() in STOPWORDS or token == "I":  # "I" is capitalised by spelling, not as a name
        return False
    return _identifier(token) or (token[0].isupper() and not initial)


def names(text: str) -> list[tuple[str, ...]]:
    """The names a text mentions, each as its lower-cased words, in order and without repeats.

    A name is a run of name words with only spaces between them ("Larry Hastings", "C API", "IANA Time
    Zone Database"), closed by a number that follows it ("PEP 750", "Python 3.14", "Clang 19")."""
    runs: list[list[str]] = []
    current: list[str] = []
    for token, initial, joined in _tokens(text):
        number = _is_number(token)
        if current and joined and not _is_number(current[-1]) and (number or _name_word(token, initial)):
            current.append(token)
            continue
        if current:
            runs.append(current)
        current = [token] if not number and _name_word(token, initial) else []
    if current:
        runs.append(current)
    found = (tuple(dict.fromkeys(content_words(" ".join(run)))) for run in runs)
    return list(dict.fromkeys(n for n in found if n))


def key_terms(text: str) -> list[str]:
    """The tokens that carry a short answer's facts: numbers, identifiers and names (a capitalised word
    inside a sentence), in order, as written."""
    return list(
        dict.fromkeys(
            token for token, initial, _ in _tokens(text) if _is_number(token) or _name_word(token, initial)
        )
    )
