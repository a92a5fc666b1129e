"""The generator's config (the options of `python -m eval whatsnew-rows`), its version and its row kinds."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from eval.world.config import SIZE_NAMES, Size

Row = dict[str, object]

# Bumped whenever the same config would give different rows.
GENERATOR_VERSION = "4"  # 4: grounded prompts fence their passages (issue 24)
SFT_KINDS = ("reading", "distractor", "abstain")
CREDIT_KINDS = ("contributor", "issue")


@dataclass
class WhatsNewConfig:
    """Which pages, how many rows of each kind, and what no row may overlap."""

    pages: Path = field(
        default=Path("data/python-docs/whatsnew-pre"),
        metadata={"help": "folder of whatsnew-X.Y.md pages (front matter: version, date)"},
    )
    seed: int = field(default=0, metadata={"help": "seed of every random choice"})
    versions: list[str] = field(
        default_factory=list,
        metadata={
            "help": "only these versions' pages, e.g. 3.11 3.12 (default: all)",
            "nargs": "+",
            "type": str,
        },
    )
    multi_share: float = field(
        default=0.5, metadata={"help": "share of reading and RL rows with 3-4 passages (the rest have one)"}
    )
    abstain_share: float = field(default=0.15, metadata={"help": "abstain rows as a share of all SFT rows"})
    distractor_share: float = field(
        default=0.12, metadata={"help": "distractor rows as a share of all SFT rows, at most"}
    )
    credit_share: float = field(
        default=0.35,
        metadata={"help": "share of the facts that ask for a contributor or an issue number, at most"},
    )
    rl_rows: int = field(
        default=500, metadata={"help": "RL rows, of facts held out of sft/ (at most a fifth of the facts)"}
    )
    limit: int | None = field(
        default=None, metadata={"help": "use at most N facts (quick runs and tests)", "type": int}
    )
    min_words: int = field(
        default=60, metadata={"help": "a passage's words, at least (where the page allows)"}
    )
    max_words: int = field(default=150, metadata={"help": "a passage's words, at most"})
    eval_questions: list[Path] = field(
        default_factory=lambda: [Path("data/python-docs/questions.jsonl")],
        metadata={"help": "eval question files or folders no row may overlap", "nargs": "+", "type": Path},
    )
    worlds: list[str] = field(
        default_factory=lambda: ["nano:0", "tiny:0"],
        metadata={
            "help": "synthetic worlds (SIZE:SEED) whose questions no row may overlap (--worlds alone: none)",
            "nargs": "*",
            "type": str,
        },
    )
    ngram: int = field(default=13, metadata={"help": "n-gram length of the contamination test"})

    def validate(self) -> None:
        for name in ("multi_share", "abstain_share", "distractor_share", "credit_share"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1), got {value}")
        if self.abstain_share + self.distractor_share >= 1.0:
            raise ValueError("--abstain-share plus --distractor-share must be below 1")
        if not 20 <= self.min_words <= self.max_words:
            raise ValueError(f"need 20 <= --min-words <= --max-words, got {self.min_words}, {self.max_words}")
        if self.rl_rows < 0:
            raise ValueError(f"--rl-rows must be >= 0, got {self.rl_rows}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")
        if self.ngram < 1:
            raise ValueError(f"--ngram must be at least 1, got {self.ngram}")
        for spec in self.worlds:
            world_spec(spec)


def world_spec(spec: str) -> tuple[Size, int]:
    size, _, seed = spec.partition(":")
    for name in SIZE_NAMES:
        if size == name and seed.isdigit():
            return name, int(seed)
    raise ValueError(f"--worlds takes SIZE:SEED ({', '.join(SIZE_NAMES)}, and an integer), got {spec!r}")
