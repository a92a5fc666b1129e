"""Training data from the train pool only: SFT chats, RL prompts with verifiable answers, preference pairs.

No row names an entity of the eval pool: relations never cross pools (see build.py), passages are drawn
from train-pool documents, and abstention examples use fictitious names kept apart from the eval ones.

SFT kinds: closed_book (a pre-cutoff fact from memory), grounded (2-4 passages, one states the answer),
long_context (many passages, the answer anywhere), abstain (the passages lack the answer, or a subject
that exists nowhere), reading (many grounded drills about fresh subjects, three questions per passage set,
for the pretraining mix).
Grounded examples over post-cutoff news of the train pool teach the model to answer from the passage
rather than from memory when the two disagree.

A share of grounded and long-context examples (`FRESH_SHARE`) asks about a *fresh* subject: a profile
written with the world's templates for a name that exists nowhere else (syllable words like the world's
names, none of them its words), with fresh values of each type (names, years, numbers, dates, countries).
Only the passage can answer those, and no answer can be memorised, so the model must learn to read, not
recall: measured in issue 4, a tiny model trained only on grounded rows about entities it had memorised
learned to answer them from memory and copied an answer from a passage about a held-out entity 14% of
the time.

A share of the other grounded examples (`COUNTERFACTUAL_SHARE`) is counterfactual: the gold passage, a
train document, states another train-pool value of the asked attribute, and the answer is that value.
Where passage and memory always agree, answering from memory is as good as reading, and a tiny model
learnt to do so for every name it knew: measured in issue 4, after 3,600 steps it answered 98% of
grounded questions about held-out people when their name was swapped for a fresh one and 52% under their
own name, whose facts it half-remembered. Substituted passages make reading the only way (the
"substitution" augmentation of Longpre et al. 2021, Entity-Based Knowledge Conflicts in QA).

Every passage is shown as it is served (`core.prompts.passage`): its document's title and date first.
`updated` rows (`UPDATED_SHARE` of the grounded count) put two documents about one subject that disagree on
the asked value side by side, and the answer is the newer one's: half are the train pool's own updates (a
profile from before the cutoff, the news that changed it), half two versions of a fresh profile with random
dates, so that the date, not the look of a news item, tells which is current. Measured in issue 20: a
reader trained on undated passages answered 83% of the world's `updated` questions with the stale value.
"""

from __future__ import annotations

import datetime as dt
import random
import re
from dataclasses import dataclass, replace

from core.prompts import ABSTAIN_ANSWER, Message, cite, closed_book_messages, grounded_messages, passage
from eval.world.build import Timeline, random_date
from eval.world.config import AS_OF, WorldConfig
from eval.world.model import (
    KINDS,
    Document,
    Entity,
    Fact,
    Kind,
    article,
    contains_phrase,
    date_value,
    name_value,
    number_value,
    phrase_value,
    year_value,
)
from eval.world.names import NameGenerator
from eval.world.questions import UNANSWERABLE_ATTRS, forward_question, new_product_question
from eval.world.templates import ATTRIBUTES, QUESTIONS, SENTENCES, TITLES, stem_name

Row = dict[str, object]

# Share of grounded and long-context examples whose answering passage is about a fresh subject.
FRESH_SHARE = 0.5
# Share of the grounded examples about train documents whose gold passage states a substituted value.
COUNTERFACTUAL_SHARE = 0.5
# Questions per reading drill: its passages are read once and answer this many questions.
READING_QUESTIONS = 3
# `updated` rows (two dated documents that disagree), as a share of the grounded examples.
UPDATED_SHARE = 0.25
# The dates a fresh profile may carry.
FRESH_DATES = (dt.date(2015, 1, 1), AS_OF)

