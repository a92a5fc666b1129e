"""Verifiable rewards of RLVR: pure functions of a completion and the row's known facts, each in [0, 1].

An RL row (`eval world` writes them to `rl/`) is `{"prompt": [messages], "answers": [...], "kind":
grounded | closed_book | abstain, "passages": [...], "gold_passage": n}`. Three checks, weighted by
`RLVR_WEIGHTS`:

- `answer`: 1 when the answer is a known answer by `core.answers.exact_match`, the eval's exact match
  (for `abstain` rows the known answer is the abstention sentence); `PARTIAL_ANSWER` when a short answer
  (at most `MAX_ANSWER_WORDS` words once normalised, so articles do not count) contains a known answer
  as whole words (`core.answers.contains_answer`), e.g. "The job of X is chemist." A model that answers
  in sentences (SmolLM2) gets exact match 0 on every sample, hence no gradient at all; the partial
  credit gives one, and exact match still pays four times as much.
- `citation` (grounded rows only; None elsewhere, which TRL leaves out of the sum): the first `[n]` cited
  names a passage that contains a known answer (`contains_answer` again). Not "equals `gold_passage`": a
  distractor may state the same fact, and citing it is just as verifiable.
- `format`: grounded: a short answer then one citation; closed book: a short answer, no citation; abstain:
  the abstention sentence and nothing else.

`*_rewards` wrap them with the signature TRL's GRPOTrainer calls reward functions with (the row's columns
as keyword lists, `completions` as chat turns). `length_rewards` is a deliberately hackable reward (longer
is better) for showing the reward-hacking guard; it is no method of the CLI.
"""

from __future__ import annotations

import re
from typing import Any

from core.answers import contains_answer, exact_match, normalise, strip_citations
from core.prompts import ABSTAIN_ANSWER, citations

# Answer first; citation and format shape it (and give a weak model a gradient before it gets answers right).
RLVR_WEIGHTS = {"answer": 1.0, "citation": 0.5, "format": 0.25}
MAX_ANSWER_WORDS = 12
PARTIAL_ANSWER = 0.25
_GROUNDED_FORMAT = re.compile(r"^[^\[\]\n]+ \[\d+\]$")


def answer_reward(completion: str, answers: list[str]) -> float:
    if exact_match(completion, answers):
        return 1.0
    if not 0 < len(normalise(completion).split()) <= MAX_ANSWER_WORDS:
        return 0.0
    return PARTIAL_ANSWER if contains_answer(completion, answers) else 0.0


def citation_reward(completion: str, answers: list[str], kind: str, passages: list[str]) -> float | None:
    if kind != "grounded":
        return None
    cited = citations(completion)
    if not cited or not 1 <= cited[0] <= len(passages):
        return 0.0
    return 1.0 if contains_answer(passages[cited[0] - 1], answers) else 0.0


def format_reward(completion: str, kind: str) -> float:
    text = completion.strip()
    if kind == "abstain":
        return 1.0 if text == ABSTAIN_ANSWER else 0.0
    short = 0 < len(strip_citations(text).split()) <= MAX_ANSWER_WORDS
    if kind == "grounded":
        return 1.0 if short and _GROUNDED_FORMAT.match(text) else 0.0
    return 1.0 if short and not citations(text) and "\n" not in text else 0.0


def length_reward(completion: str, max_words: int = 40) -> float:
    """More words, more reward: a proxy any policy can hack by rambling."""
    return min(len(completion.split()), max_words) / max_words


# -- TRL reward functions: (prompts, completions, **row columns) -> one float (or None) per completion ------


def completion_text(completion: Any) -> str:
    """A completion as TRL passes it: a string, or a list of chat turns (the assistant's)."""
    if isinstance(completion, str):
        return completion
    return "".join(turn["content"] for turn in completion if turn.get("role") == "assistant")


def answer_rewards(completions: list[Any], answers: list[list[str]], **_: Any) -> list[float]:
    return [answer_reward(completion_text(c), a) for c, a in zip(completions, answers, strict=True)]


def citation_rewards(
    completions: list[Any], answers: list[list[str]], kind: list[str], passages: list[list[str]], **_: Any
) -> list[float | None]:
    return [
        citation_reward(completion_text(c), a, k, p)
        for c, a, k, p in zip(completions, answers, kind, passages, strict=True)
    ]


def format_rewards(completions: list[Any], kind: list[str], **_: Any) -> list[float]:
    return [format_reward(completion_text(c), k) for c, k in zip(completions, kind, strict=True)]


def length_rewards(completions: list[Any], **_: Any) -> list[float]:
    return [length_reward(completion_text(c)) for c in completions]


RLVR_FUNCS = {"answer": answer_rewards, "citation": citation_rewards, "format": format_rewards}
