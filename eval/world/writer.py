"""Writes a generated world to disk, with a manifest of counts and content hashes.

Layout of DIR (see README.md next to this file):
corpus_pre/<id>.md, docs_post/<id>.md, questions/<category>.jsonl, sft/<kind>.jsonl, rl/<kind>.jsonl,
prefs/<rejected_kind>.jsonl, manifest.json. Files carry no timestamps and no paths, so the same seed and
size give byte-identical output wherever it is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

from eval.world.config import AS_OF, CUTOFF, GENERATOR_VERSION
from eval.world.generate import World
from eval.world.model import CATEGORIES, KINDS, POOLS, Document

logger = logging.getLogger(__name__)

SFT_KINDS = ("closed_book", "grounded", "long_context", "abstain", "updated", "reading")
RL_KINDS = ("closed_book", "grounded", "abstain")
PREF_KINDS = ("hallucinated", "stale", "padded")
# Everything write_world creates; only these are removed when a world is rewritten in place.
OUTPUTS = ("corpus_pre", "docs_post", "questions", "sft", "rl", "prefs", "manifest.json")


def render_markdown(doc: Document) -> str:
    """Front matter the indexer reads (title, date, source), then the body."""
    # A JSON string is a valid YAML double-quoted scalar, so any title survives the round trip.
    title = json.dumps(doc.title, ensure_ascii=False)
    return f"---\ntitle: {title}\ndate: {doc.date.isoformat()}\nsource: {doc.id}\n---\n{doc.body}\n"


def prepare_out_dir(out_dir: Path) -> None:
    """Create `out_dir`, or clear a world previously written there; refuse to touch anything else."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file; pass a directory (it is created if missing)")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not (out_dir / "manifest.json").is_file():
            raise ValueError(
                f"--out {out_dir} is not empty and holds no manifest.json from `python -m eval world`; "
                "pass a new or empty directory"
            )
        remove_outputs(out_dir, OUTPUTS)
    out_dir.mkdir(parents=True, exist_ok=True)


def remove_outputs(out_dir: Path, names: Iterable[str]) -> None:
    """Delete the files and folders `names` that an earlier run wrote under `out_dir` (missing: fine)."""
    for name in names:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


class _Writer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.hashes: dict[str, str] = {}  # relative path -> sha256

    def write(self, rel: str, text: str) -> None:
        data = text.encode("utf-8")
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.hashes[rel] = hashlib.sha256(data).hexdigest()

    def jsonl(self, rel: str, rows: Iterable[dict[str, object]]) -> int:
        lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in rows]
        self.write(rel, "".join(lines))
        return len(lines)

    def tree_hash(self, prefix: str) -> str:
        """One hash for a folder: over the sorted (name, file hash) pairs under it."""
        h = hashlib.sha256()
        for rel in sorted(r for r in self.hashes if r.startswith(prefix + "/")):
            h.update(f"{rel}\0{self.hashes[rel]}\n".encode())
        return h.hexdigest()


def write_world(world: World, out_dir: str | Path) -> dict[str, object]:
    """Write every file of `world` under `out_dir` and return the manifest (also written as manifest.json)."""
    root = Path(out_dir)
    prepare_out_dir(root)
    w = _Writer(root)
    for doc in world.documents:
        w.write(f"{'corpus_pre' if doc.era == 'pre' else 'docs_post'}/{doc.id}.md", render_markdown(doc))

    files: dict[str, dict[str, object]] = {}
    for category in CATEGORIES:
        rel = f"questions/{category}.jsonl"
        n = w.jsonl(rel, (q.to_row() for q in world.questions if q.category == category))
        files[rel] = {"rows": n}
    for folder, key, kinds, rows in (
        ("sft", "kind", SFT_KINDS, world.sft),
        ("rl", "kind", RL_KINDS, world.rl),
        ("prefs", "rejected_kind", PREF_KINDS, world.prefs),
    ):
        for kind in kinds:
            rel = f"{folder}/{kind}.jsonl"
            files[rel] = {"rows": w.jsonl(rel, (r for r in rows if r[key] == kind))}
    for rel in files:
        files[rel]["sha256"] = w.hashes[rel]
    for folder in ("corpus_pre", "docs_post"):
        n = sum(1 for rel in w.hashes if rel.startswith(folder + "/"))
        files[folder] = {"documents": n, "sha256": w.tree_hash(folder)}

    manifest = build_manifest(world, files)
    w.write("manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    logger.info("wrote world to %s: %d files", root, len(w.hashes))
    return manifest


def build_manifest(world: World, files: dict[str, dict[str, object]]) -> dict[str, object]:
    tl = world.timeline
    entities = {
        kind: {pool: sum(1 for e in tl.entities if e.kind == kind and e.pool == pool) for pool in POOLS}
        for kind in KINDS
    }

    def count(rows: list[dict[str, object]], key: str, kinds: tuple[str, ...]) -> dict[str, int]:
        return {k: sum(1 for r in rows if r[key] == k) for k in kinds}

    counts = {
        "entities": entities,
        "facts": {
            "pre": sum(f.era == "pre" for f in tl.facts),
            "post": sum(f.era == "post" for f in tl.facts),
        },
        "documents": {"corpus_pre": len(world.corpus_pre), "docs_post": len(world.docs_post)},
        "words": {
            "corpus_pre": sum(len(d.body.split()) for d in world.corpus_pre),
            "docs_post": sum(len(d.body.split()) for d in world.docs_post),
        },
        "questions": {c: sum(q.category == c for q in world.questions) for c in CATEGORIES},
        "sft": count(world.sft, "kind", SFT_KINDS),
        "rl": count(world.rl, "kind", RL_KINDS),
        "prefs": count(world.prefs, "rejected_kind", PREF_KINDS),
    }
    world_hash = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return {
        "generator": {"name": "eval.world", "version": GENERATOR_VERSION},
        "config": world.config.resolved(),
        "cutoff": CUTOFF.isoformat(),
        "as_of": AS_OF.isoformat(),
        "counts": counts,
        "world_sha256": world_hash,
        "files": files,
        # The split between training examples (train) and eval questions (eval), by entity.
        "pools": {
            pool: {kind: [e.name for e in tl.entities if e.pool == pool and e.kind == kind] for kind in KINDS}
            for pool in POOLS
        },
        # Subjects that exist nowhere: "eval" ones are asked by unanswerable questions, "train" ones by
        # abstention training examples.
        "fictitious": {pool: [name for _, name in tl.fictitious[pool]] for pool in POOLS},
    }


def manifest_summary(manifest: dict[str, object]) -> dict[str, object]:
    """What `python -m eval world --json` prints: the manifest without per-file and per-entity lists."""
    return {k: v for k, v in manifest.items() if k not in ("files", "pools", "fictitious")}
