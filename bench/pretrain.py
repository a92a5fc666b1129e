"""Tokens/s and MFU of the tiny preset: the trainer's loop side by side with a plain PyTorch loop of the
same model, batch and optimizer, in one run (median step time after warm-up, interleaved).

    python bench/pretrain.py [--steps 30] [--threads 2] [--preset tiny] [--attention document|window]

With `--attention document` (the trainer's default) the windows hold records of ~150 tokens and both loops
keep each record to itself (position ids restarting at every end-of-document token).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaForCausalLM

from trainer.data import Windows
from trainer.loop import (
    METRICS_FILE,
    LoopConfig,
    Pool,
    TrainLoop,
    detect_peak_tflops,
    document_inputs,
    flops_per_token,
)
from trainer.presets import get_preset

EOS = 0  # the end-of-document token of the random windows


def plain_loop(
    model: LlamaForCausalLM, windows: Windows, batch: int, steps: int, lr: float, documents: bool
) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1)
    times = []
    for step in range(steps):
        t0 = time.perf_counter()
        ids, labels = (torch.from_numpy(a) for a in windows.batch(step, batch))
        extra = document_inputs(ids, EOS) if documents else {}
        loss = model(input_ids=ids, labels=labels, **extra).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return times


def our_loop(
    model: LlamaForCausalLM,
    windows: Windows,
    batch: int,
    steps: int,
    seq_len: int,
    threads: int,
    documents: bool,
) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = LoopConfig(max_steps=steps, lr=3e-3, warmup_steps=5, eval_every=0, save_every=0)
        loop = TrainLoop(
            model,
            [Pool("docs", windows, batch)],
            {},
            cfg,
            Path(tmp),
            lambda *a: None,
            seq_len=seq_len,
            threads=threads,
            document_eos=EOS if documents else None,
        )
        loop.run()
        rows = [json.loads(x) for x in (Path(tmp) / METRICS_FILE).read_text().splitlines()]
    return [batch * seq_len / r["tokens_per_s"] for r in rows]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vocab", type=int, default=1728)
    p.add_argument("--attention", choices=("document", "window"), default="document")
    args = p.parse_args()
    documents = args.attention == "document"
    torch.set_num_threads(args.threads)
    preset = get_preset(args.preset)
    seq_len, batch = preset.train.seq_len, preset.train.batch_size
    rng = np.random.default_rng(0)
    ids = rng.integers(1, args.vocab, size=(256, seq_len), dtype=np.int64)
    if documents:
        ids[:, 149::150] = EOS
    windows = Windows(ids, ids.copy(), seed=0)
    results = {}
    for name in ("plain", "ours", "plain2", "ours2"):  # interleaved: a noisy neighbour hits both
        torch.manual_seed(0)
        model = LlamaForCausalLM(preset.model.llama_config(args.vocab))
        if name.startswith("plain"):
            times = plain_loop(model, windows, batch, args.steps, 3e-3, documents)
        else:
            times = our_loop(model, windows, batch, args.steps, seq_len, args.threads, documents)
        results[name] = statistics.median(times[3:])
    fpt = flops_per_token(model, seq_len)
    peak = detect_peak_tflops(torch.device("cpu"), args.threads) * 1e12
    tokens = batch * seq_len
    plain = min(results["plain"], results["plain2"])
    ours = min(results["ours"], results["ours2"])
    for label, t in (("plain PyTorch", plain), ("trainer loop", ours)):
        print(
            f"{label:<14} {tokens / t:>9,.0f} tokens/s  {t * 1000:7.1f} ms/step  "
            f"MFU {fpt * tokens / t / peak:.2%}"
        )
    print(
        f"ratio ours/plain: {plain / ours:.3f}  (preset {args.preset}, batch {batch} x {seq_len}, "
        f"{args.attention} attention, "
        f"{args.threads} threads, peak {peak / 1e12:.3f} TFLOP/s)"
    )


if __name__ == "__main__":
    main()
