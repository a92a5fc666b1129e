"""Logging set-up shared by every command line."""

from __future__ import annotations

import logging
import os
import sys

_FORMAT = "%(asctime)s %(levelname)-5s %(name)s: %(message)s"


def setup_logging(level: str | int | None = None) -> None:
    """Log to stderr (stdout is for results, e.g. `--json`); quieten chatty libraries."""
    level = level or os.environ.get("KC_LOG_LEVEL", "INFO")
    logging.basicConfig(level=level, format=_FORMAT, datefmt="%H:%M:%S", stream=sys.stderr, force=True)
    for noisy in ("httpx", "urllib3", "sentence_transformers", "transformers", "faiss", "bm25s", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
