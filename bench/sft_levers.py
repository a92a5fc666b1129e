"""What makes SFT cheap on a 2-core CPU (issue 20): the levers of `python -m trainer sft`, side by side on
the same rows, each one `trainer sft` process.

    python -m eval world --size tiny --out /tmp/w
    python bench/sft_levers.py --model /tmp/h3/smollm2 --out var/sft-levers \
        --data /tmp/w/sft/grounded.jsonl /tmp/w/sft/abstain.jsonl [--steps 8] [--batch-size 8] \
        [--max-length 512] [--heldout 32] [--threads 1] [--configs 0,a,b,c,d,e,h] [--extra NAME=FLAGS]

The rows are drawn once (seeded) into OUT/rows.jsonl: `--heldout` rows that every configuration holds
out for the final loss, and `--steps` x `--batch-size` rows that every configuration trains on for one
epoch, so all see the same rows once (a packed configuration in fewer, longer steps). Configurations:

    0  untrained: one step at lr 0, for the held-out loss before any training
    a  LoRA r16, lr 2e-4 (the baseline)        e  a with packed batches (TRL's best-fit packing)
    b  LoRA r16, lr 1e-3                       f  a with length-grouped batches
    c  a with adapters above --freeze only     g  c with lr 1e-3 and length-grouped batches
    d  full fine-tuning, lr 5e-5, the lowest --freeze layers frozen
    h  d with lr 2e-4 and length-grouped batches (the recommended one)

By default 0, a-e and h (about 15 minutes at --threads 1); `--configs` picks others and `--extra` adds
any `trainer sft` flags as one more configuration.

A packed configuration takes `round(batch x mean row tokens / max-length)` packed sequences a step, about
the tokens of a padded batch. The table: rows a minute and real (non-padding) tokens a second trained,
at the median step's rate (a step slowed by another process on shared cores does not count), seconds a
step at that rate, the share of computed positions that were padding, the process's peak RSS, the last
step's loss, the held-out loss on the assistant's tokens, and the ratios to `a`. Rows go to
OUT/results.jsonl; the checkpoints' weights are deleted once read (lineage.json and metrics.jsonl stay).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# name: (what it is, its `trainer sft` flags); {freeze} is --freeze.
CONFIGS = {
    "0": ("untrained (1 step at lr 0)", "--lora-r 16 --lr 0 --max-steps 1"),
    "a": ("LoRA r16 lr 2e-4 (baseline)", "--lora-r 16 --lr 2e-4"),
    "b": ("LoRA r16 lr 1e-3", "--lora-r 16 --lr 1e-3"),
    "c": ("LoRA r16 lr 2e-4, freeze {freeze}", "--lora-r 16 --lr 2e-4 --freeze-layers {freeze}"),
    "d": ("full lr 5e-5, freeze {freeze}", "--lr 5e-5 --freeze-layers {freeze}"),
    "e": ("LoRA r16 lr 2e-4, packed", "--lora-r 16 --lr 2e-4 --batching packed"),
    "f": ("LoRA r16 lr 2e-4, length batches", "--lora-r 16 --lr 2e-4 --batching length"),
    "g": (
        "LoRA r16 lr 1e-3, freeze {freeze}, length",
        "--lora-r 16 --lr 1e-3 --freeze-layers {freeze} --batching length",
    ),
    "h": ("full lr 2e-4, freeze {freeze}, length", "--lr 2e-4 --freeze-layers {freeze} --batching length"),
}


def config_flags(flags: str, batch: int, packed_batch: int) -> list[str]:
    """The configuration's flags, with a batch size unless they give one."""
    args = shlex.split(flags)
    if "--batch-size" in args:
        return args
    return [*args, "--batch-size", str(packed_batch if "packed" in args else batch)]


def draw_rows(files: list[Path], train: int, heldout: int, seed: int, out: Path) -> list[dict[str, Any]]:
    """`train + heldout` chat rows drawn from `files`, written to `out`."""
    rows = []
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rows.append({"messages": json.loads(line)["messages"]})
    need = train + heldout
    if len(rows) < need:
        raise SystemExit(f"{need} rows needed (--steps x --batch-size + --heldout), {len(rows)} in the data")
    picked = random.Random(seed).sample(rows, need)
    out.write_text("".join(json.dumps(r) + "\n" for r in picked), encoding="utf-8")
    return picked


def mean_tokens(model: str, rows: list[dict[str, Any]], max_length: int) -> float:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    texts = tok.apply_chat_template([r["messages"] for r in rows], tokenize=False)
    lengths = [min(len(ids), max_length) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
    return sum(lengths) / len(lengths)


def run_config(cmd: list[str], env: dict[str, str], log: Path) -> tuple[dict[str, Any], float]:
    """Run one `trainer sft`; its JSON summary and the process's peak RSS in GiB."""
    with log.open("w") as f:
        f.write(shlex.join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=f, text=True)
        assert proc.stdout is not None
        stdout = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[3]} failed ({proc.returncode}); see {log}")
    return json.loads(stdout), usage.ru_maxrss / 2**20  # ru_maxrss: KiB on Linux


def summarise(name: str, result: dict[str, Any], rss_gib: float, out: Path) -> dict[str, Any]:
    m = result["metrics"]
    steps = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    # The median step's rate: a step slowed by another process on the shared cores does not count.
    tok_s = statistics.median(s["tokens_per_s"] for s in steps)
    return {
        "name": name,
        "steps": m["steps"],
        "rows": m["rows_seen"],
        "rows_per_min": 60 * tok_s * m["rows_seen"] / m["tokens_trained"],
        "tokens_per_s": tok_s,
        "s_per_step": m["tokens_trained"] / m["steps"] / tok_s,
        "padding_share": m["padding_share"],
        "peak_rss_gib": rss_gib,
        "train_loss_last": steps[-1]["loss"],
        "train_loss_mean": m["train_loss"],
        "heldout_loss": m.get("heldout_loss", float("nan")),
        "heldout_rows": m.get("heldout_rows", 0),
        "trainable_params": m["trainable_params"],
        "backward_layers": m["backward_layers"],
        "train_seconds": m["train_seconds"],
    }


