"""Engines run the model: `embedded` (transformers in this process) or `vllm` (OpenAI-compatible servers)."""

from __future__ import annotations

from core.engine import Engine, ModelCard
from service.errors import NotFound
from service.served_models import ModelSpec
from service.settings import ServiceSettings


def build_engine(settings: ServiceSettings, specs: list[ModelSpec]) -> Engine:
    if settings.engine == "vllm":
        from service.engines.vllm import VLLMEngine

        return VLLMEngine(
            specs,
            timeout_s=settings.vllm_timeout_s,
            max_prompt_tokens=settings.max_prompt_tokens,
            queue_size=settings.queue_size,
            max_batch=settings.max_batch_size,
            retry_after_s=settings.retry_after_s,
        )
    from service.engines.embedded import EmbeddedEngine

    return EmbeddedEngine(
        specs,
        max_batch=settings.max_batch_size,
        queue_size=settings.queue_size,
        retry_after_s=settings.retry_after_s,
        max_prompt_tokens=settings.max_prompt_tokens,
        prefix_cache_mb=settings.prefix_cache_mb,
    )


def find_card(cards: list[ModelCard], name: str) -> ModelCard:
    for card in cards:
        if card.name == name:
            return card
    names = ", ".join(c.name for c in cards) or "none"
    raise NotFound(
        f"model {name!r} does not exist: this gateway serves {names} (GET /v1/models)",
        code="model_not_found",
        param="model",
    )