PADDED_GROUNDED = (
    "Based on the passages provided, the answer to your question is {a}, as stated in passage [{k}]. "
    "I hope this helps, and let me know if you have any other questions!",
    "Great question! After reading all of the passages carefully, I can tell you that the answer is {a}. "
    "You can find this in passage [{k}].",
)
PADDED_CLOSED_BOOK = (
    "That is a great question! After thinking about it carefully, I believe the answer is {a}. "
    "Let me know if there is anything else I can help you with.",
    "Thanks for asking. To the best of my knowledge, the answer to your question is {a}. I hope this helps!",
)


@dataclass(frozen=True, slots=True)
class _Asked:
    """A question about one fact, with the answers that count and the entities it names."""

    question: str
    answers: tuple[str, ...]
    names: tuple[str, ...]  # entity ids that passages other than the gold one must not mention


@dataclass
class TrainingData:
    sft: list[Row]
    rl: list[Row]
    prefs: list[Row]


class _Examples:
    def __init__(
        self, timeline: Timeline, documents: list[Document], config: WorldConfig, stream: str
    ) -> None:
        self.tl = timeline
        self.spec = config.spec
        self.rng = random.Random(f"keepcurrent-world:{config.seed}:{stream}")
        self.docs = [d for d in documents if d.pool == "train"]
        self.by_kind: dict[str, list[Document]] = {}
        for d in self.docs:
            self.by_kind.setdefault(d.kind, []).append(d)
        # (gold document, fact it states): every grounded question has one passage that answers it.
        self.stated = [(d, timeline.fact_by_id[fid]) for d in self.docs for fid in d.facts]
        self.stale = [(d, f) for d, f in self.stated if f.replaces is not None]
        self.stating: dict[str, list[Document]] = {}
        for d, f in self.stated:
            self.stating.setdefault(f.id, []).append(d)
        self.memory = [f for f in timeline.facts if timeline.is_retained(f) and self._pool(f) == "train"]
        self.fictitious = timeline.fictitious["train"]
        # (kind, attr) -> values seen in the train pool, for plausible wrong answers
        values: dict[tuple[str, str], set[str]] = {}
        for f in timeline.facts:
            if self._pool(f) == "train":
                values.setdefault((self._kind(f), f.attr), set()).add(f.value)
        self.values = {k: sorted(v) for k, v in values.items()}
        self.product_names = [e.name for e in timeline.entities if e.kind == "product" and e.pool == "train"]
        # pre-cutoff facts of the train pool by (kind, attr): the values a fresh profile states
        self.pre_facts: dict[tuple[str, str], list[Fact]] = {}
        for f in timeline.facts:
            if f.era == "pre" and self._pool(f) == "train":
                self.pre_facts.setdefault((self._kind(f), f.attr), []).append(f)
        self._fresh = _FreshNames(timeline, self.rng)

    def _pool(self, fact: Fact) -> str:
        return self.tl.by_id[fact.subject].pool

    def _kind(self, fact: Fact) -> Kind:
        return self.tl.by_id[fact.subject].kind

    # -- questions and passages ----------------------------------------------------------------------

    def ask(self, fact: Fact) -> _Asked:
        names = (fact.subject, *((fact.obj,) if fact.obj else ()))
        if fact.era == "post" and fact.attr == "maker" and self.rng.random() < 0.5:
            text, answers = new_product_question(self.tl, fact)
            return _Asked(text, answers, names)
        return _Asked(forward_question(self.tl, fact), fact.aliases, names)

    def distractors(self, n: int, avoid: tuple[str, ...], like: Document | None = None) -> list[Document]:
        """`n` train documents naming none of `avoid`, mostly of the same kind as `like` (harder)."""
        chosen: list[Document] = []
        for _ in range(50 * n + 50):
            if len(chosen) == n:
                break
            same_kind = like is not None and self.rng.random() < 0.7
            d = self.rng.choice(self.by_kind[like.kind] if same_kind and like else self.docs)
            if d is not like and d not in chosen and not any(e in d.mentions for e in avoid):
                chosen.append(d)
        return chosen

    def passages(self, gold: Document, n: int, avoid: tuple[str, ...]) -> tuple[list[str], int]:
        """Passages with the gold document at a random place; returns them and its 1-based number."""
        docs = self.distractors(n - 1, avoid, like=gold)
        position = self.rng.randrange(len(docs) + 1)
        docs.insert(position, gold)
        return [shown(d) for d in docs], position + 1

    # -- SFT -----------------------------------------------------------------------------------------

    def closed_book(self) -> list[Row]:
        rows: list[Row] = []
        for f in self.memory:
            asked = self.ask(f)
            rows.append(_chat(closed_book_messages(asked.question), asked.answers[0], "closed_book"))
        self.rng.shuffle(rows)
        return rows

    def fresh_profile(self, avoid: set[str]) -> tuple[str, str, Fact, _Asked]:
        """A profile of a subject that exists nowhere else (named none of `avoid`, which gets its name),
        and a question only it answers: (name, profile as a dated passage, the fact asked, the question)."""
        kind, name, body, stated = self._fresh_subject(avoid)
        fact = self.rng.choice(stated)
        return name, self.fresh_passage(kind, name, body), fact, self._ask_fresh(kind, name, fact)

    def fresh_passage(self, kind: Kind, name: str, body: str, date: dt.date | None = None) -> str:
        """A fresh profile as a passage: one of its kind's titles and a date (random unless given)."""
        title = self.rng.choice(TITLES[kind]).format(s=name)
        return passage(body, title, date or random_date(self.rng, *FRESH_DATES))

    def _fresh_subject(self, avoid: set[str], like: Kind | None = None) -> tuple[Kind, str, str, list[Fact]]:
        """(kind, name, profile text, the facts it states) of a fresh subject; see `fresh_profile`."""
        kinds = [k for k in KINDS if all((k, a) in self.pre_facts for a in ATTRIBUTES[k])]
        kind = like if like is not None else self.rng.choice(kinds)
        name = self._fresh.name(kind, avoid)
        avoid.add(name)
        stated = [
            self._fresh_value(self.rng.choice(self.pre_facts[(kind, attr)]), avoid)
            for attr in ATTRIBUTES[kind]
        ]
        sentences = [
            self.rng.choice(SENTENCES[(kind, f.attr)]).format(s=name, v=f.value, av=article(f.value))
            for f in stated
        ]
        self.rng.shuffle(sentences)
        return kind, name, " ".join(sentences), stated

    @staticmethod
    def _ask_fresh(kind: Kind, name: str, fact: Fact) -> _Asked:
        return _Asked(QUESTIONS[(kind, fact.attr)].format(s=name), fact.aliases, (fact.subject,))

    def _fresh_value(self, fact: Fact, avoid: set[str]) -> Fact:
        """`fact` with a value of its type that no document states: a fresh name where the value is an
        entity, a random year, number, date or country; roles, industries and kinds stay (few, shared). A
        model learns to copy any answer out of a passage only if the answers it copies are new each time.
        A fresh name is none of `avoid` (the names of the example so far), which gets it."""
        rng = self.rng
        if fact.obj is not None:
            kind = self.tl.by_id[fact.obj].kind
            name = self._fresh.name(kind, avoid)
            avoid.add(name)
            value = name_value(Entity(id="fresh", kind=kind, name=name, pool="train", era="pre"))
        elif fact.attr in ("birth_year", "founded", "launched"):
            value = year_value(rng.randint(1930, 2024))
        elif fact.attr == "population":
            value = number_value(rng.randint(20, 3000) * 1000)
        elif fact.attr == "date":
            value = date_value(dt.date(2020, 1, 1) + dt.timedelta(days=rng.randrange(5 * 365)))
        elif fact.attr == "country":
            value = phrase_value(self._fresh.name("country", avoid))
            avoid.add(value[0])
        else:
            return fact
        return replace(fact, value=value[0], aliases=value[1], obj=None)

    def fresh_item(self, n_passages: int) -> tuple[list[Message], list[str], int, _Asked, Fact]:
        """A grounded question about a fresh subject; each distractor is a train document or, half of the
        time, another fresh profile (so that only the name tells the passages apart)."""
        names: set[str] = set()
        subject, body, fact, asked = self.fresh_profile(names)
        # Train documents may use the subject's name words in other names: only the gold passage names it.
        docs = [d for d in self.distractors(n_passages + 2, ()) if not contains_phrase(d.body, subject)]
        passages = [
            self.fresh_profile(names)[1] if self.rng.random() < 0.5 else shown(d)
            for d in docs[: n_passages - 1]
        ]
        gold = self.rng.randrange(len(passages) + 1)
        passages.insert(gold, body)
        return grounded_messages(asked.question, passages), passages, gold + 1, asked, fact

    def reading(self, count: int, questions: int = READING_QUESTIONS) -> list[Row]:
        """Reading drills for the pretraining mix: 1-4 passages about fresh subjects (each distractor a
        train document or, half of the time, another fresh profile), then `questions` questions in turns,
        each about a fact of a fresh profile and answerable only from its passage. The first question is
        asked as every grounded prompt asks it; the follow-ups (`Question: ...`) reuse the passages, so each
        passage read trains several answers, and a follow-up about another subject than the one before
        makes the model find the passage by the name asked."""
        rows: list[Row] = []
        for _ in range(count):
            names: set[str] = set()
            n = self.rng.randint(1, 4)
            n_fresh = 1 + sum(self.rng.random() < 0.5 for _ in range(n - 1))
            fresh = [self._fresh_subject(names) for _ in range(n_fresh)]
            # Train documents may use a fresh name's words in other names: only its own passage names it.
            train = [
                shown(d)
                for d in self.distractors(n + 2, ())
                if not any(contains_phrase(d.body, name) for _, name, _, _ in fresh)
            ]
            passages: list[tuple[Kind, str, str, list[Fact]] | str] = [*fresh, *train[: n - len(fresh)]]
            self.rng.shuffle(passages)
            # (passage number, subject, fact) of every fresh passage: one about the first subject is asked
            # first, the follow-ups are any of the others
            pool = [(k, p, f) for k, p in enumerate(passages, 1) if not isinstance(p, str) for f in p[3]]
            first = self.rng.choice([a for a in pool if a[1] is fresh[0]])
            pool.remove(first)
            messages: list[Message] = []
            for turn, (k, (kind, name, _, _), fact) in enumerate(
                [first, *self.rng.sample(pool, min(questions - 1, len(pool)))]
            ):
                asked = self._ask_fresh(kind, name, fact)
                if turn == 0:
                    texts = [
                        p if isinstance(p, str) else self.fresh_passage(p[0], p[1], p[2]) for p in passages
                    ]
                    messages += grounded_messages(asked.question, texts)
                else:
                    messages.append({"role": "user", "content": f"Question: {asked.question}"})
                messages.append({"role": "assistant", "content": cite(asked.answers[0], k)})
            rows.append({"messages": messages, "kind": "reading"})
        return rows

    def grounded_item(self, n_passages: int) -> tuple[list[Message], list[str], int, _Asked, Fact]:
        if self.rng.random() < FRESH_SHARE:
            return self.fresh_item(n_passages)
        doc, fact = self.rng.choice(self.stated)
        asked = self.ask(fact)
        if self.rng.random() < COUNTERFACTUAL_SHARE and (swap := self.counterfactual(doc, fact)):
            body, fact = swap
            doc = replace(doc, body=body)
            asked = _Asked(asked.question, fact.aliases, (*asked.names, *((fact.obj,) if fact.obj else ())))
        passages, gold = self.passages(doc, n_passages, asked.names)
        return grounded_messages(asked.question, passages), passages, gold, asked, fact

    def counterfactual(self, doc: Document, fact: Fact) -> tuple[str, Fact] | None:
        """`doc`'s body with `fact`'s value replaced by another train-pool value of its attribute, and the
        fact that value comes from; None for a post-cutoff fact or one whose value the body does not
        state exactly once."""
        if fact.era != "pre":
            return None
        others = [
            f for f in self.pre_facts.get((self._kind(fact), fact.attr), [])
            if f.value != fact.value and not contains_phrase(doc.body, f.value)
        ]  # fmt: skip
        if not others:
            return None
        other = self.rng.choice(others)
        body = substitute(doc.body, fact.value, other.value)
        return (body, other) if body is not None else None

    def grounded(self, count: int, kind: str, n_passages: int | None = None) -> list[Row]:
        rows: list[Row] = []
        for _ in range(count):
            n = n_passages or self.rng.randint(2, 4)
            messages, _, gold, asked, _ = self.grounded_item(n)
            rows.append(_chat(messages, cite(asked.answers[0], gold), kind))
        return rows

    def updated_item(self, n_passages: int) -> tuple[list[Message], list[str], int, _Asked]:
        """Two dated documents about one subject stating different values of the asked attribute, among
        `n_passages`: the train pool's own update (half the time, where it has one) or two versions of a
        fresh profile with random dates. The answer is the newer document's value."""
        own = self._own_update() if self.rng.random() < 0.5 else None
        if own is not None:
            (old_doc, new_doc), asked = own
            texts = [shown(old_doc), shown(new_doc)]
        else:
            texts, asked = self._fresh_update()
        others = [shown(d) for d in self.distractors(n_passages - 2, asked.names)]
        pool = [*texts, *others]  # the newer document is pool[1]
        order = self.rng.sample(range(len(pool)), len(pool))
        passages = [pool[k] for k in order]
        gold = order.index(1) + 1
        return grounded_messages(asked.question, passages), passages, gold, asked

    def _fresh_update(self) -> tuple[list[str], _Asked]:
        """Two versions of a fresh profile, the older one first, that differ in one value (taken from
        another fresh subject of its kind), with random dates; the question asks for that value."""
        names: set[str] = set()
        for _ in range(100):
            kind, name, body, stated = self._fresh_subject(names)
            _, _, _, alternatives = self._fresh_subject(names, kind)
            pairs = [(f, o) for f, o in zip(stated, alternatives, strict=True) if f.value != o.value]
            if not pairs:
                continue
            fact, other = self.rng.choice(pairs)
            changed = substitute(body, fact.value, other.value)
            if changed is None:
                continue
            old, new = sorted(random_date(self.rng, *FRESH_DATES) for _ in range(2))
            new += dt.timedelta(days=1 if new == old else 0)
            versions = [(body, fact), (changed, other)]
            self.rng.shuffle(versions)  # either value may be the newer one
            (older, _), (newer, current) = versions
            texts = [self.fresh_passage(kind, name, older, old), self.fresh_passage(kind, name, newer, new)]
            return texts, self._ask_fresh(kind, name, current)
        raise RuntimeError("no fresh profile with a value that can change")

    def _own_update(self) -> tuple[tuple[Document, Document], _Asked] | None:
        """(a document stating a train-pool fact before it changed, the news of the change), its question."""
        for _ in range(20):
            if not self.stale:
                return None
            new_doc, fact = self.rng.choice(self.stale)
            assert fact.replaces is not None
            olds = [d for d in self.stating.get(fact.replaces, []) if d.date < new_doc.date]
            asked = self.ask(fact)
            if olds and asked.answers == fact.aliases:
                return (self.rng.choice(olds), new_doc), asked
        return None

    def updated(self, count: int) -> list[Row]:
        rows: list[Row] = []
        for _ in range(count):
            messages, _, gold, asked = self.updated_item(self.rng.randint(2, 4))
            rows.append(_chat(messages, cite(asked.answers[0], gold), "updated"))
        return rows

    def abstain_item(self, variant: int) -> tuple[list[Message], list[str]]:
        """0: fictitious subject; 1: real subject absent from the passages; 2: a passage names the subject
        but not the asked fact; 3: fictitious subject, closed book."""
        n = self.rng.randint(2, 4)
        if variant == 2:
            found = self._lacking()
            if found is not None:
                doc, entity, question = found
                passages, _ = self.passages(doc, n, (entity,))
                return grounded_messages(question, passages), passages
            variant = 1
        if variant == 1:
            fact = self.rng.choice(self.memory)
            asked = self.ask(fact)
            passages = [shown(d) for d in self.distractors(n, asked.names)]
            return grounded_messages(asked.question, passages), passages
        kind, name = self.rng.choice(self.fictitious)
        question = QUESTIONS[(kind, self.rng.choice(UNANSWERABLE_ATTRS[kind]))].format(s=name)
        if variant == 3:
            return closed_book_messages(question), []
        passages = [shown(d) for d in self.distractors(n, ())]
        return grounded_messages(question, passages), passages

    def _lacking(self) -> tuple[Document, str, str] | None:
        """A document naming an entity without stating (or implying) the asked attribute of it."""
        for _ in range(100):
            doc = self.rng.choice(self.docs)
            entity = self.tl.by_id[self.rng.choice(doc.mentions)]
            attr = self.rng.choice(ATTRIBUTES[entity.kind])
            versions = [f for f in (self.tl.pre(entity.id, attr), self.tl.post(entity.id, attr)) if f]
            if not versions or any(f.id in doc.facts or f.id in doc.implied for f in versions):
                continue
            if any(contains_phrase(doc.body, a) for f in versions for a in f.aliases):
                continue
            return doc, entity.id, QUESTIONS[(entity.kind, attr)].format(s=entity.name)
        return None

    def abstain(self, count: int) -> list[Row]:
        return [_chat(self.abstain_item(i % 4)[0], ABSTAIN_ANSWER, "abstain") for i in range(count)]

    # -- RL and preferences --------------------------------------------------------------------------

    def rl(self, count: int) -> list[Row]:
        rows: list[Row] = []
        for i in range(count):
            slot = i % 5
            if slot == 0:
                messages, passages, gold, asked, _ = self.grounded_item(self.rng.randint(2, 4))
                rows.append(_rl(messages, asked.answers, "grounded", passages, gold))
            elif slot == 1:
                messages, passages, gold, asked = self.updated_item(self.rng.randint(2, 4))
                rows.append(_rl(messages, asked.answers, "grounded", passages, gold))
            elif slot < 4:
                asked = self.ask(self.rng.choice(self.memory))
                rows.append(_rl(closed_book_messages(asked.question), asked.answers, "closed_book", [], None))
            else:
                messages, passages = self.abstain_item(self.rng.randrange(3))
                rows.append(_rl(messages, (ABSTAIN_ANSWER,), "abstain", passages, None))
        return rows

    def prefs(self, count: int) -> list[Row]:
        rows: list[Row] = []
        for i in range(count):
            kind = ("hallucinated", "stale", "padded")[i % 3]
            if kind == "stale" and not self.stale:
                kind = "hallucinated"
            grounded = kind == "stale" or self.rng.random() < 0.6
            if kind == "stale":
                doc, fact = self.rng.choice(self.stale)
                asked = self.ask(fact)
                passages, gold = self.passages(doc, self.rng.randint(2, 4), asked.names)
                messages = grounded_messages(asked.question, passages)
                assert fact.replaces is not None
                wrong = self.tl.fact_by_id[fact.replaces].value
            elif grounded:
                messages, _, gold, asked, fact = self.grounded_item(self.rng.randint(2, 4))
                wrong = self._wrong(fact, asked.answers)
            else:
                fact = self.rng.choice(self.memory)
                asked, gold = self.ask(fact), 0
                messages = closed_book_messages(asked.question)
                wrong = self._wrong(fact, asked.answers)
            answer = asked.answers[0]
            chosen = cite(answer, gold) if grounded else answer
            if kind == "padded":
                template = self.rng.choice(PADDED_GROUNDED if grounded else PADDED_CLOSED_BOOK)
                rejected = template.format(a=answer, k=gold)
            else:
                rejected = cite(wrong, gold) if grounded else wrong
            rows.append({"prompt": messages, "chosen": chosen, "rejected": rejected, "rejected_kind": kind})
        return rows

    def _wrong(self, fact: Fact, answers: tuple[str, ...]) -> str:
        """A plausible wrong answer: another value of the same attribute, or another name of that kind."""
        # "What product did X launch?" is answered by a product's name, not by the maker fact's value.
        inverse = answers != fact.aliases
        pool = self.product_names if inverse else self.values[(self._kind(fact), fact.attr)]
        options = [v for v in pool if v not in answers]
        return self.rng.choice(options) if options else f"not {answers[0]}"


