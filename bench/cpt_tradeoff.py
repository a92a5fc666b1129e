"""The CPT trade-off curve (issue 6): replay fraction x paraphrases x epochs, each CPT run merged with the
chat vector and asked the world's `retained` and `new` questions closed book, before and after.

    python bench/cpt_tradeoff.py --base var/demo/checkpoints/base/demo --chat var/demo/checkpoints/sft/demo \
        --world var/demo/world --out var/cpt-tradeoff [--replay 0,0.25] [--paraphrases 0,2] [--epochs 4,16]

Every combination is one `python -m trainer cpt` run (rule-based paraphrases), one `python -m trainer
merge`, and one `python -m trainer forgetting` report; the table on stdout puts them side by side with
the chat model before CPT: new-question accuracy (and the share of new questions the chat model missed
that the model now answers), retained accuracy, held-out pre-cutoff loss, and whether answers still end
their turn (the chat template). Rows go to OUT/results.jsonl as they finish; a re-run skips finished ones.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def trainer(*args: str, log: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with log.open("a") as f:
        out = subprocess.run([sys.executable, "-m", "trainer", *args, "--json"], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=f, text=True, check=False)  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"trainer {args[0]} failed ({out.returncode}); see {log}")
    return json.loads(out.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True)
    p.add_argument("--chat", required=True)
    p.add_argument("--world", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--replay", default="0,0.25")
    p.add_argument("--paraphrases", default="0,2")
    p.add_argument("--epochs", default="4,16")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    log, results = a.out / "log.txt", a.out / "results.jsonl"
    done = {json.loads(x)["name"] for x in results.read_text().splitlines()} if results.exists() else set()
    grid = itertools.product(a.replay.split(","), a.paraphrases.split(","), a.epochs.split(","))
    for replay, para, epochs in grid:
        name = f"r{replay}-p{para}-e{epochs}"
        if name in done:
            continue
        cpt, merged = a.out / name / "cpt", a.out / name / "merged"
        run = trainer("cpt", "--from", a.base, "--docs", str(a.world / "docs_post"), "--replay", replay,
                      "--replay-from", str(a.world / "corpus_pre"), "--paraphrases", para, "--epochs", epochs,
                      "--out", str(cpt), "--tag", f"tradeoff-{name}", "--resume", log=log)  # fmt: skip
        trainer("merge", "--base", a.base, "--chat", a.chat, "--cpt", str(cpt), "--out", str(merged),
                "--tag", f"tradeoff-{name}", log=log)  # fmt: skip
        report = trainer("forgetting", "--base-chat", a.chat, "--cpt", str(cpt), "--merged", str(merged),
                         "--world", str(a.world), log=log)  # fmt: skip
        row = {"name": name, "replay": float(replay), "paraphrases": int(para), "epochs": float(epochs),
               "cpt_seconds": run["metrics"].get("elapsed_s"), "report": report}  # fmt: skip
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{name}: done", flush=True)
    rows = [json.loads(x) for x in results.read_text().splitlines()]
    print(f"\n{'run':<16} {'model':<7} {'retained':>8} {'new':>6} {'new gained':>10} {'held-out loss':>13} "
          f"{'ends turn':>9} {'cpt s':>6}")  # fmt: skip
    for i, r in enumerate(rows):
        for role, m in r["report"]["models"].items():
            if role == "before" and i:
                continue
            seconds = "-" if role == "before" else round(r["cpt_seconds"] or 0)
            print(f"{r['name'] if role != 'before' else 'chat (no CPT)':<16} {role:<7} "
                  f"{m['retained']['exact_match']:>8.1%} {m['new']['exact_match']:>6.1%} "
                  f"{m['new_gained']:>10.1%} {m.get('heldout_pre_loss', float('nan')):>13.4f} "
                  f"{m['ends_turn']:>9.1%} {seconds:>6}")  # fmt: skip


if __name__ == "__main__":
    main()
