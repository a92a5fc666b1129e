"""World sizes and the run configuration of `python -m eval world --seed S --size tiny --out DIR`.

The sizes are set by measurement (issue 4): a ~1M-parameter Llama trained from scratch on a 2-core CPU
learns a world of ~200 people with two-token names, and learns nothing from 2,000 people x 4 facts.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Literal

Size = Literal["nano", "tiny", "small"]
SIZE_NAMES: tuple[Size, ...] = ("nano", "tiny", "small")

# Bumped whenever the same seed and size would give different output.
GENERATOR_VERSION = "3"  # 3: grounded prompts fence their passages (issue 24)
# The knowledge cutoff: corpus_pre documents are dated before it, docs_post after it.
CUTOFF = dt.date(2025, 1, 1)
# The date every question is asked at: answers are the values that hold on this day.
AS_OF = dt.date(2025, 7, 1)
# Share of each entity kind held out for eval questions; the rest is used by training examples.
EVAL_FRACTION = 0.5
MAX_PARAPHRASES = 10


@dataclass(frozen=True)
class SizeSpec:
    """Counts of one world size. Entity and change counts are totals over the train and eval pools."""

    people: int
    orgs: int
    cities: int
    products: int
    events: int
    countries: int
    first_names: int
    last_names: int
    paraphrases: int
    # post-cutoff changes (updated facts)
    ceo_changes: int
    hq_moves: int
    population_revisions: int
    job_changes: int
    # post-cutoff arrivals (new facts)
    new_orgs: int
    new_products: int
    new_events: int
    # eval questions (caps; new and updated take every eval-pool change)
    retained_questions: int
    unanswerable_questions: int
    multi_hop_questions: int
    # training data
    grounded_examples: int
    long_context_examples: int
    long_context_docs: int
    abstain_examples: int
    reading_examples: int  # grounded drills about fresh subjects, for the pretraining mix
    rl_examples: int
    pref_examples: int


SIZES: dict[str, SizeSpec] = {
    # Unit tests: generated in well under a second.
    "nano": SizeSpec(
        people=24, orgs=6, cities=4, products=6, events=4, countries=2, first_names=10, last_names=12,
        paraphrases=2, ceo_changes=2, hq_moves=2, population_revisions=2, job_changes=4,
        new_orgs=2, new_products=2, new_events=2, retained_questions=16, unanswerable_questions=6,
        multi_hop_questions=8, grounded_examples=40, long_context_examples=8, long_context_docs=6,
        abstain_examples=16, reading_examples=40, rl_examples=24, pref_examples=24,
    ),
    # The demo on a 2-core CPU: few entities, each fact in several paraphrases. 2,400 RL rows give 960
    # grounded ones: room for a 300-row test set (a paired 95% interval of about +-4 points) beside training.
    "tiny": SizeSpec(
        people=200, orgs=24, cities=16, products=24, events=16, countries=4, first_names=36, last_names=48,
        paraphrases=4, ceo_changes=12, hq_moves=10, population_revisions=10, job_changes=30,
        new_orgs=10, new_products=16, new_events=14, retained_questions=100, unanswerable_questions=30,
        multi_hop_questions=30, grounded_examples=1500, long_context_examples=200, long_context_docs=8,
        abstain_examples=300, reading_examples=24000, rl_examples=2400, pref_examples=600,
    ),
    # One GPU: thousands of entities.
    "small": SizeSpec(
        people=4000, orgs=400, cities=120, products=600, events=300, countries=12, first_names=160,
        last_names=320, paraphrases=5, ceo_changes=120, hq_moves=100, population_revisions=60,
        job_changes=600, new_orgs=150, new_products=300, new_events=300, retained_questions=1000,
        unanswerable_questions=300, multi_hop_questions=300, grounded_examples=30000,
        long_context_examples=3000, long_context_docs=24, abstain_examples=5000, reading_examples=100000,
        rl_examples=10000, pref_examples=10000,
    ),
}  # fmt: skip


@dataclass(frozen=True)
class WorldConfig:
    """What `python -m eval world` generates; every field is a CLI flag and is written to the manifest."""

    seed: int = field(
        default=0, metadata={"help": "Random seed; the same seed and size give identical files."}
    )
    size: Size = field(
        default="tiny",
        metadata={
            "help": "nano: unit tests; tiny: the 2-core CPU demo; small: one GPU.",
            "choices": SIZE_NAMES,
        },
    )
    paraphrases: int | None = field(
        default=None,
        metadata={
            "help": f"Paraphrased versions of each pre-cutoff document, 1-{MAX_PARAPHRASES} "
            "(default: per size, nano 2, tiny 4, small 5).",
            "type": int,
        },
    )

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"size {self.size!r} is not one of {', '.join(SIZE_NAMES)}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if self.paraphrases is not None and not 1 <= self.paraphrases <= MAX_PARAPHRASES:
            raise ValueError(f"paraphrases must be between 1 and {MAX_PARAPHRASES}, got {self.paraphrases}")

    @property
    def spec(self) -> SizeSpec:
        return SIZES[self.size]

    @property
    def n_paraphrases(self) -> int:
        return self.paraphrases if self.paraphrases is not None else self.spec.paraphrases

    def resolved(self) -> dict[str, object]:
        """The config with defaults filled in, as written into the manifest."""
        out = asdict(self)
        out["paraphrases"] = self.n_paraphrases
        return out