class _FreshNames:
    """Names of no real or fictitious subject, drawn like the world's own names (syllable words: one or two
    syllables for a person's first and last name, two for a stem, with an org or event suffix) but from
    none of its words. A copying skill learnt on drills whose answers are only the train pool's ~200 name
    words did not carry over to the eval pool's names (measured in issue 4: held-out drills 78% on cities,
    documents about held-out people 0%): the copied words must be as varied as the names it will meet. A
    name may recur across examples (with other values each time, so it cannot be learnt), never within one."""

    def __init__(self, timeline: Timeline, rng: random.Random) -> None:
        self.rng = rng
        self.taken = {e.name for e in timeline.entities}
        self.taken |= {name for names in timeline.fictitious.values() for _, name in names}
        words = {w for name in self.taken for w in name.split(" ")}
        self.words = NameGenerator(rng, reserved=words)

    def _draw(self, kind: str) -> str:
        if kind == "person":
            return " ".join(self.words.sample(self.rng.choice((1, 2)), max_len=6) for _ in range(2))
        return stem_name(kind, self.words.sample(2), self.rng)

    def name(self, kind: str, avoid: set[str]) -> str:
        for _ in range(1000):
            name = self._draw(kind)
            # names are words joined by single spaces: whole-word containment is a padded substring test
            clash = any(f" {name} " in f" {other} " or f" {other} " in f" {name} " for other in avoid)
            if name not in self.taken and not clash:
                return name
        raise RuntimeError(f"no fresh {kind} name left")


