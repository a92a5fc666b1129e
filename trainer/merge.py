"""The chat vector: re-apply instruction tuning to a continued-pretrained checkpoint, tensor by tensor.

    python -m trainer merge --base base/T --chat sft/T-sft --cpt cpt/T-cpt-1a2b [--ratio 1.0] [--out DIR]

θmerged = θcpt + ratio · (θchat − θbase) (Huang et al. 2024, "Chat Vector"). CPT on the base model learns
the new documents; the difference between the chat model and the base it was tuned from carries the
instruction following, and adding it back gives a model that knows the new facts and still answers in
the chat format. ratio 0 returns θcpt; with θcpt = θbase it returns θchat (exactly: the arithmetic runs in
float64 and is rounded once).

The three checkpoints must share the architecture, every tensor name and shape, and the tokenizer
(vocabulary and merges of tokenizer.json); anything else is refused with one line that names it. The result
is registered as phase `merged`, which the gateway's `cpt` strategy prefers over a raw `cpt` checkpoint;
lineage.json names all three parents.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.checkpoint import default_out, read_lineage, resolve_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)

ROLES = ("base", "chat", "cpt")


class MergeError(ValueError):
    """The checkpoints cannot be merged; the message names the tensor, shape or file."""


@dataclass(frozen=True)
class MergeConfig:
    """What `python -m trainer merge` combines."""

    base: str = field(default="", metadata={"help": "the base model the chat model was tuned from",
                                            "required": True, "metavar": "CKPT"})  # fmt: skip
    chat: str = field(default="", metadata={"help": "the chat (SFT/RL) model tuned from --base",
                                            "required": True, "metavar": "CKPT"})  # fmt: skip
    cpt: str = field(default="", metadata={"help": "the continued-pretrained model (from --base)",
                                           "required": True, "metavar": "CKPT"})  # fmt: skip
    ratio: float = field(default=1.0, metadata={"help": "weight of the chat vector (0: θcpt unchanged)"})
    out: Path | None = field(
        default=None,
        metadata={"help": "checkpoint directory (default: $KC_HOME/checkpoints/merged/<tag>)", "type": Path},
    )
    tag: str | None = field(
        default=None, metadata={"help": "checkpoint tag (default: <cpt tag>-chat<ratio>)", "type": str}
    )

    def __post_init__(self) -> None:
        for role in ROLES:
            if not getattr(self, role):
                raise ValueError(f"--{role} is required")


def load_weights(path: Path) -> dict[str, Any]:
    """Every tensor of a checkpoint directory's safetensors files (one file or shards)."""
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise MergeError(f"{path} holds no .safetensors weights")
    tensors: dict[str, Any] = {}
    for f in files:
        tensors.update(load_file(str(f)))
    return tensors


def tokenizer_fingerprint(path: Path) -> tuple[Any, Any, Any]:
    """(vocab, merges, added tokens) of the directory's tokenizer.json."""
    file = path / "tokenizer.json"
    if not file.exists():
        raise MergeError(f"{path} has no tokenizer.json: cannot check that the tokenizers match")
    data = json.loads(file.read_text(encoding="utf-8"))
    model = data.get("model", {})
    added = sorted((t.get("id"), t.get("content")) for t in data.get("added_tokens", []))
    return model.get("vocab"), model.get("merges"), added


def check_tokenizers(paths: dict[str, Path]) -> None:
    prints = {role: tokenizer_fingerprint(p) for role, p in paths.items()}
    for role in ("chat", "cpt"):
        for i, name in enumerate(("vocabulary", "merges", "special tokens")):
            if prints[role][i] != prints["base"][i]:
                raise MergeError(
                    f"--{role} {paths[role]} has another tokenizer than --base {paths['base']} (its {name} "
                    "differ): a chat vector only transfers between models with the same tokenizer"
                )


def check_architectures(paths: dict[str, Path]) -> None:
    def arch(p: Path) -> tuple[Any, Any]:
        config = json.loads((p / "config.json").read_text(encoding="utf-8"))
        return config.get("model_type"), config.get("architectures")

    want = arch(paths["base"])
    for role in ("chat", "cpt"):
        if arch(paths[role]) != want:
            raise MergeError(f"--{role} {paths[role]} is a {arch(paths[role])} model, --base a {want}")