def print_table(rows: list[dict[str, Any]], descriptions: dict[str, str]) -> None:
    base = next((r for r in rows if r["name"] == "a"), rows[0])
    columns = [  # header, width, cell
        ("steps", 5, lambda r: f"{r['steps']}"),
        ("rows/min", 8, lambda r: f"{r['rows_per_min']:.1f}"),
        ("tok/s", 6, lambda r: f"{r['tokens_per_s']:.0f}"),
        ("s/step", 6, lambda r: f"{r['s_per_step']:.1f}"),
        ("pad", 4, lambda r: f"{r['padding_share']:.0%}"),
        ("RSS GiB", 7, lambda r: f"{r['peak_rss_gib']:.2f}"),
        ("loss end", 8, lambda r: f"{r['train_loss_last']:.3f}"),
        ("held-out", 8, lambda r: f"{r['heldout_loss']:.3f}"),
        ("tok/s x", 7, lambda r: f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}"),
        ("rows/min x", 10, lambda r: f"{r['rows_per_min'] / base['rows_per_min']:.2f}"),
        ("bwd layers", 10, lambda r: f"{r['backward_layers']}"),
        ("trainable", 9, lambda r: f"{r['trainable_params'] / 1e6:.2f}M"),
    ]
    print("\n" + f"{'config':<40} " + " ".join(f"{h:>{w}}" for h, w, _ in columns))
    for r in rows:
        label = f"{r['name']} {descriptions[r['name']]}"
        print(f"{label:<40} " + " ".join(f"{cell(r):>{w}}" for _, w, cell in columns))


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--model", required=True, help="checkpoint to fine-tune (e.g. SmolLM2 from import-gguf)")
    p.add_argument("--data", type=Path, nargs="+", required=True, help="chat .jsonl files to draw rows from")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--configs", default="0,a,b,c,d,e,h", help="which configurations, in order (0, a-h)")
    p.add_argument("--extra", action="append", default=[], metavar="NAME=FLAGS",
                   help="one more configuration, run after --configs: `trainer sft` flags, e.g. "
                   "'h=--lora-r 16 --lr 1e-3 --batching length' (repeatable)")  # fmt: skip
    p.add_argument("--steps", type=int, default=8, help="steps of a padded batch; one epoch over the rows")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=512, help="rows truncated to (and packed into) this")
    p.add_argument("--heldout", type=int, default=32, help="held-out rows, the same for every configuration")
    p.add_argument("--freeze", type=int, default=20, help="lowest decoder layers frozen in c, d, g and h")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    configs = {k: (d.format(freeze=a.freeze), f.format(freeze=a.freeze)) for k, (d, f) in CONFIGS.items()}
    names = [n for n in a.configs.split(",") if n]
    if unknown := [n for n in names if n not in configs]:
        raise SystemExit(f"unknown configurations {unknown}: choose from {', '.join(configs)}")
    for extra in a.extra:
        name, sep, flags = extra.partition("=")
        if not sep or not name or name in names:
            raise SystemExit(f"--extra {extra!r}: give NAME=FLAGS with a new NAME")
        configs[name] = (flags, flags)
        names.append(name)
    a.out.mkdir(parents=True, exist_ok=True)
    train_rows = a.steps * a.batch_size
    rows = draw_rows(a.data, train_rows, a.heldout, a.seed, a.out / "rows.jsonl")
    mean = mean_tokens(a.model, rows, a.max_length)
    packed_batch = max(1, round(a.batch_size * mean / a.max_length))
    print(f"{train_rows} training rows + {a.heldout} held out, {mean:.0f} tokens a row on average; "
          f"packed: {packed_batch} sequences of <= {a.max_length} tokens a step", flush=True)  # fmt: skip
    threads = str(a.threads)
    env = {**os.environ, "KC_HOME": str(a.out / "home"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": threads,
           "MKL_NUM_THREADS": threads, "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    descriptions = {k: d for k, (d, _) in configs.items()}
    results, started = [], time.perf_counter()
    (a.out / "results.jsonl").write_text("")
    for name in names:
        ckpt = a.out / name
        cmd = [sys.executable, "-m", "trainer", "sft", "--from", a.model, "--data", str(a.out / "rows.jsonl"),
               "--out", str(ckpt), "--tag", f"levers-{name}", "--epochs", "1",
               "--max-length", str(a.max_length), "--eval-fraction", str((a.heldout - 0.5) / len(rows)),
               "--threads", threads, "--seed", str(a.seed),
               *config_flags(configs[name][1], a.batch_size, packed_batch), "--json"]  # fmt: skip
        result, rss = run_config(cmd, env, a.out / f"{name}.log")
        row = summarise(name, result, rss, ckpt)
        if row["heldout_rows"] != a.heldout:
            raise SystemExit(f"{name} held out {row['heldout_rows']} rows, not {a.heldout}")
        for weights in ckpt.glob("**/*.safetensors"):
            weights.unlink()
        results.append(row)
        with (a.out / "results.jsonl").open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{name} {descriptions[name]}: {row['train_seconds']:.0f} s, held-out loss "
              f"{row['heldout_loss']:.3f}", flush=True)  # fmt: skip
    print_table(results, descriptions)
    print(f"\n{time.perf_counter() - started:.0f} s in all, --threads {a.threads}; {a.out / 'results.jsonl'}")


if __name__ == "__main__":
    main()
