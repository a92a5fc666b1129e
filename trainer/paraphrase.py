"""Paraphrase augmentation of new documents before continued pretraining.

A fact seen in one wording is stored but hard to extract; seen in several, it becomes answerable (Allen-Zhu
& Li, Physics of LMs 3.1; Ovadia et al. 2024). Two rephrasers, chosen with `--paraphraser`:

- `rule`: no model needed. Each version moves leading and trailing adverbials ("On 2025-03-02, X did Y."
  <-> "X did Y on 2025-03-02.") and attributions ("..., a census says." -> "A census says that ..."), and
  shuffles the sentence order (the "permute" augmentation). Deterministic for a seed. A document it cannot
  vary (one sentence, no rule applies) yields fewer versions: the count produced is logged and recorded.
- `model`: an OpenAI-compatible chat endpoint rewrites each document K times (the gateway: `--paraphrase-url
  http://127.0.0.1:8000/v1`; any vLLM or hosted endpoint works). The key, if any, is `KC_API_KEY`.

For the synthetic world, `python -m eval.world.paraphrase` re-renders the post-cutoff facts with the
world's own templates (cleaner than either rephraser); pass its folder as a second `--docs`.
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

logger = logging.getLogger(__name__)

Paraphraser = Literal["rule", "model"]
PARAPHRASERS: tuple[str, ...] = ("rule", "model")

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_PREPOSITIONS = "On|In|At|By|After|Before|During|Since|From|Until|Last|This"
_MONTHS = (
    "January|February|March|April|May|June|July|August|September|October|November|December|"
    "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec"
)
# A date as documents write one (ISO, "4 May 2025", "May 4, 2025", "May 2025") or a year.
DATE = (
    rf"(?:\d{{4}}-\d{{2}}-\d{{2}}|\d{{1,2}} (?:{_MONTHS}) \d{{4}}|(?:{_MONTHS}) \d{{1,2}}, \d{{4}}"
    rf"|(?:{_MONTHS}) \d{{4}}|(?:1[5-9]|20)\d{{2}})"
)
# A leading phrase ends at its comma, unless the comma is inside a date ("On January 4, 2025, ...").
_LEADING = re.compile(rf"^({_PREPOSITIONS}) ((?:{DATE})(?=,)|[^,]{{1,60}}), (.+?)([.!?])$")
_TRAILING = re.compile(rf"^(.+?) (on|in|since|by) ({DATE})([.!?])$")
_SAYS = re.compile(r"^(.+?), (?:a|an|the) ([\w ]{1,40}) (says|said|reports|reported)([.!?])$")

REWRITE_PROMPT = (
    "Rewrite the following text in different words. Keep every fact, name, number and date exactly; "
    "do not add anything. Answer with the rewritten text only.\n\n{text}"
)


@dataclass(frozen=True)
class ParaphraseResult:
    texts: list[tuple[str, str]]  # (source document id, paraphrased text)
    documents: int
    asked: int  # documents x K

    @property
    def produced(self) -> int:
        return len(self.texts)

    def summary(self) -> str:
        return (
            f"paraphrases: {self.produced} texts from {self.documents} documents "
            f"({self.asked} asked: K={self.asked // max(1, self.documents)} each)"
        )


def split_sentences(text: str) -> list[str]:
    """Sentences of a text, paragraph breaks treated as sentence ends."""
    out: list[str] = []
    for para in re.split(r"\n\s*\n", text.strip()):
        para = " ".join(para.split())
        out.extend(s for s in _SENTENCE.split(para) if s)
    return out


def _lower_first(s: str) -> str:
    # Keep a capital that starts a name ("Kelvor Dynamics moved ..."): only lower a plain first word.
    word = s.split(" ", 1)[0]
    return s[0].lower() + s[1:] if word in {"The", "A", "An", "It", "This", "That"} else s


def _upper_first(s: str) -> str:
    return s[:1].upper() + s[1:]


def reorder_clauses(sentence: str) -> str | None:
    """The sentence with one adverbial or attribution moved, or None when no rule applies."""
    if m := _LEADING.match(sentence):
        prep, phrase, rest, end = m.groups()
        return f"{_upper_first(rest)} {prep.lower()} {phrase}{end}"
    if m := _TRAILING.match(sentence):
        rest, prep, date, end = m.groups()
        return f"{prep.capitalize()} {date}, {_lower_first(rest)}{end}"
    if m := _SAYS.match(sentence):
        rest, who, verb, end = m.groups()
        article = "An" if who[:1].lower() in "aeiou" else "A"
        return f"{article} {who} {verb} that {_lower_first(rest)}{end}"
    return None


def rule_paraphrases(text: str, k: int, rng: random.Random) -> list[str]:
    """Up to `k` versions of `text`, each different from the text and from each other."""
    sentences = split_sentences(text)
    if not sentences:
        return []
    seen = {" ".join(sentences)}
    out: list[str] = []
    for attempt in range(4 * k):
        if len(out) >= k:
            break
        version = []
        for s in sentences:
            alt = reorder_clauses(s)
            # Alternate the rewritten and the original wording across versions so that they differ.
            use_alt = alt is not None and (rng.random() < 0.5 if attempt else True)
            version.append(alt if use_alt and alt is not None else s)
        if len(version) > 1:
            rng.shuffle(version)
        joined = " ".join(version)
        if joined not in seen:
            seen.add(joined)
            out.append(joined)
    return out


def model_paraphrases(
    text: str,
    k: int,
    *,
    url: str,
    model: str,
    client: Any,
    temperature: float = 0.8,
    max_tokens: int = 512,
    seed: int = 0,
) -> list[str]:
    """`k` rewrites of `text` by an OpenAI-compatible chat endpoint (sampled, one request each)."""
    out: list[str] = []
    headers = {"Authorization": f"Bearer {key}"} if (key := os.environ.get("KC_API_KEY")) else {}
    for i in range(k):
        body = {
            "model": model,
            "messages": [{"role": "user", "content": REWRITE_PROMPT.format(text=text)}],
            "temperature": temperature,
            "max_tokens": max_tokens,
            "seed": seed + i,
        }
        resp = client.post(f"{url.rstrip('/')}/chat/completions", json=body, headers=headers)
        if resp.status_code != 200:
            raise ValueError(
                f"paraphrase endpoint {url} answered {resp.status_code}: {resp.text[:200]} "
                "(check --paraphrase-url / --paraphrase-model and KC_API_KEY)"
            )
        content = resp.json()["choices"][0]["message"]["content"].strip()
        if content and content != text.strip() and content not in out:
            out.append(content)
    return out


def paraphrase_documents(
    docs: Sequence[tuple[str, str]],
    k: int,
    how: Paraphraser = "rule",
    *,
    seed: int = 0,
    url: str | None = None,
    model: str = "keepcurrent",
    client: Any = None,
) -> ParaphraseResult:
    """K paraphrases of each (id, text) document with the chosen rephraser."""
    if k < 0:
        raise ValueError(f"--paraphrases must be >= 0, got {k}")
    if how not in PARAPHRASERS:
        raise ValueError(f"--paraphraser must be one of {', '.join(PARAPHRASERS)}, got {how!r}")
    texts: list[tuple[str, str]] = []
    if k == 0 or not docs:
        return ParaphraseResult(texts, len(docs), 0)
    if how == "model":
        if not url:
            raise ValueError("--paraphraser model needs --paraphrase-url (an OpenAI-compatible base URL)")
        import httpx

        own = client is None
        client = client or httpx.Client(timeout=120)
        try:
            for i, (doc_id, text) in enumerate(docs):
                found = model_paraphrases(text, k, url=url, model=model, client=client, seed=seed + 1000 * i)
                texts.extend((doc_id, t) for t in found)
        except httpx.HTTPError as e:
            raise ValueError(f"paraphrase endpoint {url} unreachable: {type(e).__name__}: {e}") from None
        finally:
            if own:
                client.close()
    else:
        for doc_id, text in docs:
            rng = random.Random(f"{seed}:{doc_id}")
            texts.extend((doc_id, t) for t in rule_paraphrases(text, k, rng))
    result = ParaphraseResult(texts, len(docs), k * len(docs))
    logger.info("%s", result.summary())
    return result
