"""The Engine protocol: what the gateway needs from whatever runs the model (the embedded engine, a vLLM
client), as `core.protocols.Retriever` is what it needs from the index.

A request goes in two steps so that every refusal happens before an HTTP response starts:
`await engine.submit(...)` validates and queues (raising `BadRequest`, `NotFound`, `Overloaded`,
`EngineUnavailable`), and the `Generation` it returns is then iterated for `Chunk`s; the last chunk carries
the finish reason and the token counts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from core.prompts import Message

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class Quote:
    """Quote mode: the answer must be a verbatim span of one of `spans` (from a word's start to a word's
    end), or one of `whole` word for word. An engine that cannot enforce it refuses the request."""

    spans: tuple[str, ...]
    whole: tuple[str, ...] = ()


@dataclass(frozen=True)
class SamplingParams:
    """Per-request decoding settings. temperature 0 means greedy."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False  # generate exactly max_tokens (benchmarks; vLLM has the same parameter)
    quote: Quote | None = None


@dataclass
class Chunk:
    """A piece of streamed text; the last one of a generation has `finish_reason` and the token counts."""

    text: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class ModelCard:
    """A served model: the name clients use and where it comes from."""

    name: str
    role: Literal["chat", "cpt"]
    checkpoint_id: str
    context_window: int
    path: str | None = None
    phase: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Completion:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


@runtime_checkable
class Generation(Protocol):
    """One queued request; iterate it for chunks. `aclose()` cancels it (e.g. the client went away)."""

    def __aiter__(self) -> AsyncIterator[Chunk]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Engine(Protocol):
    kind: str

    async def start(self) -> None:
        """Load models or open connections; called once from the app's lifespan."""
        ...

    async def aclose(self) -> None: ...

    def models(self) -> list[ModelCard]: ...

    async def ready(self) -> dict[str, Any]:
        """Details when every model can answer; raises `EngineUnavailable` otherwise."""
        ...

    def queue_depth(self) -> int:
        """Requests waiting for a batch slot (not yet generating)."""
        ...

    def running(self) -> int:
        """Requests generating now."""
        ...

    def check_room(self, model: str) -> None:
        """Raise the overload error `submit` would raise now for lack of room (429 with Retry-After), so
        that a caller skips the work a refusal would waste (retrieval). A check, not a reservation."""
        ...

    async def tokenize(
        self,
        model: str,
        *,
        text: str | None = None,
        messages: list[Message] | None = None,
        add_generation_prompt: bool = True,
    ) -> list[int]:
        """Token ids of raw text, or of messages rendered with the model's chat template."""
        ...

    async def submit(self, model: str, messages: list[Message], params: SamplingParams) -> Generation: ...


async def complete(engine: Engine, model: str, messages: list[Message], params: SamplingParams) -> Completion:
    """Submit and collect the whole answer."""
    generation = await engine.submit(model, messages, params)
    parts: list[str] = []
    last = Chunk("")
    try:
        async for chunk in generation:
            parts.append(chunk.text)
            last = chunk
    finally:
        await generation.aclose()
    return Completion(
        "".join(parts), last.finish_reason or "stop", last.prompt_tokens, last.completion_tokens
    )
