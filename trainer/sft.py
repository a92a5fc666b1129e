"""Supervised fine-tuning with TRL's SFTTrainer: loss on the assistant's tokens only, full or LoRA.

    python -m trainer sft --from base/tiny-1a2b3c4d --data data/world/sft [--lora-r 8] [--epochs 2]

`--from` is a checkpoint directory or a registered tag; any Hugging Face causal-LM directory works (e.g.
SmolLM2-135M-Instruct from `python -m trainer import-gguf`). The loss covers the assistant's turns and
their `<|im_end|>` (the chat template's `{% generation %}` span), never the system prompt, passages or
question. With `--lora-r R` only LoRA adapters train; the adapter is kept in `adapter/` and merged into
the saved weights, so the checkpoint loads like any other.

Cheap on a CPU (issue 20). A step costs the forward through every layer plus the backward from the loss
down to the lowest layer with a trainable weight (TRL already sends only the answer positions through the
LM head). `--freeze-layers N` keeps the embeddings (with tied embeddings, as in SmolLM2, the LM head too)
and the lowest N decoder layers fixed, so backward stops at layer N: full fine-tuning trains layers >= N
and the final norm, LoRA puts adapters on layers >= N only. `--batching length` batches rows of similar
length (transformers' LengthGroupedSampler: sorted within megabatches of up to 50 batches, so it needs a
few hundred rows to take padding near zero). `--batching packed` is TRL's best-fit packing: each row's
labels (assistant tokens only) are built before packing and its position ids restart at 0, from which
transformers masks attention between rows; no padding, but without a variable-length attention kernel a
CPU computes the attention of a packed batch across all of it. Measured with `python bench/sft_levers.py
--model SMOLLM2 --data WORLD/sft/grounded.jsonl WORLD/sft/abstain.jsonl --out OUT` (SmolLM2-135M-Instruct,
the tiny world's rows, 209 tokens on average; 64 rows once, batch 8, --max-length 512, --threads 1 on 2
shared cores, rates at the median step; held-out loss on the answers of 32 rows, 2.16 before training):

    configuration                            rows/min  tokens/s  padding  peak RSS  held-out loss  speed
    a  LoRA r16, lr 2e-4 (baseline)             22.1       78      27%   9.4 GiB          1.558  1.00x
    b  LoRA r16, lr 1e-3                        22.1       78      27%   9.2 GiB          0.933  1.00x
    c  LoRA r16, lr 2e-4, --freeze-layers 20    38.3      136      27%   5.5 GiB          1.980  1.73x
    d  full, lr 5e-5, --freeze-layers 20        35.0      124      27%   5.3 GiB          1.466  1.58x
    e  a, --batching packed                     27.5       97       0%   6.3 GiB          1.532  1.24x
    f  a, --batching length                     31.1      110      15%   9.3 GiB          1.604  1.46x
    h  full, lr 2e-4, --freeze-layers 20,       42.4      150      15%   5.2 GiB          1.060  1.91x
       --batching length

(f: an earlier run of the same bench, same rows.) Freezing 20 of 30 layers cuts backward to a third and
peak memory by 4 GiB; LoRA on 10 layers then learns too little at lr 2e-4 (c), while full fine-tuning
of those 10 layers at lr 2e-4 (h) learns nearly as much a row as LoRA at lr 1e-3 on all 30 (b) at
twice the rows a minute. In a run on 128 rows (`--steps 16`, its own held-out rows), about three minutes
of training each took h through all 128 rows to a held-out loss of 0.66 and b through 64 to 0.87. For
the demo's CPU budget: `--freeze-layers 20 --batching length --lr 2e-4` (full), about 40 rows a minute
on one thread.
"""

from __future__ import annotations

import logging
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.jsonl import iter_jsonl
from trainer.data import JSONL_SUFFIXES, expand_paths, hash_files
from trainer.freeze import check_freeze_layers, decoder_layers, freeze_lower_layers, trainable_summary
from trainer.hf import (
    HFRunConfig,
    final_model,
    hf_args,
    lora_alpha_field,
    open_run,
    peft_lora,
    quiet,
    resolve_parent,
    writes_checkpoint,
)
from trainer.plan import PlanConfig, format_plan, make_plan

logger = logging.getLogger(__name__)

_GENERATION_TAG = re.compile(r"{%-?\s*generation\s*-?%}")
BATCHING = ("random", "length", "packed")


