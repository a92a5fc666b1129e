"""The world's data model: entities, facts, documents, questions, and how values are written out."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["person", "org", "city", "product", "event"]
Pool = Literal["train", "eval"]
Era = Literal["pre", "post"]
Category = Literal["retained", "new", "updated", "unanswerable", "multi_hop"]
CATEGORIES: tuple[Category, ...] = ("retained", "new", "updated", "unanswerable", "multi_hop")
KINDS: tuple[Kind, ...] = ("person", "org", "city", "product", "event")
POOLS: tuple[Pool, ...] = ("train", "eval")

MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Entity:
    id: str
    kind: Kind
    name: str
    pool: Pool
    era: Era  # "post": the entity first appears after the cutoff


@dataclass(frozen=True, slots=True)
class Fact:
    """One attribute value of one entity, valid from `era` on (until a post fact `replaces` it)."""

    id: str
    subject: str  # entity id
    attr: str
    value: str  # as written in documents and as the canonical answer
    aliases: tuple[str, ...]  # value first
    era: Era
    obj: str | None = None  # entity id, where the value is an entity
    replaces: str | None = None  # the pre-cutoff fact this post-cutoff fact updates
    # Facts that follow from this one: "the CEO of X is P" also says P works for X as chief executive.
    entails: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Document:
    id: str  # "pre-0001" | "post-0001": the `source` in front matter and in supporting_doc_ids
    era: Era
    kind: str  # the subject's kind for profiles, "news" for post-cutoff items
    title: str
    date: dt.date
    body: str
    subject: str  # the entity the document is about
    facts: tuple[str, ...]  # facts its sentences state
    implied: tuple[str, ...]  # facts those entail
    mentions: tuple[str, ...]  # every entity named in it
    pool: Pool


@dataclass(frozen=True, slots=True)
class Question:
    id: str
    question: str
    answers: tuple[str, ...]
    category: Category
    supporting_doc_ids: tuple[str, ...]
    as_of: str
    stale_answers: tuple[str, ...] | None = None
    bridge: str | None = None  # multi_hop: the intermediate entity joining the two facts
    # Not written out: what the tests check against the documents.
    subject: str = field(default="", compare=False)
    facts: tuple[str, ...] = field(default=(), compare=False)

    def to_row(self) -> dict[str, object]:
        row: dict[str, object] = {
            "id": self.id,
            "question": self.question,
            "answers": list(self.answers),
            "category": self.category,
            "supporting_doc_ids": list(self.supporting_doc_ids),
            "as_of": self.as_of,
        }
        if self.stale_answers is not None:
            row["stale_answers"] = list(self.stale_answers)
        if self.bridge is not None:
            row["bridge"] = self.bridge
        return row


def article(noun: str) -> str:
    return ("an " if noun[0].lower() in "aeiou" else "a ") + noun


def year_value(year: int) -> tuple[str, tuple[str, ...]]:
    return str(year), (str(year),)


def date_value(day: dt.date) -> tuple[str, tuple[str, ...]]:
    """'March 14, 2025', also accepted as '2025-03-14' and '14 March 2025'."""
    month = MONTHS[day.month - 1]
    text = f"{month} {day.day}, {day.year}"
    return text, (text, day.isoformat(), f"{day.day} {month} {day.year}")


def number_value(n: int) -> tuple[str, tuple[str, ...]]:
    return f"{n:,}", (f"{n:,}", str(n))


def name_value(entity: Entity) -> tuple[str, tuple[str, ...]]:
    if entity.kind == "org":
        # "Kelvor Dynamics" is also called "Kelvor".
        return entity.name, (entity.name, entity.name.split(" ")[0])
    if entity.kind in ("product", "event"):
        return entity.name, (entity.name, f"the {entity.name}")
    return entity.name, (entity.name,)


def phrase_value(text: str, *more: str) -> tuple[str, tuple[str, ...]]:
    return text, (text, *more)


def contains_phrase(text: str, phrase: str) -> bool:
    """Whether `phrase` occurs in `text` as whole words: "Varn" is not in "Varnel"."""
    if phrase not in text:  # most calls: no regex to compile for a phrase seen once
        return False
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text) is not None
