"""The document indexer: a folder of documents becomes a hybrid (FAISS + BM25) index that stays correct
as the folder changes.

    python -m indexer ingest docs/          # add, replace and prune; idempotent and crash-safe
    python -m indexer search "query" -k 5   # dense | bm25 | hybrid
"""
