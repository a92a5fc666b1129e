"""Ingest throughput: our whole pipeline vs plain `SentenceTransformer.encode` on the same chunk texts,
and re-ingest of the unchanged corpus, measured side by side in one run.

    python bench/ingest.py [--out bench/out/ingest]

Targets (issue 2): pipeline throughput >= 0.9x plain encode; unchanged re-ingest <= 5% of the first.
Both sides use the same loaded model, batch size and texts; model loading is outside both timings.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sqlalchemy import select

from bench.corpus import OUT, prepare_whatsnew
from core.logging import setup_logging
from core.settings import Settings
from indexer.db import ChunkRow, DocumentRow
from indexer.embedding import Embedder
from indexer.pipeline import Index, embed_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT / "ingest")
    args = parser.parse_args()
    setup_logging("WARNING")
    shutil.rmtree(args.out / "home", ignore_errors=True)
    docs = prepare_whatsnew(args.out)
    settings = Settings(home=args.out / "home")
    embedder = Embedder(settings.embedder, settings.embed_batch_size)
    embedder.model  # load once, outside both timings  # noqa: B018

    index = Index(settings, embedder=embedder)
    first = index.ingest(docs, progress=False)
    again = index.ingest(docs, progress=False)
    assert again.chunks_embedded == 0, again

    with index.sessions() as s:
        texts = [
            embed_text(t, c) for c, t in s.execute(select(ChunkRow.text, DocumentRow.title).join(DocumentRow))
        ]
    t0 = time.perf_counter()
    embedder.model.encode(texts, batch_size=settings.embed_batch_size, normalize_embeddings=True)
    plain = time.perf_counter() - t0

    rows = {
        "chunks": first.chunks_embedded,
        "pipeline_s": first.seconds,
        "plain_encode_s": round(plain, 3),
        "pipeline_chunks_per_s": round(first.chunks_embedded / first.seconds, 2),
        "plain_chunks_per_s": round(len(texts) / plain, 2),
        "throughput_ratio": round(plain / first.seconds, 3),
        "reingest_s": again.seconds,
        "reingest_fraction": round(again.seconds / first.seconds, 4),
    }
    print(f"corpus: {len(texts)} chunks of <= {settings.chunk_tokens} tokens from {docs}")
    print(f"{'':28}{'seconds':>10}{'chunks/s':>10}")
    print(f"{'plain SentenceTransformer':28}{plain:>10.1f}{rows['plain_chunks_per_s']:>10.1f}")
    print(f"{'keepcurrent ingest':28}{first.seconds:>10.1f}{rows['pipeline_chunks_per_s']:>10.1f}")
    print(f"{'re-ingest, unchanged':28}{again.seconds:>10.2f}")
    print(f"throughput ratio (ours / plain): {rows['throughput_ratio']:.3f}x   (target >= 0.9x)")
    print(f"re-ingest / first ingest:       {rows['reingest_fraction']:.2%}   (target <= 5%)")
    (args.out / "result.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