@dataclass(frozen=True)
class SFTRunConfig(HFRunConfig):
    """What `python -m trainer sft` trains, on what, and how (the shared flags: `HFRunConfig`)."""

    data: list[Path] = field(
        default_factory=list,
        metadata={
            "help": "chat .jsonl files or folders of them (rows with `messages`); PATH:N takes N of PATH's "
            "rows, drawn with --seed (to set a mixture)",
            "nargs": "+",
            "required": True,
            "type": Path,
        },
    )
    lora_r: int = field(default=0, metadata={"help": "LoRA rank; 0 fine-tunes every weight"})
    lora_alpha: int | None = lora_alpha_field()
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout"})
    freeze_layers: int = field(
        default=0,
        metadata={
            "metavar": "N",
            "help": "freeze the embeddings and the lowest N decoder layers, so backward stops at layer N "
            "(full: their weights stay fixed; LoRA: adapters on layers >= N only). With tied embeddings "
            "the LM head is the embedding and stays fixed too. 0 trains every layer",
        },
    )
    batching: str = field(
        default="random",
        metadata={
            "choices": BATCHING,
            "help": "how rows form a batch: `random` (padded to the batch's longest row), `length` "
            "(rows of similar length together: little padding) or `packed` (TRL's best-fit packing into "
            "--max-length sequences, each row attending to itself only; --batch-size then counts packed "
            "sequences)",
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.data:
            raise ValueError("--data is required")
        list(map(split_cap, self.data))  # a bad PATH:N fails here, before any loading
        if self.lora_r < 0:
            raise ValueError(f"--lora-r must be >= 0, got {self.lora_r}")
        if self.freeze_layers < 0:
            raise ValueError(f"--freeze-layers must be >= 0 (0 freezes nothing), got {self.freeze_layers}")
        if self.batching not in BATCHING:
            raise ValueError(f"--batching must be one of {', '.join(BATCHING)}, got {self.batching!r}")


_CAP = re.compile(r"^(?P<path>.+):(?P<rows>\d+)$")


def split_cap(entry: Path | str) -> tuple[Path, int | None]:
    """A `--data` entry: `PATH:N` (N of the rows of a file or folder) or a file or folder taken whole."""
    m = _CAP.match(str(entry))
    if m is None:
        return Path(entry), None
    if int(m["rows"]) < 1:
        raise ValueError(f"--data {entry}: take at least 1 row")
    return Path(m["path"]), int(m["rows"])


def read_sft_data(entries: list[Path], seed: int) -> tuple[list[Path], list[dict[str, Any]]]:
    """The files behind `--data` and their chat rows; a `PATH:N` entry gives N of its rows, drawn with
    `seed` (the same rows for the same seed), so a mixture of sources is set on the command line."""
    files: list[Path] = []
    rows: list[dict[str, Any]] = []
    for path, cap in map(split_cap, entries):
        found = expand_paths([path], JSONL_SUFFIXES)
        got = read_chat_rows(found)
        files += found
        rows += random.Random(f"{seed}:{path.name}").sample(got, cap) if cap and cap < len(got) else got
    return files, rows


def read_chat_rows(files: list[Path]) -> list[dict[str, Any]]:
    """`{"messages": [...]}` rows; other fields are dropped. A row without an assistant turn is an error."""
    rows = []
    for f in files:
        for n, row in iter_jsonl(f):
            messages = row.get("messages") if isinstance(row, dict) else None
            if not isinstance(messages, list) or not any(
                isinstance(m, dict) and m.get("role") == "assistant" for m in messages
            ):
                raise ValueError(f"{f}:{n}: an SFT row needs `messages` with an assistant turn")
            rows.append({"messages": [{"role": m["role"], "content": m["content"]} for m in messages]})
    if not rows:
        raise ValueError(f"no chat rows in {', '.join(map(str, files))}")
    return rows


def trl_rows(rows: list[dict[str, Any]], *, assistant_masks: bool) -> list[dict[str, Any]]:
    """The rows as TRL takes them. Our template marks the assistant's text for TRL's assistant-only loss
    (`assistant_masks`). Another model's template may not, and TRL patches only some: then each row becomes
    prompt + final assistant turn, with the loss on that completion (earlier assistant turns of a
    multi-turn row are context only)."""
    if assistant_masks:
        return rows
    if any(r["messages"][-1]["role"] != "assistant" for r in rows):
        raise ValueError(
            "without {% generation %} markers in the chat template, every row must end "
            "with the assistant's answer"
        )
    return [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows]


@dataclass
class BatchStats:
    """What the trained batches held: rows, real tokens, the positions computed on (tokens + padding) and
    the tokens in the loss."""

    rows: int = 0
    tokens: int = 0
    positions: int = 0
    loss_tokens: int = 0

    def add(self, inputs: dict[str, Any]) -> None:
        ids = inputs["input_ids"]
        self.positions += ids.numel()
        self.loss_tokens += int((inputs["labels"] != -100).sum())
        if "attention_mask" in inputs:
            self.rows += ids.shape[0]
            self.tokens += int(inputs["attention_mask"].sum())
        else:  # padding-free packing: one flat sequence, each row's positions start again at 0
            self.rows += int((inputs["position_ids"] == 0).sum())
            self.tokens += ids.numel()

    @property
    def padding_share(self) -> float:
        return 1 - self.tokens / self.positions if self.positions else 0.0


def _counting_trainer(stats: BatchStats) -> Any:
    from trl import SFTTrainer

    class CountingSFTTrainer(SFTTrainer):
        """SFTTrainer that adds every trained batch to `stats` (evaluation batches are not counted)."""

        def compute_loss(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            if model.training:
                stats.add(inputs)
            return super().compute_loss(model, inputs, *args, **kwargs)

    return CountingSFTTrainer


def lora_config(cfg: SFTRunConfig, num_layers: int) -> Any:
    """The adapters of `--lora-r`: every projection of layers >= `--freeze-layers`."""
    upper = list(range(cfg.freeze_layers, num_layers)) if cfg.freeze_layers else None
    # An adapter below layer N would make autograd walk down to it: with none there, backward stops at N.
    return peft_lora(cfg.lora_r, cfg.lora_alpha, dropout=cfg.lora_dropout, layers=upper)


def sft_args(cfg: SFTRunConfig, output_dir: Path, *, assistant_masks: bool, cuda: bool) -> Any:
    """TRL's SFTConfig for this run; `assistant_masks`: the chat template marks the assistant's tokens."""
    from trl import SFTConfig

    return hf_args(
        SFTConfig,
        output_dir,
        cuda,
        cfg.seed,
        **cfg.schedule(),
        per_device_eval_batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        assistant_only_loss=assistant_masks,
        completion_only_loss=not assistant_masks,
        # TRL builds each row's labels (assistant or completion tokens only) before it packs rows, and packed
        # rows get position ids that restart at 0, from which transformers masks attention between them.
        packing=cfg.batching == "packed",
        packing_strategy="bfd",
        eval_packing=False,  # the held-out loss is computed the same way, whatever the batching
        train_sampling_strategy="group_by_length" if cfg.batching == "length" else "random",
        include_num_input_tokens_seen="non_padding",
    )


@dataclass
class Throughput:
    """The step line's tok/s and MFU, from the tokens `stats` counted (exact with packing too, where the
    Trainer's own count drops pad-id tokens)."""

    stats: BatchStats
    flops_per_token: float
    peak_flops: float
    last_tokens: int = 0

    def __call__(self, seconds: float) -> dict[str, float]:
        tokens = self.stats.tokens
        tok_s = (tokens - self.last_tokens) / max(seconds, 1e-9)
        self.last_tokens = tokens
        return {
            "tokens_per_s": tok_s,
            "mfu": self.flops_per_token * tok_s / self.peak_flops,
            "tokens_seen": tokens,
        }


SFT_COLUMNS = (("lr", "lr", ".2e"), ("tok/s", "tokens_per_s", ",.0f"), ("mfu", "mfu", ".2%"),
               ("gnorm", "grad_norm", ".2f"))  # fmt: skip


def _sft_plan(model: Any, tokenizer: Any, rows: list[dict[str, Any]], cfg: SFTRunConfig) -> dict[str, Any]:
    """The memory and compute plan of this fine-tuning run: the model's shape, the tokens it will see."""
    c = model.config
    texts = tokenizer.apply_chat_template([r["messages"] for r in rows], tokenize=False)
    tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    epochs = cfg.epochs if cfg.max_steps <= 0 else cfg.max_steps * cfg.batch_size * cfg.grad_accum / len(rows)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return make_plan(
        PlanConfig(
            params=str(sum(p.numel() for p in model.parameters())),
            tokens=str(max(1, round(tokens * epochs))),
            context=cfg.max_length,
            layers=c.num_hidden_layers,
            hidden=c.hidden_size,
            kv_heads=getattr(c, "num_key_value_heads", None) or c.num_attention_heads,
            head_dim=head_dim,
        )
    )


def run_sft(cfg: SFTRunConfig) -> dict[str, Any]:
    """Fine-tune `cfg.from_` on the chat rows; returns a summary (out, tag, metrics)."""
    parent = resolve_parent(cfg.from_)
    files, rows = read_sft_data(cfg.data, cfg.seed)
    data_sha256 = hash_files(files)

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from trainer.loop import detect_peak_tflops, flops_per_token
    from trainer.step_log import StepLog

    suffix = "sft" + (f"-lora{cfg.lora_r}" if cfg.lora_r else "")
    run = open_run(parent, cfg, "sft", suffix, chat="SFT needs one to render `messages`")
    tokenizer = run.tokenizer
    model = AutoModelForCausalLM.from_pretrained(str(run.parent), dtype=torch.float32)
    num_layers = len(decoder_layers(model))
    check_freeze_layers(cfg.freeze_layers, num_layers)
    if not cfg.lora_r:
        freeze_lower_layers(model, cfg.freeze_layers)

    assistant_masks = bool(_GENERATION_TAG.search(tokenizer.chat_template))
    if not assistant_masks:
        logger.info(
            "the chat template has no %s markers: loss on each row's final answer", "{% generation %}"
        )
    train_rows = trl_rows(rows, assistant_masks=assistant_masks)
    dataset = Dataset.from_list(train_rows).shuffle(seed=cfg.seed)
    if cfg.limit is not None:
        dataset = dataset.select(range(min(cfg.limit, len(dataset))))
    eval_dataset = None
    if cfg.eval_fraction > 0 and len(dataset) >= 20:
        split = dataset.train_test_split(test_size=cfg.eval_fraction, seed=cfg.seed)
        dataset, eval_dataset = split["train"], split["test"]

    args = sft_args(cfg, run.out / "trainer", assistant_masks=assistant_masks, cuda=run.cuda)
    peak = detect_peak_tflops(torch.device("cuda" if run.cuda else "cpu"), run.threads) * 1e12
    stats = BatchStats()
    throughput = Throughput(stats, flops_per_token(model, 256), peak)
    callback = StepLog(run.out / "metrics.jsonl", cfg.max_minutes, logger, SFT_COLUMNS, measure=throughput)
    trainer = quiet(
        _counting_trainer(stats)(
            model=model,
            args=args,
            train_dataset=dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            peft_config=lora_config(cfg, num_layers) if cfg.lora_r else None,
            callbacks=[callback],
        )
    )
    logger.info("%s", format_plan(_sft_plan(model, tokenizer, rows, cfg)))
    trainable = trainable_summary(trainer.model)
    logger.info(
        "sft from %s: %d rows (%d held out), %s, %.3g epochs, lr %.2e, %s batches",
        run.parent,
        len(dataset),
        len(eval_dataset or []),
        f"LoRA r={cfg.lora_r}" if cfg.lora_r else "full fine-tuning",
        cfg.epochs,
        cfg.lr,
        cfg.batching,
    )
    logger.info(
        "trainable: %s of %s parameters; backward through the top %d of %d decoder layers",
        f"{trainable['trainable_params']:,}",
        f"{sum(p.numel() for p in model.parameters()):,}",
        trainable["backward_layers"],
        num_layers,
    )
    started = time.perf_counter()
    train_out = trainer.train()
    metrics: dict[str, Any] = {
        "train_loss": float(train_out.training_loss),
        "steps": int(trainer.state.global_step),
        "train_seconds": time.perf_counter() - started,
        "tokens_seen": int(getattr(trainer.state, "num_input_tokens_seen", 0) or 0),
        "tokens_trained": stats.tokens,
        "rows_seen": stats.rows,
        "loss_tokens_seen": stats.loss_tokens,
        "padding_share": stats.padding_share,
        **trainable,
    }
    logger.info(
        "trained %d rows, %d tokens (%d in the loss), padding %.1f%% of the positions computed",
        stats.rows,
        stats.tokens,
        stats.loss_tokens,
        100 * stats.padding_share,
    )
    if eval_dataset is not None:
        metrics["heldout_loss"] = float(trainer.evaluate()["eval_loss"])
        metrics["heldout_rows"] = len(eval_dataset)
        logger.info("eval | heldout_loss %.4f (assistant tokens)", metrics["heldout_loss"])

    if not writes_checkpoint(trainer, run.out):
        return run.summary(metrics)
    model = final_model(trainer.model, bool(cfg.lora_r), run.out)
    data = {"files": [str(f) for f in files], "rows": len(dataset)}
    lineage = run.save(model, data_sha256, cfg, metrics, data=data)
    return run.summary(lineage["metrics"])
