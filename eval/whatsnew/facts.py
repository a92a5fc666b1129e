"""A fact: a question a page answers, with the shortest answer the page states verbatim; and the page
its facts are collected from, which keeps only the facts that are fair questions."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from eval.whatsnew.pages import Page
from eval.whatsnew.text import _CODE_REF, _last_part


@dataclass(frozen=True)
class Fact:
    """A question the page answers: `answer` occurs verbatim in paragraph `para` of page `version`."""

    version: str
    kind: str
    question: str
    answer: str
    para: int
    # phrases of the question a passage must contain to answer it (the gold passage must hold them)
    anchors: tuple[str, ...] = ()
    # a passage that matches all of these (case-insensitive regexes) may answer the question another way:
    # it is neither a distractor nor a negative
    conflict: tuple[str, ...] = ()
    # facts with one key ask one question of different versions (distractor rows): `generic` asks it,
    # "{v}" standing for the version
    key: tuple[str, ...] | None = None
    generic: str = ""

    @property
    def aliases(self) -> list[str]:
        """The answer, then the shorter forms of it that the gold passage also states ("634", "batched")."""
        out = [self.answer]
        if m := re.fullmatch(r"PEP (\d+)", self.answer):
            out.append(m[1])
        bare = self.answer.removesuffix("()")
        if "." in bare and " " not in bare and len(_last_part(bare)) >= 4:
            out.append(_last_part(bare))
        return out


class _PageFacts:
    """A page and the facts found in it so far."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.v = page.version
        self.facts: list[Fact] = []
        # code name (without "()") -> how many paragraphs of the page name it
        self.refs: Counter[str] = Counter()
        for p in page.paras:
            self.refs.update({m[0].removesuffix("()") for m in _CODE_REF.finditer(p.text)})

    def add(
        self,
        kind: str,
        question: str,
        answer: str,
        para: int,
        *,
        anchors: tuple[str, ...] = (),
        conflict: tuple[str, ...] = (),
        key: tuple[str, ...] | None = None,
        generic: str = "",
    ) -> None:
        """Keep the fact if its paragraph states the answer verbatim (in at most 12 words) and the question
        does not give it away."""
        answer = answer.strip()
        if not answer or answer not in self.page.paras[para].text or len(answer.split()) > 12:
            return
        if answer.lower() in question.lower():
            return  # the question would give the answer away
        question = " ".join(question.split())
        question = question[0].upper() + question[1:]
        self.facts.append(Fact(self.v, kind, question, answer, para, anchors, conflict, key, generic))