def shown(doc: Document) -> str:
    """A world document as a served passage: its title, its date, its text."""
    return passage(doc.body, doc.title, doc.date)


def substitute(body: str, value: str, new: str) -> str | None:
    """`body` with the one place it states `value` stating `new` instead (the article of a role follows:
    "a pilot" -> "an engineer"); None unless `value` occurs exactly once."""
    stated = re.compile(rf"(?<!\w)(?:an? )?{re.escape(value)}(?!\w)")
    found = stated.findall(body)
    if len(found) != 1:
        return None
    replacement = article(new) if found[0] != value else new
    return stated.sub(lambda _: replacement, body)


def _chat(messages: list[Message], answer: str, kind: str) -> Row:
    return {"messages": [*messages, {"role": "assistant", "content": answer}], "kind": kind}


def _rl(
    messages: list[Message], answers: tuple[str, ...], kind: str, passages: list[str], gold: int | None
) -> Row:
    return {
        "prompt": messages,
        "answers": list(answers),
        "kind": kind,
        "passages": passages,
        "gold_passage": gold,
    }


def build_training_data(timeline: Timeline, documents: list[Document], config: WorldConfig) -> TrainingData:
    spec = config.spec
    sft_maker = _Examples(timeline, documents, config, "sft")
    sft = sft_maker.closed_book()
    sft += sft_maker.grounded(spec.grounded_examples, "grounded")
    sft += sft_maker.grounded(spec.long_context_examples, "long_context", n_passages=spec.long_context_docs)
    sft += sft_maker.updated(round(UPDATED_SHARE * spec.grounded_examples))
    sft += sft_maker.abstain(spec.abstain_examples)
    sft += _Examples(timeline, documents, config, "reading").reading(spec.reading_examples)
    rl = _Examples(timeline, documents, config, "rl").rl(spec.rl_examples)
    prefs = _Examples(timeline, documents, config, "prefs").prefs(spec.pref_examples)
    return TrainingData(sft=sft, rl=rl, prefs=prefs)
