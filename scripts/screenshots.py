"""`make screenshots`: PNGs of the web page (docs/web.md), taken by the browser test's own code
(tests/browser/web_support.py) in headless Chromium (Debian's `chromium`, never a downloaded browser).

    .venv/bin/python scripts/screenshots.py              # -> docs/web-compare.png, docs/web-report.png
    .venv/bin/python scripts/screenshots.py --out /tmp/shots

What it shows is real and made on the spot, about a minute on 2 cores: the nano model of the gateway
tests taught to cite one answer, an index of four documents, a live gateway (`python -m service`), an
eval run through it (`python -m eval run --gateway`), then the compare view after one question and that
run's report page.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "browser"))


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="folder for the PNGs (default: docs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from playwright.sync_api import sync_playwright
    from web_support import chromium_path, eval_run, prepare_home, screenshots, start_gateway

    from core.settings import Settings
    from indexer.embedding import Embedder

    if chromium_path() is None:
        print(
            "screenshots: no system Chromium; apt-get install chromium (or set KC_CHROMIUM)", file=sys.stderr
        )
        return 2
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kc-shots-") as tmp:
        root = Path(tmp)
        env = prepare_home(root, Embedder(Settings().embedder))
        gateway = start_gateway(env, root / "gateway.log")
        try:
            eval_run(env, gateway.url, root)
            with sync_playwright() as playwright:
                paths = screenshots(gateway.url, args.out, playwright)
        finally:
            gateway.stop()
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
