"""The benchmark corpus: Python's "What's New" pages 2.0-3.15 (vendored under data/python-docs), as one
jsonl file with a title, date and source per page, so a hit can be checked against the page a query is
about."""

from __future__ import annotations

import json
from pathlib import Path

from eval.whatsnew import load_pages

ROOT = Path(__file__).resolve().parents[1]
WHATSNEW = (ROOT / "data/python-docs/whatsnew-pre", ROOT / "data/python-docs/whatsnew")
QUERIES = ROOT / "bench" / "data" / "python_docs_queries.jsonl"
OUT = ROOT / "bench" / "out"


def prepare_whatsnew(out_dir: Path, sources: tuple[Path, ...] = WHATSNEW) -> Path:
    """Write `out_dir/whatsnew/whatsnew.jsonl` (one document per page, `source` = the version)."""
    folder = out_dir / "whatsnew"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "whatsnew.jsonl"
    rows = [
        {
            "id": page.version,
            "title": f"What's New in Python {page.version}",
            "date": page.date.isoformat(),
            "source": page.version,
            "text": page.text,
        }
        for source in sources
        for page in load_pages(source)
    ]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if not target.exists() or target.read_text() != text:  # keep the file (and its hash) stable across runs
        target.write_text(text)
    return folder
