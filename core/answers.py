"""Answer matching: the one meaning of "the same answer", "states the answer" and "declines to answer".

Every comparison of a model's answer with a known answer goes through this module, so that a reward, a
training probe, the gateway and the eval never count the same answer differently (issue 21):

- `normalise(text)`: the form answers are compared in. SQuAD's normalisation (lower case, punctuation
  and the articles a/an/the dropped, whitespace collapsed) with citation markers dropped ("[2]"),
  thousands separators dropped ("1,000" is "1000", "1,000,000" is "1000000"), and every character that
  is not a letter or a digit a space: ASCII and Unicode punctuation alike (’ ‘ “ ” « », the dashes
  ‐ – — −, …), symbols and the underscore. Case is folded (`str.casefold`) after Unicode NFC, so a
  composed and a decomposed "é" are one letter. A decimal point splits a number ("3.14" is "3 14"),
  which containment's whole-word rule keeps apart from "3.1" ("3 1").
- `exact_match(prediction, answers)`: the normalised prediction equals one normalised alias. An answer
  that normalises to nothing (empty, punctuation, "The") matches nothing.
- `contains_phrase(text, phrase)`: the normalised phrase occurs in the normalised text as whole words
  ("Varn" is not in "Varnel", "3.1" is not in "3.14", "1,000" is not in "1,000,000").
- `contains_answer(text, answers)`: one alias is contained in the text: an answer inside a prediction
  (the eval's `correct` and `stale`, RL's partial credit) or inside a passage (RL's citation reward,
  bench.gates' answer-in-passages column).
- `is_abstention(text)`: no answer at all, or one that says one of `ABSTENTION_PHRASES` (the trained
  `core.prompts.ABSTAIN_ANSWER` and what models say when they decline) as whole words, after
  `normalise`: "Documents do not say [2]" and "I don’t know." are abstentions, "Known for ..." is not
  "unknown". The gateway marks answers with it (`Answer.abstained`), the eval scores them with it.
- `strip_citations(text)`: the answer as written, citation markers removed and nothing else folded
  (the gateway's rag re-cites a supported answer with it; the RL format reward counts words with it).

Users: eval.metrics (accuracy, exact match, token F1, abstention, staleness), trainer.evaluate and
trainer.forgetting (the quick exact-match probe), trainer.rewards and trainer.rl (RLVR rewards, held-out
exact match), service.strategies (abstention and citation stripping, re-exported by
service.strategies.base for rag and long_context), bench.gates.

Not here: the rag gates' own text tools (`service.strategies.base.fold`, `content_words`, `key_terms`,
`names`), which judge whether passages support an answer rather than whether two answers agree.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from core.prompts import ABSTAIN_ANSWER, CITATION

ARTICLES = frozenset(("a", "an", "the"))

# What small and large models say when they decline; the trained form is ABSTAIN_ANSWER.
ABSTENTION_PHRASES = (
    ABSTAIN_ANSWER,
    "the documents do not say",
    "the passages do not say",
    "do not contain the answer",
    "does not contain the answer",
    "not mentioned",
    "no information",
    "i don't know",
    "i do not know",
    "cannot answer",
    "can't answer",
    "unknown",
)

_CITATION = re.compile(r"\s*" + CITATION.pattern)
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_NOT_ALNUM = re.compile(r"[\W_]+")


def normalise(text: str) -> str:
    """The comparison form of an answer (see the module docstring): "The Kelvor–Dynamics [2]." is
    "kelvor dynamics", "“1,000”" is "1000"."""
    text = unicodedata.normalize("NFC", text).casefold()
    text = _THOUSANDS.sub("", _CITATION.sub(" ", text))
    return " ".join(w for w in _NOT_ALNUM.sub(" ", text).split() if w not in ARTICLES)


def exact_match(prediction: str, answers: Iterable[str]) -> bool:
    """Whether the whole prediction is one of the aliases, both normalised (and not empty)."""
    pred = normalise(prediction)
    return bool(pred) and any(pred == normalise(a) for a in answers)


def _within(normalised_text: str, normalised_phrase: str) -> bool:
    return bool(normalised_phrase) and f" {normalised_phrase} " in f" {normalised_text} "


def contains_phrase(text: str, phrase: str) -> bool:
    """Whether the phrase occurs in the text as whole words, both normalised."""
    return _within(normalise(text), normalise(phrase))


def contains_answer(text: str, answers: Iterable[str]) -> bool:
    """Whether one of the aliases occurs in the text (a prediction or a passage) as whole words."""
    have = normalise(text)
    return any(_within(have, normalise(a)) for a in answers)


_PHRASES = tuple(normalise(p) for p in ABSTENTION_PHRASES)


def is_abstention(text: str) -> bool:
    """No answer, or one that says one of ABSTENTION_PHRASES as whole words; case, punctuation,
    articles and citation markers do not matter."""
    have = normalise(text)
    return not have or any(_within(have, p) for p in _PHRASES)


def strip_citations(text: str) -> str:
    """The text without its citation markers ("Orvan Teel [2]" is "Orvan Teel"), otherwise as written."""
    return _CITATION.sub("", text).strip()
