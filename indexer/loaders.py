"""The document loaders live in `core.loaders`, shared with the trainer (continued pretraining reads any
folder users ingest); this module keeps the indexer's import path."""

from core.loaders import (
    HTML_SUFFIXES,
    LOADERS,
    SUPPORTED_SUFFIXES,
    TEXT_SUFFIXES,
    SkipFile,
    decode_text,
    iter_files,
    load_file,
    parse_date,
)

__all__ = [
    "HTML_SUFFIXES",
    "LOADERS",
    "SUPPORTED_SUFFIXES",
    "TEXT_SUFFIXES",
    "SkipFile",
    "decode_text",
    "iter_files",
    "load_file",
    "parse_date",
]
