"""The gateway's settings: `core.settings.Settings` plus the serving knobs, all read from `KC_*` variables.

KC_MODEL=var/checkpoints/sft/tiny-1a2b KC_API_KEY=... python -m service
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from core.settings import Settings
from service.api_schemas import ROUTE_ORDER, RouteStrategy

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
    prefix_cache_mb: int = Field(
        1024,
        ge=0,
        description="embedded: memory per model for the keys and values of recent prompts, so that a prompt "
        "starting like one of them (long_context's documents) prefills only its new tokens (0: off).",
    )
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
    rag_supersede: bool = Field(
        True,
        description="rag: read 2k passages, drop the older ones about the question's subject that a newer "
        "one about it contradicts (rag.supersede), keep the best k.",
    )
    rag_quote: bool = Field(
        False,
        description="rag: quote mode, decoding constrained so that the answer is one verbatim span of the "
        "passages or the abstention sentence (embedded engine only).",
    )
    rag_min_support: float = Field(
        0.5,
        ge=0,
        le=1,
        description="rag: abstain when less than this share of the answer's words occur in the passages "
        "it cites.",
    )

    # auto: the router's policy (service/strategies/auto.py); checked when the settings are read, so that a
    # bad value stops `python -m service` at start-up with the variable named.
    auto_routes: Annotated[tuple[RouteStrategy, ...], NoDecode] = Field(
        ("rag", "long_context"),
        description="auto: the routes it may take, comma-separated, in the order it tries them (closed_book, "
        "cpt, rag, long_context); rag is required: its retrieval is every other route's signal.",
    )
    auto_cutoff: dt.date | None = Field(
        None,
        description="auto: the chat model's knowledge cutoff (YYYY-MM-DD); closed_book is tried only for a "
        "question that names no later date and retrieves only passages dated before it. Required with "
        "closed_book in KC_AUTO_ROUTES.",
    )
    auto_fallback_on_gate: bool = Field(
        False,
        description="auto: when rag's relevance gate finds no relevant passage, fall back to long context "
        "as Self-Route does (true), or abstain at once without generating (false: measured better, see "
        "service/strategies/auto.py).",
    )
    auto_lc_k: int = Field(
        8,
        ge=1,
        le=64,
        description="auto: passages retrieved for the long-context fallback; their documents, best first, "
        "make its prompt (at least KC_RAG_K).",
    )
    auto_lc_margin_chars: int = Field(
        1500,
        ge=0,
        description="auto: characters of a document kept on each side of a retrieved passage in the "
        "fallback; a document no longer than its passages and margins goes whole.",
    )
    auto_lc_max_prompt_tokens: int | None = Field(
        None,
        ge=16,
        description="auto: the fallback's prompt budget in tokens (its cost ceiling); default: the "
        "long_context strategy's (the window, KC_MAX_PROMPT_TOKENS).",
    )

    @field_validator("auto_routes", mode="before")
    @classmethod
    def _split_routes(cls, v: Any) -> Any:
        names = [x.strip() for x in v.split(",") if x.strip()] if isinstance(v, str) else v
        if isinstance(names, list | tuple):
            unknown = [x for x in names if x not in ROUTE_ORDER]
            if unknown:
                raise ValueError(
                    f"KC_AUTO_ROUTES: unknown route {unknown[0]!r}: use {', '.join(ROUTE_ORDER)}"
                )
            return tuple(names)
        return v

    @field_validator("auto_routes")
    @classmethod
    def _routes_in_order(cls, v: tuple[RouteStrategy, ...]) -> tuple[RouteStrategy, ...]:
        given = ",".join(v)
        if "rag" not in v:
            raise ValueError(
                f"KC_AUTO_ROUTES={given!r} must include rag: its retrieval is what auto routes on"
            )
        if list(v) != sorted(set(v), key=ROUTE_ORDER.index):
            raise ValueError(
                f"KC_AUTO_ROUTES={given!r}: list each route once, in the order auto tries them "
                f"({', '.join(ROUTE_ORDER)}), cheapest first"
            )
        return v

    @model_validator(mode="after")
    def _auto_consistent(self) -> Self:
        if "closed_book" in self.auto_routes and self.auto_cutoff is None:
            raise ValueError(
                "KC_AUTO_ROUTES has closed_book but KC_AUTO_CUTOFF is unset: give the chat model's knowledge "
                "cutoff (YYYY-MM-DD), or drop closed_book"
            )
        if self.rag_quote and self.engine != "embedded":
            raise ValueError(
                "KC_RAG_QUOTE=true needs KC_ENGINE=embedded: quote mode constrains decoding "
                "token by token, which the vLLM engine does not offer through its OpenAI API"
            )
        if self.auto_lc_k < self.rag_k:
            raise ValueError(
                f"KC_AUTO_LC_K={self.auto_lc_k} must be at least KC_RAG_K={self.rag_k}: the fallback reads "
                "the documents of at least rag's passages"
            )
        return self

    @field_validator("vllm_urls")
    @classmethod
    def _urls_are_http(cls, v: dict[str, str]) -> dict[str, str]:
        for name, url in v.items():
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"KC_VLLM_URLS[{name!r}]={url!r} must start with http:// or https://")
        return {name: url.rstrip("/") for name, url in v.items()}
