"""Documents from the timeline: paraphrased profiles before the cutoff, one news item per change after it.

Each pre-cutoff entity gets `paraphrases` profiles; in each, every fact is written with a different
template and the sentences are shuffled (the "multi5 + permute" augmentation of Physics of LMs 3.1).
Every sentence names its subject in full, so any one sentence states its fact on its own.
"""

from __future__ import annotations

import datetime as dt
import random

from eval.world.build import Change, Timeline, random_date
from eval.world.config import CUTOFF, WorldConfig
from eval.world.model import Document, Entity, Era, Fact, article
from eval.world.templates import (
    ATTRIBUTES,
    NEWS,
    NEWS_BORN,
    NEWS_EVENT_ORGANIZER,
    NEWS_ORG_DETAILS,
    NEWS_PRODUCT_KIND,
    SENTENCES,
    TITLES,
)

PRE_START = dt.date(2023, 1, 1)
PRE_END = CUTOFF - dt.timedelta(days=1)

# (title, date, body, subject, facts stated, entities mentioned): a document before it gets its id
_Draft = tuple[str, dt.date, str, Entity, tuple[Fact, ...], tuple[str, ...]]


def render_documents(timeline: Timeline, config: WorldConfig) -> list[Document]:
    """corpus_pre documents (ids pre-NNNN, in shuffled order) then docs_post (post-NNNN, by date)."""
    rng = random.Random(f"keepcurrent-world:{config.seed}:render")
    pre = [_pre_drafts(timeline, e, config.n_paraphrases, rng) for e in timeline.entities if e.era == "pre"]
    pre_drafts = [d for drafts in pre for d in drafts]
    # Shuffled so that a reader of the files in name order does not meet all versions of one profile in a row.
    rng.shuffle(pre_drafts)
    post_drafts = [_news(timeline, change, rng) for change in timeline.changes]
    return _numbered(pre_drafts, "pre") + _numbered(post_drafts, "post")


def _numbered(drafts: list[_Draft], era: Era) -> list[Document]:
    width = max(4, len(str(len(drafts))))
    docs = []
    for i, (title, date, body, subject, facts, mentions) in enumerate(drafts, start=1):
        docs.append(
            Document(
                id=f"{era}-{i:0{width}d}",
                era=era,
                kind=subject.kind if era == "pre" else "news",
                title=title,
                date=date,
                body=body,
                subject=subject.id,
                facts=tuple(f.id for f in facts),
                implied=tuple(implied for f in facts for implied in f.entails),
                mentions=mentions,
                pool=subject.pool,
            )
        )
    return docs


def _mentions(subject: Entity, facts: tuple[Fact, ...]) -> tuple[str, ...]:
    ids = [subject.id] + [f.obj for f in facts if f.obj] + [f.subject for f in facts]
    return tuple(dict.fromkeys(ids))  # ordered de-duplication


def _sentence(template: str, subject: Entity, fact: Fact) -> str:
    return template.format(s=subject.name, v=fact.value, av=article(fact.value))


def _pre_drafts(timeline: Timeline, entity: Entity, paraphrases: int, rng: random.Random) -> list[_Draft]:
    facts = tuple(f for a in ATTRIBUTES[entity.kind] if (f := timeline.pre(entity.id, a)) is not None)
    # A per-fact permutation of the templates: versions 1..K each use a different wording of every fact.
    order: dict[str, list[int]] = {}
    for f in facts:
        n = len(SENTENCES[(entity.kind, f.attr)])
        order[f.id] = rng.sample(range(n), n)
    titles = TITLES[entity.kind]
    offset = rng.randrange(len(titles))
    start = PRE_START
    by_attr = {f.attr: f for f in facts}
    if entity.kind == "event":  # reported after it happened
        start = max(start, dt.date.fromisoformat(by_attr["date"].aliases[1]) + dt.timedelta(days=1))
    elif entity.kind == "product":  # described once it is on sale
        start = max(start, dt.date(int(by_attr["launched"].value), 12, 31))
    drafts: list[_Draft] = []
    for version in range(paraphrases):
        sentences = []
        for f in facts:
            templates = SENTENCES[(entity.kind, f.attr)]
            sentences.append(_sentence(templates[order[f.id][version % len(templates)]], entity, f))
        rng.shuffle(sentences)
        title = titles[(offset + version) % len(titles)].format(s=entity.name)
        date = random_date(rng, min(start, PRE_END), PRE_END)
        drafts.append((title, date, " ".join(sentences), entity, facts, _mentions(entity, facts)))
    return drafts


def _news(timeline: Timeline, change: Change, rng: random.Random) -> _Draft:
    fact = {slot: timeline.fact_by_id[fid] for slot, fid in change.slots}
    subject = timeline.by_id[change.subject]
    titles, leads = NEWS[change.kind]
    names: dict[str, str] = {}
    extra: list[str] = []
    if change.kind == "ceo_change":
        names = {"o": subject.name, "p": fact["ceo"].value}
        names |= {"c": fact["birth_city"].value, "y": fact["birth_year"].value}
        extra.append(rng.choice(NEWS_BORN).format(**names))
    elif change.kind == "hq_move":
        names = {"o": subject.name, "c": fact["hq"].value}
    elif change.kind == "population":
        names = {"c": subject.name, "n": fact["population"].value}
    elif change.kind == "job_change":
        names = {"p": subject.name, "o": fact["employer"].value}
    elif change.kind == "new_org":
        names = {"o": subject.name, "p": fact["founder"].value, "d": fact["founded"].value}
        details = {"c": fact["hq"].value, "k": fact["industry"].value}
        extra.append(rng.choice(NEWS_ORG_DETAILS).format(o=subject.name, **details))
        born = {"c": fact["birth_city"].value, "y": fact["birth_year"].value}
        extra.append(rng.choice(NEWS_BORN).format(p=fact["founder"].value, **born))
    elif change.kind == "new_product":
        names = {"o": fact["maker"].value, "x": subject.name, "d": fact["launched"].value}
        extra.append(rng.choice(NEWS_PRODUCT_KIND).format(x=subject.name, ak=article(fact["kind"].value)))
    elif change.kind == "new_event":
        names = {"x": subject.name, "c": fact["city"].value, "d": fact["date"].value}
        extra.append(rng.choice(NEWS_EVENT_ORGANIZER).format(x=subject.name, o=fact["organizer"].value))
    else:
        raise ValueError(f"no news template for change kind {change.kind!r}")
    title = rng.choice(titles).format(**names)
    body = " ".join([rng.choice(leads).format(**names), *extra])
    facts = tuple(fact.values())
    return (title, change.date, body, subject, facts, _mentions(subject, facts))
