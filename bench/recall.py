"""Retrieval recall@k of dense, BM25 and hybrid search on a labelled query set over Python's
"What's New" pages (bench/data/python_docs_queries.jsonl: 60 queries, half naming identifiers, half
paraphrases), measured side by side in one run on one index.

    python bench/recall.py [-k 5] [--out bench/out/recall]

A hit is correct when it comes from the labelled page and contains every `must_contain` string.
Target (issue 2): hybrid >= both dense and BM25.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.corpus import OUT, QUERIES, prepare_whatsnew
from core.logging import setup_logging
from core.schemas import SearchHit
from core.settings import Settings
from indexer.embedding import Embedder
from indexer.pipeline import Index
from indexer.retriever import MODES, IndexRetriever


def is_relevant(hit: SearchHit, query: dict) -> bool:
    return hit.source == query["version"] and all(s in hit.text for s in query["must_contain"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT / "recall")
    args = parser.parse_args()
    setup_logging("WARNING")
    settings = Settings(home=args.out / "home")
    embedder = Embedder(settings.embedder, settings.embed_batch_size)
    # Idempotent: a second run of this benchmark embeds nothing.
    Index(settings, embedder=embedder).ingest(prepare_whatsnew(args.out), progress=True)
    retriever = IndexRetriever(settings, embedder=embedder)

    queries = [json.loads(line) for line in QUERIES.read_text().splitlines() if line.strip()]
    kinds = sorted({q["kind"] for q in queries})
    found: dict[str, dict[str, list[bool]]] = {m: {k: [] for k in kinds} for m in MODES}
    for q in queries:
        for mode in MODES:
            hits = retriever.search(q["query"], k=args.k, mode=mode)
            found[mode][q["kind"]].append(any(is_relevant(h, q) for h in hits))

    table = {
        mode: {
            **{kind: sum(v) / len(v) for kind, v in by_kind.items()},
            "all": sum(sum(v) for v in by_kind.values()) / len(queries),
        }
        for mode, by_kind in found.items()
    }
    columns = [*kinds, "all"]
    per_kind = ", ".join(f"{k}: {len(found['dense'][k])}" for k in kinds)
    print(f"recall@{args.k} on {len(queries)} labelled queries ({per_kind})")
    print(f"{'mode':<8}" + "".join(f"{c:>12}" for c in columns))
    for mode in MODES:
        print(f"{mode:<8}" + "".join(f"{table[mode][c]:>12.3f}" for c in columns))
    best_single = max(table["dense"]["all"], table["bm25"]["all"])
    print(
        f"hybrid / best single mode: {table['hybrid']['all'] / best_single:.3f}x   (target: hybrid >= both)"
    )
    (args.out / "result.json").write_text(json.dumps({"k": args.k, "recall": table}, indent=2))


if __name__ == "__main__":
    main()
