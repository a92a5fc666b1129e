"""The run configuration of `python -m eval run` (kept free of heavy imports: the CLI builds its flags)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

STRATEGY_NAMES = ("closed_book", "rag", "long_context", "cpt", "naive_rag", "auto")


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{what}={text!r}: give comma-separated numbers, e.g. 4,8,16") from None


@dataclass
class RunConfig:
    questions: list[Path] = field(
        default_factory=list,
        metadata={"help": "question .jsonl files or folders of them (a world's questions/)", "type": Path,
                  "nargs": "+", "required": True, "metavar": "PATH"},
    )  # fmt: skip
    strategies: str = field(
        default=",".join(STRATEGY_NAMES),
        metadata={"metavar": "LIST", "help": f"comma-separated, from {', '.join(STRATEGY_NAMES)}"},
    )
    gateway: str | None = field(
        default=None,
        metadata={
            "metavar": "URL",
            "help": "URL of a running gateway to ask over HTTP (default: in-process, same code)",
        },
    )
    model: str | None = field(
        default=None,
        metadata={"help": "in-process: the chat model, a checkpoint directory or a registered tag "
                  "(phase/tag or tag); default: KC_MODEL, else the newest registered checkpoint",
                  "metavar": "DIR_OR_TAG"},
    )  # fmt: skip
    concurrency: int = field(default=4, metadata={"metavar": "N", "help": "questions in flight at once"})
    limit: int | None = field(
        default=None,
        metadata={"metavar": "N", "help": "N questions of each file, spread evenly over it", "type": int},
    )
    run_id: str | None = field(
        default=None, metadata={"metavar": "ID", "help": "the report folder's name (default: the UTC time)"}
    )
    resume: bool = field(
        default=False, metadata={"help": "continue the run --run-id: ask only what has no result yet"}
    )
    max_tokens: int | None = field(
        default=None,
        metadata={"metavar": "N", "help": "answer length (default: KC_DEFAULT_MAX_TOKENS)", "type": int},
    )
    ingest_seconds: str | None = field(
        default=None,
        metadata={"help": "RAG's cost of absorbing the documents: seconds, or the JSON file that "
                  "`python -m indexer ingest DIR --json` printed (the index does not keep its timing)",
                  "metavar": "SECONDS_OR_FILE"},
    )  # fmt: skip
    references: list[str] = field(
        default_factory=list,
        metadata={"help": "other runs shown beside this one's strategies, as RUN=LABEL (a run id under "
                  "$KC_HOME/reports or a report folder): their answers to this run's questions appear as "
                  "'<strategy> (LABEL)', e.g. the model as it shipped through the same index",
                  "nargs": "+", "metavar": "RUN=LABEL", "type": str},
    )  # fmt: skip
    lc_sweep: str | None = field(
        default=None,
        metadata={"help": "long_context 'lost in the middle' sweep: numbers of documents in the window, "
                  "e.g. 4,8,16 (in-process only; each question with a supporting document in the index "
                  "is asked once per count and position)", "metavar": "N,N,..."},
    )  # fmt: skip
    lc_positions: str = field(
        default="0,0.5,1",
        metadata={
            "metavar": "P,P,...",
            "help": "positions of the answer's document for --lc-sweep (0 = first, 1 = last)",
        },
    )

    def strategy_list(self) -> list[str]:
        names = [s.strip() for s in self.strategies.split(",") if s.strip()]
        unknown = [s for s in names if s not in STRATEGY_NAMES]
        if unknown or not names:
            raise ValueError(
                f"unknown strategy {', '.join(unknown) or '(none)'}: use {', '.join(STRATEGY_NAMES)}"
            )
        return list(dict.fromkeys(names))

    def sweep(self) -> list[tuple[int, float]]:
        if not self.lc_sweep:
            return []
        counts = [int(n) for n in _floats(self.lc_sweep, "--lc-sweep")]
        positions = _floats(self.lc_positions, "--lc-positions")
        if any(n < 1 for n in counts) or any(not 0 <= p <= 1 for p in positions):
            raise ValueError("--lc-sweep counts must be >= 1 and --lc-positions within [0, 1]")
        return [(n, p) for n in counts for p in positions]

    def reference_list(self) -> list[tuple[str, str]]:
        """(run, label) pairs of --references."""
        pairs = [ref.partition("=") for ref in self.references]
        bad = [ref for ref, (run, eq, label) in zip(self.references, pairs, strict=True)
               if not (run and eq and label.strip())]  # fmt: skip
        if bad:
            raise ValueError(f"--references {bad[0]!r}: give RUN=LABEL, e.g. pydocs-theta0=θ0")
        return [(run, label.strip()) for run, _, label in pairs]

    def validate(self) -> None:
        self.strategy_list()
        self.reference_list()
        self.sweep()
        if self.concurrency < 1:
            raise ValueError(f"--concurrency must be >= 1, got {self.concurrency}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")
        if self.gateway and self.model:
            raise ValueError("--model is for in-process runs: a gateway serves its own model (KC_MODEL)")
        if self.gateway and not self.gateway.startswith(("http://", "https://")):
            raise ValueError(f"--gateway {self.gateway!r} must start with http:// or https://")
        if self.resume and not self.run_id:
            raise ValueError("--resume needs the --run-id of the run to continue")
