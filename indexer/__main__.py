"""The indexer's command line.

    python -m indexer ingest docs/ [--no-prune] [--json]
    python -m indexer search "query" -k 5 [--mode dense|bm25|hybrid] [--json]
    python -m indexer stats [--json]
    python -m indexer delete SOURCE [--json]

Settings come from `KC_*` variables (see `core.settings.Settings`), e.g. KC_HOME=var KC_EMBEDDER=...
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import SQLAlchemyError

from core.db import db_error_reason, redact_url, sqlite_file
from core.logging import setup_logging
from core.schemas import IngestSummary
from core.settings import Settings
from indexer.pipeline import Index, IngestError
from indexer.retriever import MODES, IndexRetriever

log = logging.getLogger("indexer")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m indexer", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    ingest = sub.add_parser("ingest", help="add, replace and prune documents from a folder or file")
    ingest.add_argument("path", type=Path, help="folder (walked recursively) or single file")
    ingest.add_argument(
        "--no-prune", dest="prune", action="store_false", help="keep documents whose files are gone"
    )
    ingest.add_argument("--json", action="store_true", help="print the summary as JSON")

    search = sub.add_parser("search", help="retrieve the chunks most relevant to a query")
    search.add_argument("query")
    search.add_argument("-k", type=int, default=5, help="number of hits (default 5)")
    search.add_argument(
        "--mode", choices=MODES, default="hybrid", help="default: hybrid (dense + BM25 by RRF)"
    )
    search.add_argument("--json", action="store_true", help="print the hits as JSON")

    stats = sub.add_parser("stats", help="what the index holds")
    stats.add_argument("--json", action="store_true")

    delete = sub.add_parser("delete", help="remove documents by source, uri, file or folder")
    delete.add_argument("source")
    delete.add_argument("--json", action="store_true")
    return parser


def _emit(result: BaseModel | Sequence[BaseModel], as_json: bool, human: str) -> None:
    if as_json:
        if isinstance(result, BaseModel):
            data: object = result.model_dump(mode="json")
        else:
            data = [r.model_dump(mode="json") for r in result]
        print(json.dumps(data, indent=2))
    else:
        print(human)


def _summary_text(s: IngestSummary) -> str:
    lines = [
        f"added {s.added}, changed {s.changed}, removed {s.removed}, unchanged {s.unchanged}, "
        f"skipped {s.skipped}; {s.chunks_embedded} chunks embedded, {s.chunks_removed} removed "
        f"in {s.seconds:.1f}s (index version {s.index_version or 'unchanged'})"
    ]
    lines += [f"  skipped {f.path}: {f.reason}" for f in s.skipped_files]
    return "\n".join(lines)


def main(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "ingest":
        summary = Index(settings).ingest(args.path, prune=args.prune, progress=not args.json)
        _emit(summary, args.json, _summary_text(summary))
    elif args.command == "delete":
        summary = Index(settings).delete(args.source)
        _emit(summary, args.json, _summary_text(summary))
    elif args.command == "search":
        hits = IndexRetriever(settings).search(args.query, k=args.k, mode=args.mode)
        human = "\n\n".join(
            f"[{i}] {h.score:.4f}  {h.title} ({h.date})  {h.source}\n    "
            + h.text[:300].replace("\n", " ")
            + ("…" if len(h.text) > 300 else "")
            for i, h in enumerate(hits, start=1)
        )
        _emit(hits, args.json, human or "no hits (is anything ingested? see `python -m indexer stats`)")
    elif args.command == "stats":
        stats = IndexRetriever(settings).stats()
        human = "\n".join(f"{k:>14}: {v}" for k, v in stats.model_dump().items())
        _emit(stats, args.json, human)
    return 0


def cli(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as e:
        print(f"error: invalid KC_ setting: {e}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    try:
        return main(args, settings)
    except (IngestError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SQLAlchemyError as e:  # down, restarted, its disk full: one line naming the database, not a trace
        url = settings.resolved_database_url
        hint = "" if sqlite_file(url) else " (is the server running? see KC_DATABASE_URL)"
        print(f"error: the database at {redact_url(url)} failed: {db_error_reason(e)}{hint}", file=sys.stderr)
        print(_UNCHANGED.get(args.command, ""), file=sys.stderr, end="")
        return 1
    except OSError as e:  # e.g. [Errno 28] No space left on device, writing an index generation
        print(f"error: {e}", file=sys.stderr)
        print(_UNCHANGED.get(args.command, ""), file=sys.stderr, end="")
        return 1


# What a failed write leaves: every commit point is atomic (indexer.pipeline's docstring).
_UNCHANGED = dict.fromkeys(
    ("ingest", "delete"),
    "the index stays at its last committed version; fix the cause and run the same command again to finish\n",
)


if __name__ == "__main__":
    sys.exit(cli())
