"""Model presets: Llama shapes (RoPE, RMSNorm, SwiGLU; head_dim 32 or 64, which vLLM's CPU attention
supports) with the training defaults measured for each.

- `nano`: ~100k parameters, the unit tests (seconds).
- `tiny`: ~1.07M parameters (hidden 128, 4 layers, head_dim 32, tied embeddings), the 2-core CPU demo on the
  tiny world: one mixed run from step 0 (documents + the world's chat rows, loss on every token, each
  packed record attending to itself), AdamW lr 3e-3, warmup 50, cosine; 1,800 steps of 8 x 512 tokens
  (~13-17 min on 2 idle cores, so that pretraining and SFT fit issue 4's 20 minutes). Measured in issue 4
  (`bench/tiny_budget.py`, with the answer opened by a space and counterfactual grounded rows): this
  budget reads 42% of grounded `retained` questions and recalls 13% closed book; one schedule of 5,400
  steps (~48 min) 61% and 17%.
- `small`: ~88M parameters (hidden 768, 12 layers, head_dim 64, 4 KV heads), one GPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

VLLM_CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128)


@dataclass(frozen=True)
class ModelPreset:
    """The architecture of a LlamaForCausalLM."""

    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    vocab_size: int
    max_position_embeddings: int
    tie_embeddings: bool
    rope_theta: float = 10_000.0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}"
            )
        if self.head_dim not in VLLM_CPU_HEAD_DIMS:
            raise ValueError(f"head_dim {self.head_dim} is not one vLLM's CPU attention supports")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def llama_config(self, vocab_size: int | None = None, **token_ids: Any) -> Any:
        """A transformers LlamaConfig; `vocab_size` is the tokenizer's (rounded up), `token_ids` its
        bos/eos/pad ids."""
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=vocab_size or self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            head_dim=self.head_dim,
            hidden_act="silu",
            max_position_embeddings=self.max_position_embeddings,
            rms_norm_eps=1e-5,
            tie_word_embeddings=self.tie_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
            attention_bias=False,
            mlp_bias=False,
            **token_ids,
        )

    def num_params(self, vocab_size: int | None = None) -> int:
        """Parameter count, as `sum(p.numel() for p in model.parameters())` gives it."""
        v, d, i = vocab_size or self.vocab_size, self.hidden_size, self.intermediate_size
        kv = self.num_kv_heads * self.head_dim
        per_layer = d * d * 2 + d * kv * 2 + 3 * d * i + 2 * d  # q, o; k, v; gate, up, down; 2 norms
        embed = v * d * (1 if self.tie_embeddings else 2)
        return self.num_layers * per_layer + embed + d


@dataclass(frozen=True)
class TrainDefaults:
    """Pretraining defaults of a preset; each is overridden by the flag of the same name."""

    seq_len: int
    batch_size: int
    lr: float
    warmup_steps: int
    max_steps: int
    eval_every: int
    save_every: int
    dtype: str  # float32 on CPU; bfloat16 autocast on a GPU


@dataclass(frozen=True)
class Preset:
    name: str
    model: ModelPreset
    train: TrainDefaults

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": asdict(self.model), "train": asdict(self.train)}


PRESETS: dict[str, Preset] = {
    "nano": Preset(
        "nano",
        ModelPreset(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=128,
                    vocab_size=512, max_position_embeddings=1024, tie_embeddings=True),
        TrainDefaults(seq_len=64, batch_size=8, lr=3e-3, warmup_steps=5, max_steps=40, eval_every=20,
                      save_every=20, dtype="float32"),
    ),
    "tiny": Preset(
        "tiny",
        ModelPreset(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=4, intermediate_size=352,
                    vocab_size=2048, max_position_embeddings=1024, tie_embeddings=True),
        TrainDefaults(seq_len=512, batch_size=8, lr=3e-3, warmup_steps=50, max_steps=1800, eval_every=250,
                      save_every=250, dtype="float32"),
    ),
    "small": Preset(
        "small",
        ModelPreset(hidden_size=768, num_layers=12, num_heads=12, num_kv_heads=4, intermediate_size=2048,
                    vocab_size=16384, max_position_embeddings=2048, tie_embeddings=True),
        TrainDefaults(seq_len=1024, batch_size=32, lr=1e-3, warmup_steps=500, max_steps=20000,
                      eval_every=500, save_every=1000, dtype="bfloat16"),
    ),
}  # fmt: skip
PRESET_NAMES = tuple(PRESETS)


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"preset {name!r} is not one of {', '.join(PRESET_NAMES)}")
    return PRESETS[name]
