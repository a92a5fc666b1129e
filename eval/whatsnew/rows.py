"""The rows of one fact: a reading row (the gold passage among typed distractors), an RL row, an abstain
row (hard negatives only) and distractor rows (the same statement in another version's page)."""

from __future__ import annotations

import random
import re

from core.answers import contains_answer
from core.prompts import ABSTAIN_ANSWER, Message, cite, grounded_messages
from eval.whatsnew.config import Row, WhatsNewConfig
from eval.whatsnew.facts import Fact
from eval.whatsnew.pages import Page, version_key
from eval.whatsnew.passages import ChunkIndex, may_answer, passage_window
from eval.whatsnew.text import _CODE_REF

# Facts whose answers have a type a passage can hold another value of: (kinds, what such a value looks
# like in a passage). Code names: the pages' own markup of identifiers.
_CREDIT = re.compile(r"\b(?:[Cc]ontributed|[Ww]ritten|[Ii]mplemented|[Pp]atch(?:ed)?|[Aa]dded) by [A-Z]")
_TYPED: tuple[tuple[frozenset[str], re.Pattern[str]], ...] = (
    (frozenset({"pep"}), re.compile(r"\bPEP \d+")),
    (frozenset({"issue"}), re.compile(r"\b(?:gh|bpo)-\d+")),
    (frozenset({"contributor", "pep_author", "editor"}), _CREDIT),
    (frozenset({"library_version", "faster"}), re.compile(r"\b\d+\.\d+(?:\.\d+)?\b|\b\d+(?:\.\d+)?(?:x|%)")),
    (
        frozenset({"added", "cloze", "param", "new_module", "removed", "renamed", "replacement", "supports",
                   "deprecated"}),
        _CODE_REF,
    ),
)  # fmt: skip


def _typed(fact: Fact) -> re.Pattern[str] | None:
    """What a passage holding another answer of the fact's type contains, if the type is known."""
    return next((pattern for kinds, pattern in _TYPED if fact.kind in kinds), None)


def _sft(messages: list[Message], answer: str, kind: str) -> Row:
    return {"messages": [*messages, {"role": "assistant", "content": answer}], "kind": kind}


def _question(row: Row) -> str:
    messages = row["messages"]
    assert isinstance(messages, list)
    return str(messages[1]["content"]).rsplit("\n\nQuestion: ", 1)[1]


def _interleave(a: list[int], b: list[int]) -> list[int]:
    return [x[k] for k in range(max(len(a), len(b))) for x in (a, b) if k < len(x)]


class _Rows:
    """The rows of facts; every choice is drawn from one seeded generator, in a fixed order."""

    def __init__(self, cfg: WhatsNewConfig, pages: list[Page], index: ChunkIndex, rng: random.Random) -> None:
        self.cfg = cfg
        self.pages = {p.version: p for p in pages}
        self.order = [p.version for p in pages]
        self.index = index
        self.rng = rng

    def window(self, fact: Fact) -> str | None:
        target = self.rng.randint(self.cfg.min_words, (self.cfg.min_words + self.cfg.max_words) // 2)
        return passage_window(self.pages[fact.version], fact, target, self.cfg.max_words)

    def n_passages(self) -> int:
        return self.rng.choice((3, 4)) if self.rng.random() < self.cfg.multi_share else 1

    def distractors(self, fact: Fact, gold: str, n: int) -> list[str]:
        """`n` chunks (shown as passages) that neither state the answer nor may answer the question another
        way, holding a value of the asked type where enough chunks do: the first is the one BM25 ranks
        highest for the question, the others are drawn at random."""
        chosen: list[int] = []
        typed = _typed(fact)

        def fits(i: int, any_type: bool = False) -> bool:
            text = self.index.texts[i]
            overlaps_gold = gold[:80] in text or text[:80] in gold
            of_type = any_type or typed is None or typed.search(text) is not None
            return i not in chosen and of_type and not overlaps_gold and not may_answer(text, fact)

        ranked = self.index.search(fact.question, 20)
        hard = next((i for i in ranked if fits(i)), next((i for i in ranked if fits(i, True)), None))
        if hard is not None and n > 0:
            chosen.append(hard)
        for any_type in (False, True):
            for _ in range(40 * n):
                if len(chosen) >= n:
                    break
                i = self.rng.randrange(len(self.index.texts))
                if fits(i, any_type):
                    chosen.append(i)
        return [self.index.shown[i] for i in chosen]

    def grounded(self, fact: Fact) -> tuple[list[Message], list[str], int] | None:
        """The prompt, its passages and the gold passage's 1-based number; None when no window fits."""
        gold = self.window(fact)
        if gold is None:
            return None
        assert fact.answer in gold, (fact, gold)
        n = self.n_passages()
        passages = self.distractors(fact, gold, n - 1) if n > 1 else []
        at = self.rng.randrange(len(passages) + 1)
        passages.insert(at, self.pages[fact.version].shown(gold))
        return grounded_messages(fact.question, passages), passages, at + 1

    def reading(self, fact: Fact) -> Row | None:
        made = self.grounded(fact)
        if made is None:
            return None
        messages, _, gold = made
        return _sft(messages, cite(fact.answer, gold), "reading")

    def rl(self, fact: Fact) -> Row | None:
        made = self.grounded(fact)
        if made is None:
            return None
        messages, passages, gold = made
        return {"prompt": messages, "answers": fact.aliases, "kind": "grounded", "passages": passages,
                "gold_passage": gold}  # fmt: skip

    def abstain(self, fact: Fact) -> Row | None:
        """The question with the chunks BM25 ranks highest for it that cannot answer it."""
        n = self.n_passages()
        # As asked, the question ranks its version's page high (its "Python 3.12"); without the version,
        # the chunks about its subject in other pages: the negatives alternate between the two rankings.
        bare = re.sub(r"\s*\b(?:in|In|for) Python \d+\.\d+,?", "", fact.question)
        ranked = _interleave(self.index.search(fact.question, 30), self.index.search(bare, 30))
        texts = {self.index.texts[i]: self.index.shown[i] for i in ranked}
        negatives = [shown for t, shown in texts.items() if not may_answer(t, fact)][:n]
        if not negatives:
            return None
        self.rng.shuffle(negatives)
        return _sft(grounded_messages(fact.question, negatives), ABSTAIN_ANSWER, "abstain")

    def distractor(self, fact: Fact, others: list[Fact], count: int) -> list[Row]:
        """Up to `count` rows, each pairing the fact's passage with the same statement in another version's
        page (nearest version first) that gives another value, both passages dated."""
        at = self.order.index(fact.version)
        near = sorted(others, key=lambda g: (abs(self.order.index(g.version) - at), version_key(g.version)))
        gold = self.window(fact)
        rows: list[Row] = []
        for other in near:
            if gold is None or len(rows) == count:
                break
            text = self.window(other)
            if (
                other.answer == fact.answer
                or text is None
                or contains_answer(text, fact.aliases)
                or contains_answer(gold, other.aliases)
            ):
                continue
            mine = self.pages[fact.version].shown(gold)
            passages = [mine, self.pages[other.version].shown(text)]
            self.rng.shuffle(passages)
            question = fact.generic.format(v=fact.version)
            answer = cite(fact.answer, passages.index(mine) + 1)
            rows.append(_sft(grounded_messages(question, passages), answer, "distractor"))
        return rows
