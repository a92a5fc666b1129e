"""Writing the rows and their manifest, and `run` (the command `python -m eval whatsnew-rows`)."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

from core.config_flags import to_jsonable
from eval.whatsnew.build import Generated, generate
from eval.whatsnew.config import GENERATOR_VERSION, SFT_KINDS, WhatsNewConfig
from eval.world.writer import remove_outputs

logger = logging.getLogger(__name__)

# Everything write_rows creates; only these are removed when rows are rewritten in place.
OUTPUTS = ("sft", "rl", "manifest.json")


def check_out_dir(out: Path) -> None:
    """Refuse a file, or a folder holding anything but rows written by this command (before any work)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; pass a directory (it is created if missing)")
    if out.is_dir() and any(out.iterdir()):
        try:
            ours = (
                json.loads((out / "manifest.json").read_text(encoding="utf-8")).get("generator")
                == "whatsnew-rows"
            )
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise ValueError(
                f"--out {out} is not empty and holds no manifest.json of `python -m eval whatsnew-rows`; "
                "pass a new or empty directory"
            )


def prepare_out_dir(out: Path) -> None:
    """Create `out`, or clear the rows written there before."""
    check_out_dir(out)
    remove_outputs(out, OUTPUTS)
    out.mkdir(parents=True, exist_ok=True)


def write_rows(gen: Generated, cfg: WhatsNewConfig, out: Path) -> dict[str, object]:
    """The files under `out`, and their manifest (returned). Byte-identical for the same config."""
    prepare_out_dir(out)
    files: dict[str, str] = {}
    for rel, rows in (*((f"sft/{k}.jsonl", gen.sft[k]) for k in SFT_KINDS), ("rl/grounded.jsonl", gen.rl)):
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
        files[rel] = hashlib.sha256(data).hexdigest()
    sft_total = sum(len(rows) for rows in gen.sft.values())
    manifest: dict[str, object] = {
        "generator": "whatsnew-rows",
        "generator_version": GENERATOR_VERSION,
        "seed": cfg.seed,
        "config": to_jsonable(cfg),
        "counts": {
            "sft": {k: len(gen.sft[k]) for k in SFT_KINDS},
            "sft_total": sft_total,
            "abstain_share": round(len(gen.sft["abstain"]) / sft_total, 4) if sft_total else 0.0,
            "rl": {"grounded": len(gen.rl)},
            "facts": gen.facts,
            "chunks": gen.chunks,
        },
        "dropped": gen.dropped,
        "pages": gen.pages,
        "files": files,
    }
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    (out / "manifest.json").write_text(text, encoding="utf-8")
    logger.info("wrote %d SFT rows and %d RL rows to %s", sft_total, len(gen.rl), out)
    return manifest


def run(cfg: WhatsNewConfig, out: Path) -> dict[str, object]:
    """Generate and write; the manifest with `out` and the seconds it took."""
    started = time.perf_counter()
    check_out_dir(out)
    manifest = write_rows(generate(cfg), cfg, out)
    return {"out": str(out), **manifest, "seconds": round(time.perf_counter() - started, 2)}


def format_summary(summary: dict[str, object]) -> str:
    counts, dropped, config = summary["counts"], summary["dropped"], summary["config"]
    assert isinstance(counts, dict) and isinstance(dropped, dict) and isinstance(config, dict)

    def listed(values: dict[str, object]) -> str:
        return ", ".join(f"{k} {v}" for k, v in values.items())

    stated = sum(dropped["states_eval_answer"].values())
    return "\n".join(
        [
            f"whatsnew rows, seed {summary['seed']}, {len(counts['facts'])} kinds of facts from "
            f"{len(summary['pages'])} pages -> {summary['out']}",  # type: ignore[arg-type]
            f"  sft          {listed(counts['sft'])} ({counts['sft_total']} rows, abstain share "
            f"{counts['abstain_share']})",
            f"  rl           grounded {counts['rl']['grounded']}",
            f"  facts        {listed(counts['facts'])}",
            f"  dropped      {stated} facts stating a topical eval answer; rows sharing a "
            f"{config['ngram']}-gram with one of {dropped['eval_questions']} eval questions: "
            f"{listed(dropped['ngram_overlap'])}; "
            f"{dropped['credit_cap']} credit facts over the cap; {dropped['no_passage']} without a passage",
            f"  seconds      {summary['seconds']}",
        ]
    )
