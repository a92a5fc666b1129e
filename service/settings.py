"""The gateway's settings: `core.settings.Settings` plus the serving knobs, all read from `KC_*` variables.

KC_MODEL=var/checkpoints/sft/tiny-1a2b KC_API_KEY=... python -m service
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from core.settings import Settings

EngineKind = Literal["embedded", "vllm"]


class ServiceSettings(Settings):
    """Each field is set by `KC_<FIELD>`; `KC_VLLM_URLS` is JSON: `{"keepcurrent": "http://host:8001/v1"}`."""

    engine: EngineKind = Field(
        "embedded",
        description="embedded: transformers in this process; vllm: OpenAI-compatible vLLM servers "
        "(KC_VLLM_URLS).",
    )
    model: Path | None = Field(
        None,
        description="The chat model's checkpoint directory; default: the newest registered rl, sft or "
        "import checkpoint.",
    )
    model_name: str = Field("keepcurrent", description="The name clients pass as `model` for the chat model.")
    cpt_model: Path | None = Field(
        None, description="The CPT checkpoint directory; default: the newest registered cpt checkpoint."
    )
    cpt_model_name: str = Field("keepcurrent-cpt", description="The name clients pass for the CPT model.")
    vllm_urls: dict[str, str] = Field(
        default_factory=dict,
        description="vllm engine: served model name -> base URL (ending in /v1), one vLLM server per model.",
    )
    vllm_timeout_s: float = Field(120.0, gt=0, description="Seconds to wait for a vLLM server to answer.")
    api_key: SecretStr | None = Field(
        None, description="When set, every request but health checks needs `Authorization: Bearer <key>`."
    )
    host: str = Field("127.0.0.1", description="Address the gateway listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port the gateway listens on.")

    max_body_bytes: int = Field(1_000_000, ge=1024, description="Larger request bodies get 413.")
    max_messages: int = Field(64, ge=1, description="Most messages in one chat request.")
    max_prompt_tokens: int = Field(
        8192, ge=16, description="Most prompt tokens (the model's window applies too)."
    )
    max_tokens_limit: int = Field(1024, ge=1, description="Largest `max_tokens` a request may ask for.")
    default_max_tokens: int = Field(64, ge=1, description="`max_tokens` when a request gives none.")
    queue_size: int = Field(
        64, ge=0, description="Requests that may wait for a batch slot; more get 429 with Retry-After."
    )
    max_batch_size: int = Field(8, ge=1, description="embedded: sequences decoded together in one step.")
    retry_after_s: int = Field(1, ge=1, description="Retry-After seconds sent with a 429.")

    rag_k: int = Field(4, ge=1, le=32, description="rag: passages put in the prompt.")
    rag_min_score: float = Field(
        0.35,
        description="rag: abstain when no retrieved passage reaches this relevance (the larger of the "
        "dense cosine and the share of the question's words in the passage).",
    )
    rag_gates: bool = Field(
        True,
        description="rag: the relevance gate and the support check; off, rag abstains only when the model "
        "says so (for measuring what the gates cost in answerable accuracy).",
    )
    rag_min_support: float = Field(
        0.5,
        ge=0,
        le=1,
        description="rag: abstain when less than this share of the answer's words occur in the passages "
        "it cites.",
    )

    @field_validator("vllm_urls")
    @classmethod
    def _urls_are_http(cls, v: dict[str, str]) -> dict[str, str]:
        for name, url in v.items():
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"KC_VLLM_URLS[{name!r}]={url!r} must start with http:// or https://")
        return {name: url.rstrip("/") for name, url in v.items()}
