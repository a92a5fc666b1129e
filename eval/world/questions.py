"""Eval questions about the eval pool, in five categories, each answer traced to the documents stating it.

- retained: a pre-cutoff fact still true on AS_OF (supported by corpus_pre documents).
- new: a fact that arrived after the cutoff and whose answer no pre-cutoff document contains.
- updated: a fact changed after the cutoff; `stale_answers` holds the pre-cutoff value.
- unanswerable: about a subject named in no document; the right answer is `ABSTAIN_ANSWER`.
- multi_hop: two facts joined through a `bridge` entity; supported by the documents of both.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import replace

from core.prompts import ABSTAIN_ANSWER
from eval.world.build import Timeline
from eval.world.config import AS_OF, WorldConfig
from eval.world.model import CATEGORIES, Category, Document, Fact, Kind, Question, name_value
from eval.world.templates import MULTI_HOP, NEW_PRODUCT_QUESTION, QUESTIONS

# What an unanswerable question may ask of a subject that does not exist.
UNANSWERABLE_ATTRS: dict[Kind, tuple[str, ...]] = {
    "person": ("birth_year", "birth_city", "employer"),
    "org": ("hq", "ceo", "founder", "founded"),
    "city": ("population", "country"),
    "product": ("maker", "launched"),
    "event": ("city", "date"),
}
# change kind -> the slot whose fact an "updated" question asks about
UPDATED_SLOTS = {"ceo_change": "ceo", "hq_move": "hq", "population": "population", "job_change": "employer"}


def fact_documents(documents: list[Document]) -> dict[str, tuple[str, ...]]:
    """fact id -> ids of every document stating it, directly or by entailment."""
    index: dict[str, list[str]] = {}
    for doc in documents:
        for fid in (*doc.facts, *doc.implied):
            index.setdefault(fid, []).append(doc.id)
    return {fid: tuple(sorted(set(ids))) for fid, ids in index.items()}


def forward_question(timeline: Timeline, fact: Fact) -> str:
    subject = timeline.by_id[fact.subject]
    return QUESTIONS[(subject.kind, fact.attr)].format(s=subject.name)


def new_product_question(timeline: Timeline, maker_fact: Fact) -> tuple[str, tuple[str, ...]]:
    """'What product did Kelvor Dynamics launch in 2025?' for a post-cutoff product's maker fact."""
    launched = timeline.post(maker_fact.subject, "launched")
    assert launched is not None and maker_fact.obj is not None
    year = dt.date.fromisoformat(launched.aliases[1]).year
    text = NEW_PRODUCT_QUESTION.format(o=timeline.by_id[maker_fact.obj].name, y=year)
    return text, name_value(timeline.by_id[maker_fact.subject])[1]


def build_questions(timeline: Timeline, documents: list[Document], config: WorldConfig) -> list[Question]:
    rng = random.Random(f"keepcurrent-world:{config.seed}:questions")
    spec = config.spec
    docs_of = fact_documents(documents)
    tl = timeline
    as_of = AS_OF.isoformat()
    drafts: list[Question] = []

    def add(
        category: Category,
        question: str,
        answers: tuple[str, ...],
        facts: tuple[Fact, ...],
        subject: str | None = None,
        stale_answers: tuple[str, ...] | None = None,
        bridge: str | None = None,
    ) -> None:
        support = tuple(sorted({d for f in facts for d in docs_of.get(f.id, ())}))
        drafts.append(
            Question(
                id="",
                question=question,
                answers=answers,
                category=category,
                supporting_doc_ids=support,
                as_of=as_of,
                stale_answers=stale_answers,
                bridge=bridge,
                subject=subject if subject is not None else tl.by_id[facts[0].subject].name,
                facts=tuple(f.id for f in facts),
            )
        )

    retained = [f for f in tl.facts if tl.is_retained(f) and tl.by_id[f.subject].pool == "eval"]
    for i in sorted(rng.sample(range(len(retained)), min(spec.retained_questions, len(retained)))):
        add("retained", forward_question(tl, retained[i]), retained[i].aliases, (retained[i],))

    for change in (c for c in tl.changes if c.pool == "eval"):
        fact = {slot: tl.fact_by_id[fid] for slot, fid in change.slots}
        if change.kind in UPDATED_SLOTS:
            f = fact[UPDATED_SLOTS[change.kind]]
            assert f.replaces is not None
            stale = tl.fact_by_id[f.replaces].aliases
            add("updated", forward_question(tl, f), f.aliases, (f,), stale_answers=stale)
        elif change.kind == "new_org":
            for f in (fact["founder"], fact["founded"]):
                add("new", forward_question(tl, f), f.aliases, (f,))
        elif change.kind == "new_product":
            text, answers = new_product_question(tl, fact["maker"])
            add("new", text, answers, (fact["maker"],))
            add("new", forward_question(tl, fact["launched"]), fact["launched"].aliases, (fact["launched"],))
        elif change.kind == "new_event":
            add("new", forward_question(tl, fact["date"]), fact["date"].aliases, (fact["date"],))

    for kind, name in tl.fictitious["eval"]:
        attr = rng.choice(UNANSWERABLE_ATTRS[kind])
        add("unanswerable", QUESTIONS[(kind, attr)].format(s=name), (ABSTAIN_ANSWER,), (), subject=name)

    hops = multi_hop_chains(tl, "eval")
    # Half the chains go through a post-cutoff fact, so retrieval over docs_post matters for them too.
    with_post = [h for h in hops if any(f.era == "post" for f in h[2:])]
    only_pre = [h for h in hops if all(f.era == "pre" for f in h[2:])]
    n_post = min(len(with_post), spec.multi_hop_questions // 2)
    n_pre = min(len(only_pre), spec.multi_hop_questions - n_post)
    picked = rng.sample(with_post, n_post) + rng.sample(only_pre, n_pre)
    for key, subject_name, first, second in picked:
        question = MULTI_HOP[key].format(s=subject_name)
        add("multi_hop", question, second.aliases, (first, second), bridge=first.value)

    # Numbered within each category, categories in their fixed order (the sort is stable).
    drafts.sort(key=lambda q: CATEGORIES.index(q.category))
    numbers = dict.fromkeys(CATEGORIES, 0)
    questions = []
    for q in drafts:
        numbers[q.category] += 1
        questions.append(replace(q, id=f"{q.category}-{numbers[q.category]:04d}"))
    return questions


def multi_hop_chains(timeline: Timeline, pool: str) -> list[tuple[str, str, Fact, Fact]]:
    """(template key, subject name, first fact, second fact): the first fact's value is the bridge."""
    tl = timeline
    chains: list[tuple[str, str, Fact, Fact]] = []
    for e in (e for e in tl.entities if e.pool == pool):
        links: list[tuple[str, str, str]] = []  # (template, first attr, second attr)
        if e.kind == "person":
            links.append(("employer_hq", "employer", "hq"))
        elif e.kind == "product":
            links.append(("maker_ceo", "maker", "ceo"))
        elif e.kind == "org":
            links += [
                ("founder_birth_city", "founder", "birth_city"),
                ("ceo_birth_city", "ceo", "birth_city"),
            ]
        for key, first_attr, second_attr in links:
            first = tl.current(e.id, first_attr)
            second = tl.current(first.obj, second_attr) if first and first.obj else None
            if first is not None and second is not None:
                chains.append((key, e.name, first, second))
    return chains
