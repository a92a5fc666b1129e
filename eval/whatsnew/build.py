"""`generate`: the pages' facts, less those an eval question asks, split into held-out RL facts and SFT
facts, and made into rows of every kind, none overlapping an eval question."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from eval.whatsnew.config import CREDIT_KINDS, SFT_KINDS, Row, WhatsNewConfig
from eval.whatsnew.extract import extract_facts
from eval.whatsnew.facts import Fact
from eval.whatsnew.guard import EvalGuard, eval_questions
from eval.whatsnew.pages import load_pages, version_key
from eval.whatsnew.passages import ChunkIndex
from eval.whatsnew.rows import _question, _Rows


@dataclass
class Generated:
    sft: dict[str, list[Row]]
    rl: list[Row]
    facts: dict[str, int]  # kind -> facts used
    dropped: dict[str, object]
    pages: dict[str, str]  # file name -> sha256
    chunks: int


def _cap_credits(facts: list[Fact], share: float, rng: random.Random) -> list[Fact]:
    """At most `share` of the facts ask for a contributor or an issue (the pages cite one per paragraph)."""
    credits = [k for k, f in enumerate(facts) if f.kind in CREDIT_KINDS]
    keep = min(len(credits), int((len(facts) - len(credits)) * share / (1 - share)))
    dropped = set(credits) - set(rng.sample(credits, keep))
    return [f for k, f in enumerate(facts) if k not in dropped]


def generate(cfg: WhatsNewConfig) -> Generated:
    cfg.validate()
    rng = random.Random(f"keepcurrent-whatsnew:{cfg.seed}")
    pages = load_pages(cfg.pages, cfg.versions)
    guard = EvalGuard(eval_questions(cfg), cfg.ngram)

    found = [f for p in pages for f in extract_facts(p)]
    facts = _cap_credits(found, cfg.credit_share, rng)
    over_cap = len(found) - len(facts)
    topical = [f for f in facts if guard.states_eval_answer(f)]
    facts = [f for f in facts if not guard.states_eval_answer(f)]
    rng.shuffle(facts)
    facts = facts[: cfg.limit]
    n_rl = min(cfg.rl_rows, len(facts) // 5)
    held, train = facts[:n_rl], facts[n_rl:]
    asked = {f.question for f in held}  # two facts may share a question ("Which method was added to ...?")
    train = [f for f in train if f.question not in asked]

    index = ChunkIndex(pages)
    make = _Rows(cfg, pages, index, rng)
    overlapping = dict.fromkeys((*SFT_KINDS, "rl"), 0)
    no_passage = 0

    def kept(rows: Iterable[Row | None], kind: str) -> list[Row]:
        nonlocal no_passage
        out: list[Row] = []
        for row in rows:
            if row is None:
                no_passage += 1
            elif guard.overlaps(row):
                overlapping[kind] += 1
            else:
                out.append(row)
        return out

    reading = kept((make.reading(f) for f in train), "reading")
    rl = kept((make.rl(f) for f in held), "rl")

    # distractor rows: facts asking one question of different versions, where each page states one answer
    by_key: dict[tuple[str, ...], dict[str, list[Fact]]] = {}
    for f in train:
        if f.key is not None:
            by_key.setdefault(f.key, {}).setdefault(f.version, []).append(f)
    distractor: list[Row] = []
    for key in sorted(by_key):
        unique = [
            fs[0] for v, fs in sorted(by_key[key].items(), key=lambda vf: version_key(vf[0])) if len(fs) == 1
        ]
        for f in unique:
            distractor += kept(make.distractor(f, [g for g in unique if g is not f], 2), "distractor")
    # a distractor row asks the generic form of its question, which may be a held-out fact's question
    distractor = [r for r in distractor if _question(r) not in asked]
    rng.shuffle(distractor)
    s, a = cfg.distractor_share, cfg.abstain_share
    distractor = distractor[: int(s * len(reading) / (1 - a - s))]  # then distractor / all SFT <= s

    n_abstain = round(a * (len(reading) + len(distractor)) / (1 - a))
    abstain: list[Row] = []
    for f in rng.sample(train, len(train)):
        if len(abstain) == n_abstain:
            break
        abstain += kept([make.abstain(f)], "abstain")

    for rows in (reading, abstain, rl):
        rng.shuffle(rows)
    used = Counter(f.kind for f in facts)
    return Generated(
        sft={"reading": reading, "distractor": distractor, "abstain": abstain},
        rl=rl,
        facts=dict(sorted(used.items())),
        dropped={
            "eval_questions": guard.questions,
            "credit_cap": over_cap,
            # by kind only: the manifest is read with the rows, and a dropped question in it would leak
            "states_eval_answer": dict(sorted(Counter(f.kind for f in topical).items())),
            "ngram_overlap": overlapping,
            "no_passage": no_passage,
        },
        pages={p.name: p.sha256 for p in pages},
        chunks=len(index.texts),
    )
