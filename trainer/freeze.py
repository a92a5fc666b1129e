"""Which decoder layers train: `--freeze-layers N` keeps the embeddings (with tied embeddings, the LM head
too) and the lowest N decoder layers fixed, so backward stops at layer N; and a summary of what trains.
"""

from __future__ import annotations

import re
from typing import Any

_LAYER_INDEX = re.compile(r"\.layers\.(\d+)\.")


def decoder_layers(model: Any) -> Any:
    """The decoder's stack of layers (`model.model.layers` for a Llama), also under a PEFT wrapper."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = getattr(base.get_decoder(), "layers", None)
    if layers is None:
        raise ValueError(f"{type(base).__name__} has no `layers` stack: --freeze-layers cannot find them")
    return layers


def check_freeze_layers(n: int, num_layers: int) -> None:
    """At least the top decoder layer must train."""
    if not 0 <= n < num_layers:
        raise ValueError(
            f"--freeze-layers {n}: the model has {num_layers} decoder layers; give 0 to {num_layers - 1} "
            "(0 freezes nothing; at least the top layer must train)"
        )


def freeze_lower_layers(model: Any, n: int) -> None:
    """Full fine-tuning: no gradient for the input embeddings and decoder layers 0..n-1, so autograd never
    goes below layer n. With tied embeddings this freezes the LM head too (it is the embedding)."""
    layers = decoder_layers(model)
    check_freeze_layers(n, len(layers))
    if n == 0:
        return
    model.get_input_embeddings().requires_grad_(False)
    for layer in layers[:n]:
        layer.requires_grad_(False)


def trainable_summary(model: Any) -> dict[str, int]:
    """How much trains and how deep backward goes: `backward_layers` is the number of decoder layers that
    autograd walks through (from the lowest one with a trainable weight, or all when the embeddings train)."""
    num_layers = len(decoder_layers(model))
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    lowest = num_layers
    for name, _ in trainable:
        match = _LAYER_INDEX.search(name)
        if match:
            lowest = min(lowest, int(match.group(1)))
    if model.get_input_embeddings().weight.requires_grad:
        lowest = 0
    return {
        "trainable_params": sum(p.numel() for _, p in trainable),
        "backward_layers": num_layers - lowest,
    }
