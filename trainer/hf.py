"""The shared frame of the phases a Hugging Face (TRL) trainer runs: sft, reward-model and rl.

A phase is its data, its trainer and its metrics; the rest is here, in the order a run uses it:

    parent = resolve_parent(cfg.from_)                      # before reading the data: a bad --from first
    rows = ...                                              # the phase's data
    run = open_run(parent, cfg, "sft", "sft", chat="SFT needs one to render `messages`")
    args = hf_args(SFTConfig, run.out / "trainer", run.cuda, cfg.seed, **cfg.schedule(), ...)
    trainer = quiet(SFTTrainer(..., peft_config=peft_lora(...), callbacks=[StepLog(...)]))
    ...
    if writes_checkpoint(trainer, run.out): run.save(final_model(trainer.model, lora, run.out), ...)

rl uses the prologue, `hf_args`, `peft_lora`, `quiet`, `final_model` and `Run.save`; its config (no
epochs, batches of prompts x completions) and its step log (`trainer.rl_guard.Guard`) are its own.
`HFRunConfig` holds the flags that sft and reward-model share (a phase redeclares a field to change its
default or help); the field helpers (`parent_field`, `out_field`, `tag_field`, `threads_field`,
`lora_alpha_field`) are flags that every phase which writes a checkpoint (cpt and rl too) spells alike.
The step-log callback is `trainer.step_log.StepLog` (it imports transformers, so it is imported where
the run starts, not with the configs the CLI reads).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from core.hardware import use_bf16
from trainer.checkpoint import default_out, read_lineage, resolve_checkpoint, save_checkpoint

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def parent_field(help_text: str) -> Any:
    """`--from CKPT`, required: the checkpoint a phase starts from."""
    return field(
        default="", metadata={"flag": "from", "required": True, "metavar": "CKPT", "help": help_text}
    )


def out_field(phase: str) -> Any:
    """`--out DIR`: where the checkpoint goes (default: under KC_HOME, by phase and tag)."""
    return field(
        default=None,
        metadata={
            "help": f"checkpoint directory (default: $KC_HOME/checkpoints/{phase}/<tag>)",
            "type": Path,
        },
    )


def tag_field(default: str) -> Any:
    """`--tag T`; `default` says how the tag is made when none is given."""
    return field(default=None, metadata={"help": f"checkpoint tag (default: {default})", "type": str})


def threads_field(help_text: str = "CPU threads (default: all cores)") -> Any:
    """`--threads N`: torch's CPU threads (None: all cores)."""
    return field(default=None, metadata={"help": help_text, "type": int})


def lora_alpha_field() -> Any:
    """`--lora-alpha A` beside a phase's `--lora-r`."""
    return field(default=None, metadata={"help": "LoRA alpha (default: 2 x rank)", "type": int})