def check_tensors(weights: dict[str, dict[str, Any]], paths: dict[str, Path]) -> None:
    names = set(weights["base"])
    for role in ("chat", "cpt"):
        other = set(weights[role])
        if other != names:
            missing = sorted(names - other)
            extra = sorted(other - names)
            what = f"lacks {missing[0]}" if missing else f"has {extra[0]}, which --base lacks"
            raise MergeError(
                f"--{role} {paths[role]} {what} ({len(missing)} missing, {len(extra)} extra tensors)"
            )
        for name in sorted(names):
            a, b = weights["base"][name], weights[role][name]
            if a.shape != b.shape:
                raise MergeError(
                    f"tensor {name}: shape {tuple(b.shape)} in --{role} {paths[role]}, {tuple(a.shape)} in "
                    "--base: the checkpoints are not the same architecture"
                )


def chat_vector(
    base: dict[str, Any], chat: dict[str, Any], cpt: dict[str, Any], ratio: float
) -> dict[str, Any]:
    """θcpt + ratio · (θchat − θbase) per tensor, in float64, rounded once to θcpt's dtype."""
    out = {}
    for name, c in cpt.items():
        if not c.is_floating_point():
            out[name] = c.clone()
            continue
        merged = c.double() + ratio * (chat[name].double() - base[name].double())
        out[name] = merged.to(c.dtype)
    return out


def run_merge(cfg: MergeConfig) -> dict[str, Any]:
    """Merge and save; returns a summary (out, tag, parents, ratio, tensors)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    paths = {role: resolve_checkpoint(getattr(cfg, role)) for role in ROLES}
    check_tokenizers(paths)
    check_architectures(paths)
    weights = {role: load_weights(p) for role, p in paths.items()}
    check_tensors(weights, paths)
    merged = chat_vector(weights["base"], weights["chat"], weights["cpt"], cfg.ratio)
    delta_norm = float(
        sum(((weights["chat"][n].double() - weights["base"][n].double()) ** 2).sum() for n in merged) ** 0.5
    )

    cpt_lineage = read_lineage(paths["cpt"])
    cpt_tag = cpt_lineage.get("tag") or paths["cpt"].name
    tag = cfg.tag or f"{cpt_tag}-chat{cfg.ratio:g}"
    out = (cfg.out or default_out("merged", tag)).expanduser()
    model = AutoModelForCausalLM.from_pretrained(str(paths["cpt"]), dtype=torch.float32)
    missing, unexpected = model.load_state_dict(merged, strict=False)
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    if unexpected or set(missing) - tied - {"lm_head.weight"}:
        raise MergeError(
            f"the merged weights do not fit {paths['cpt']}: missing {missing}, unexpected {unexpected}"
        )
    # The merged model is a chat model: it takes the chat model's tokenizer files (same vocabulary, and its
    # chat template).
    tokenizer = AutoTokenizer.from_pretrained(str(paths["chat"]))
    parents = {role: str(p) for role, p in paths.items()}
    metrics = {"ratio": cfg.ratio, "tensors": len(merged), "chat_vector_norm": delta_norm,
               "step": cpt_lineage.get("metrics", {}).get("step")}  # fmt: skip
    save_checkpoint(
        model, tokenizer, out, phase="merged", tag=tag, parent=paths["cpt"],
        data_sha256=cpt_lineage.get("data_sha256"), config=cfg, metrics=metrics,
        extra={"parents": parents, "parent_tag": cpt_tag},
    )  # fmt: skip
    logger.info("merged %d tensors: cpt + %g x (chat - base), |chat - base| = %.4f", len(merged), cfg.ratio,
                delta_norm)  # fmt: skip
    return {"out": str(out), "tag": tag, "parents": parents, "ratio": cfg.ratio, "tensors": len(merged),
            "chat_vector_norm": delta_norm}  # fmt: skip
