"""Paraphrases of the world's post-cutoff news, from the world's own templates, for continued pretraining.

    python -m eval.world.paraphrase --world data/world --k 4 [--out data/world/docs_post_paraphrases]
    python -m trainer cpt --from base/T --docs data/world/docs_post data/world/docs_post_paraphrases ...

The world is regenerated from its manifest (same seed, size, paraphrases: the same bytes), and each change
after the cutoff is told again up to K times: the news renderer run with fresh template choices (title,
lead sentence, background sentences), the sentence order shuffled. Every version states exactly the facts
of the original item — no rephraser can add or drop one — so this is the clean way to test paraphrase
augmentation (Ovadia et al. 2024; Physics of LMs 3.1). A news item has few wordings (two per sentence), so
some items get fewer than K; the count written is printed. The output folder is rewritten on each run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import shutil
import sys
from pathlib import Path

from eval.world.config import WorldConfig
from eval.world.generate import World, generate_world
from eval.world.model import Document
from eval.world.render import _news
from eval.world.writer import render_markdown

DEFAULT_FOLDER = "docs_post_paraphrases"


def _body(markdown: str) -> str:
    return markdown.split("\n---\n", 1)[-1].rstrip("\n")


def load_world(folder: Path) -> World:
    """The world a folder was generated from, regenerated from its manifest and checked against its files."""
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise ValueError(f"{folder} has no manifest.json: pass a folder written by `python -m eval world`")
    config = json.loads(manifest_path.read_text(encoding="utf-8"))["config"]
    world = generate_world(WorldConfig(**config))
    first = world.docs_post[0]
    on_disk = folder / "docs_post" / f"{first.id}.md"
    if not on_disk.is_file() or _body(on_disk.read_text(encoding="utf-8")) != first.body:
        raise ValueError(
            f"{folder} does not match a world regenerated from its manifest ({config}): regenerate it with "
            "this version (`python -m eval world`)"
        )
    return world


def news_paraphrases(world: World, k: int, seed: int = 0) -> list[Document]:
    """Up to `k` re-renderings of each post-cutoff news item, each with a body unlike the original's."""
    out: list[Document] = []
    posts = world.docs_post
    if len(posts) != len(world.timeline.changes):
        raise ValueError("the world's news items do not line up with its changes")
    for doc, change in zip(posts, world.timeline.changes, strict=True):
        if doc.subject != change.subject:
            raise ValueError(f"{doc.id} is not the news of change {change.subject}")
        rng = random.Random(f"keepcurrent-paraphrase:{seed}:{doc.id}")
        seen = {doc.body}
        for _ in range(8 * k):
            if len(seen) > k:
                break
            title, _date, body, *_ = _news(world.timeline, change, rng)
            sentences = body.split(". ")
            rng.shuffle(sentences)
            body = ". ".join(s.rstrip(".") for s in sentences) + "."
            if body not in seen:
                seen.add(body)
                out.append(dataclasses.replace(doc, id=f"{doc.id}-p{len(seen) - 1}", title=title, body=body))
    return out


def write_paraphrases(world_dir: Path, k: int, out: Path | None = None, seed: int = 0) -> dict[str, object]:
    if k < 1:
        raise ValueError(f"--k must be at least 1, got {k}")
    world = load_world(world_dir)
    docs = news_paraphrases(world, k, seed)
    out = out or world_dir / DEFAULT_FOLDER
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for doc in docs:
        (out / f"{doc.id}.md").write_text(render_markdown(doc), encoding="utf-8")
    return {"out": str(out), "k": k, "news": len(world.docs_post), "paraphrases": len(docs)}


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eval.world.paraphrase", description=__doc__.split("\n")[0])
    p.add_argument("--world", type=Path, required=True, help="a folder written by `python -m eval world`")
    p.add_argument("--k", type=int, default=4, help="paraphrases per news item (default: 4)")
    p.add_argument("--out", type=Path, help=f"output folder (default: WORLD/{DEFAULT_FOLDER})")
    p.add_argument("--seed", type=int, default=0, help="seed of the template choices (default: 0)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        summary = write_paraphrases(args.world, args.k, args.out, args.seed)
    except (ValueError, OSError) as e:
        print(f"python -m eval.world.paraphrase: error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"{summary['paraphrases']} paraphrases of {summary['news']} news items (K={args.k}) -> "
            f"{summary['out']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