@dataclass(frozen=True)
class HFRunConfig:
    """The flags of a phase that fits a TRL trainer on rows for epochs (sft, reward-model)."""

    from_: str = parent_field("checkpoint to start from: a directory (any HF causal LM) or a registered tag")
    out: Path | None = out_field("sft")  # noqa: RUF009 (a field(), not a shared default)
    tag: str | None = tag_field("<parent tag>-sft[-lora<R>]")
    epochs: float = field(default=2.0, metadata={"help": "passes over the data (1-3 is typical)"})
    max_steps: int = field(default=-1, metadata={"help": "stop after this many steps (-1: run the epochs)"})
    lr: float = field(
        default=1e-3, metadata={"help": "peak learning rate (cosine decay; LoRA on a real model: ~2e-4)"}
    )
    warmup: float = field(default=0.05, metadata={"help": "warmup: steps, or a fraction of all steps if < 1"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    batch_size: int = field(default=16, metadata={"help": "rows per device and micro-batch"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    max_length: int = field(default=1024, metadata={"help": "longer rows are truncated to this many tokens"})
    eval_fraction: float = field(default=0.02, metadata={"help": "share of rows held out for the final loss"})
    limit: int | None = field(default=None, metadata={"help": "use at most N rows (shuffled)", "type": int})
    log_every: int = field(default=1, metadata={"help": "a log line every N steps"})
    max_minutes: float | None = field(
        default=None, metadata={"help": "stop (and save) after this many minutes", "type": float}
    )
    seed: int = field(default=0, metadata={"help": "seed of shuffling, split and LoRA initialisation"})
    threads: int | None = threads_field()

    def __post_init__(self) -> None:
        if not self.from_:
            raise ValueError("--from is required")
        if not self.epochs > 0 and self.max_steps <= 0:
            raise ValueError("--epochs must be positive (or give --max-steps)")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"--eval-fraction must be in [0, 1), got {self.eval_fraction}")
        for name in ("batch_size", "grad_accum", "max_length", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")

    def schedule(self) -> dict[str, Any]:
        """The TRL arguments of these flags: epochs or steps, batches, cosine schedule, log and save."""
        return {
            "num_train_epochs": self.epochs,
            "max_steps": self.max_steps,
            "per_device_train_batch_size": self.batch_size,
            "gradient_accumulation_steps": self.grad_accum,
            "learning_rate": self.lr,
            "lr_scheduler_type": "cosine",
            "warmup_steps": self.warmup,
            "weight_decay": self.weight_decay,
            "max_grad_norm": 1.0,
            "logging_steps": self.log_every,
            "save_strategy": "no",
        }


# -- the run's prologue and epilogue -----------------------------------------------------------------


@dataclass(frozen=True)
class Parent:
    """The checkpoint a run starts from and its lineage (empty for a plain HF directory)."""

    path: Path
    lineage: dict[str, Any]

    @property
    def tag(self) -> str:
        return str(self.lineage.get("tag") or self.path.name)


def resolve_parent(ref: str | Path) -> Parent:
    """`--from`: a checkpoint directory or a registered tag, with its lineage."""
    path = resolve_checkpoint(ref)
    return Parent(path, read_lineage(path))


class RunFlags(Protocol):
    """The flags `open_run` reads: every phase's config has them."""

    @property
    def tag(self) -> str | None: ...
    @property
    def out(self) -> Path | None: ...
    @property
    def threads(self) -> int | None: ...


@dataclass(frozen=True)
class Run:
    """What the prologue resolved: where the checkpoint goes, under which tag, on how many threads."""

    phase: str
    parent: Path
    parent_tag: str
    tag: str
    out: Path
    threads: int
    cuda: bool
    tokenizer: Any

    def summary(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The start of every phase's result: out, tag, parent, metrics."""
        return {"out": str(self.out), "tag": self.tag, "parent": str(self.parent), "metrics": metrics}

    def save(
        self, model: Any, data_sha256: str, config: Any, metrics: dict[str, Any], **extra: Any
    ) -> dict[str, Any]:
        """The checkpoint into `out` under the run's phase, tag and parent (lineage.json records the
        parent's tag too, and `extra`); returns the lineage."""
        return save_checkpoint(
            model,
            self.tokenizer,
            self.out,
            phase=self.phase,
            tag=self.tag,
            parent=self.parent,
            data_sha256=data_sha256,
            config=config,
            metrics=metrics,
            extra={**extra, "parent_tag": self.parent_tag},
        )


def open_run(parent: Parent, cfg: RunFlags, phase: str, suffix: str, *, chat: str) -> Run:
    """Threads, tag (`<parent tag>-<suffix>` unless --tag), output directory (made), and the parent's
    tokenizer, which must have a chat template (`chat` says why) and gets a pad token if it has none."""
    import torch
    from transformers import AutoTokenizer

    threads = cfg.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    tag = cfg.tag or f"{parent.tag}-{suffix}"
    out = (cfg.out or default_out(phase, tag)).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(parent.path))
    if tokenizer.chat_template is None:
        raise ValueError(f"{parent.path} has no chat template: {chat}")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Run(phase, parent.path, parent.tag, tag, out, threads, torch.cuda.is_available(), tokenizer)


def hf_args(args_cls: type, output_dir: Path, cuda: bool, seed: int, **phase: Any) -> Any:
    """`args_cls` (TRL's SFTConfig, RewardConfig, GRPOConfig) with what every phase sets the same way: no
    evaluation during training, no reports or tqdm, bf16 autocast where the hardware has it natively (a
    GPU, a CPU with AVX512-BF16 or AMX: `core.hardware`) else fp32, the seed of data and initialisation;
    `phase` holds the rest (schedule, batches, the phase's own settings)."""
    return args_cls(
        output_dir=str(output_dir),
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        activation_checkpointing=False,
        bf16=use_bf16("cuda" if cuda else "cpu"),
        use_cpu=not cuda,
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        **phase,
    )


def peft_lora(r: int, alpha: int | None, *, dropout: float = 0.0, layers: list[int] | None = None) -> Any:
    """LoRA adapters of rank `r` (alpha default: 2 x r) on every projection, of `layers` only if given."""
    from peft import LoraConfig

    return LoraConfig(
        r=r,
        lora_alpha=alpha or 2 * r,
        lora_dropout=dropout,
        target_modules=list(LORA_TARGETS),
        layers_to_transform=layers,
        layers_pattern="layers" if layers else None,
        task_type="CAUSAL_LM",
    )


def quiet(trainer: Any) -> Any:
    """With tqdm off, transformers prints every log dict to stdout, which is for the result (--json)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    return trainer


def writes_checkpoint(trainer: Any, out: Path) -> bool:
    """Whether this process writes the checkpoint (under torchrun, rank 0 does); it then removes TRL's
    output_dir, which is empty: the checkpoint is written into `out` itself."""
    if not trainer.is_world_process_zero():
        return False
    with contextlib.suppress(OSError):
        (out / "trainer").rmdir()
    return True


def final_model(model: Any, lora: bool, out: Path) -> Any:
    """The model to save: with LoRA, the adapter alone goes to `out/adapter` (vLLM's LoRA serving) and
    the merged weights are returned, a checkpoint that loads like any other."""
    if not lora:
        return model
    model.save_pretrained(str(out / "adapter"))
    return model.merge_and_unload()
