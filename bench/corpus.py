"""The benchmark corpus: Python's "What's New" pages 2.0-3.15 from ../shared/data, as one jsonl file
with a title, date and source per page, so a hit can be checked against the page a query is about."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHATSNEW = ROOT.parent / "shared" / "data" / "python-docs" / "python_whatsnew.jsonl"
QUERIES = ROOT / "bench" / "data" / "python_docs_queries.jsonl"
OUT = ROOT / "bench" / "out"


def prepare_whatsnew(out_dir: Path, source: Path = WHATSNEW) -> Path:
    """Write `out_dir/whatsnew/whatsnew.jsonl` (one document per page, `source` = the version)."""
    if not source.exists():
        raise SystemExit(f"corpus not found: {source} (expected ../shared/data beside the checkout)")
    folder = out_dir / "whatsnew"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "whatsnew.jsonl"
    rows = []
    for line in source.read_text().splitlines():
        page = json.loads(line)
        v = page["version"]
        rows.append(
            {
                "id": v,
                "title": f"What's New in Python {v}",
                "date": page["date"],
                "source": v,
                "text": page["text"],
            }
        )
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if not target.exists() or target.read_text() != text:  # keep the file (and its hash) stable across runs
        target.write_text(text)
    return folder
