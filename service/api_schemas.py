"""Wire schemas of the gateway, in one place.

The OpenAI-compatible ones (`/v1/chat/completions`, `/v1/models`) keep OpenAI's field order; fields that
OpenAI does not have are keepcurrent extensions, marked `# extension` and grouped last (`strategy` on a
request, `keepcurrent` on a response), so that the official clients pass them through untouched.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

StrategyName = Literal["closed_book", "rag", "long_context", "cpt", "auto"]
STRATEGIES: tuple[StrategyName, ...] = ("closed_book", "rag", "long_context", "cpt", "auto")
AskStrategy = Literal["closed_book", "rag", "long_context", "cpt", "auto", "compare"]
# What `auto` may route a question to (service/strategies/auto.py), in the order it tries them.
RouteStrategy = Literal["closed_book", "cpt", "rag", "long_context"]
ROUTE_ORDER: tuple[RouteStrategy, ...] = ("closed_book", "cpt", "rag", "long_context")
FinishReason = Literal["stop", "length"]


class _Request(BaseModel):
    # Unknown fields are ignored, as OpenAI-compatible servers do; known but unsupported ones are refused.
    model_config = ConfigDict(extra="ignore")


# --- keepcurrent answers (shared by /ask and the chat extension) ---


class Citation(BaseModel):
    """A numbered passage of the prompt, traced to its document."""

    n: int = Field(description="The number the prompt gave the passage; the answer cites it as [n].")
    doc_id: str
    source: str
    title: str
    date: dt.date
    chunk_id: int | None = Field(
        None, description="The chunk (rag); null when a whole document (long_context)."
    )
    score: float | None = Field(None, description="Retrieval score (rag).")
    text: str = Field(description="The passage as the model saw it (long_context: the first 300 characters).")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Latency(BaseModel):
    """Milliseconds."""

    retrieve_ms: float
    generate_ms: float
    total_ms: float


class Coverage(BaseModel):
    """long_context: how much of the corpus fit in the window, packed newest first."""

    documents_packed: int
    documents_total: int
    fraction: float = Field(description="documents_packed / documents_total (1.0 for an empty corpus).")
    truncated_document: bool = Field(description="The last packed document was cut to fit.")
    oldest_packed: dt.date | None
    prompt_budget_tokens: int


class RouteStep(BaseModel):
    """One route `auto` considered, in the order it considered them."""

    strategy: RouteStrategy
    outcome: Literal["answered", "insufficient", "skipped"] = Field(
        description="answered: its answer is the one returned; insufficient: it ran and its passages or "
        "its answer did not hold up, so auto went on; skipped: a signal ruled it out before it ran."
    )
    reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Route(BaseModel):
    """`auto` only: the route the answer took and why (streamed before the first token)."""

    chosen: RouteStrategy | Literal["abstain"] = Field(
        description="The strategy whose text follows, or abstain when none could answer."
    )
    tried: list[RouteStep] = Field(
        description="Every route considered so far; a fallback still generating is added by the answer."
    )
    reason: str = Field(description="Why the chosen route, in one sentence.")


class Answer(BaseModel):
    text: str
    strategy: StrategyName
    model: str
    checkpoint_id: str
    abstained: bool = Field(
        description="The answer is ABSTAIN_ANSWER (the model said so, or the gateway did)."
    )
    abstain_reason: str | None = None
    citations: list[Citation] = Field(description="The passages the answer cites.")
    sources: list[Citation] = Field(description="Every passage that was in the prompt.")
    usage: Usage
    latency: Latency
    index_version: int | None = Field(description="The index version read (rag, long_context).")
    coverage: Coverage | None = None
    finish_reason: FinishReason
    model_text: str | None = Field(
        None, description="What the model wrote, when the gateway replaced it (support check failed)."
    )
    route: Route | None = Field(None, description="auto: the route taken and why; null otherwise.")


class AskRequest(_Request):
    question: Annotated[str, Field(min_length=1, max_length=20_000)]
    strategy: AskStrategy = "rag"
    stream: bool = False
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    k: Annotated[int, Field(ge=1, le=32)] | None = Field(None, description="rag: passages in the prompt.")

    @field_validator("question")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the question is blank")
        return v


class StrategyError(BaseModel):
    error: dict[str, Any]


class CompareResponse(BaseModel):
    question: str
    answers: dict[StrategyName, Answer | StrategyError]


# --- OpenAI chat completions ---


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str


class ChatCompletionRequest(_Request):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    model: Annotated[str, Field(min_length=1, max_length=256)]
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: bool | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    n: int | None = None
    presence_penalty: float | None = None
    response_format: ResponseFormat | None = None
    seed: int | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    tool_choice: Any = None
    tools: list[Any] | None = None
    top_logprobs: int | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    user: str | None = None
    # extension: answer the last user turn through a keepcurrent strategy (None: plain chat)
    strategy: StrategyName | None = None
    # extension (vLLM's too): keep generating through end-of-turn tokens, up to max_tokens
    ignore_eos: bool = False

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatCompletionMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int
    message: ChatCompletionMessage
    logprobs: None = None
    finish_reason: FinishReason


class AnswerMeta(BaseModel):
    """extension: what a strategy adds to a chat completion."""

    strategy: StrategyName | None
    checkpoint_id: str
    abstained: bool = False
    citations: list[Citation] = Field(default_factory=list)
    sources: list[Citation] = Field(default_factory=list)
    latency: Latency | None = None
    index_version: int | None = None
    coverage: Coverage | None = None
    route: Route | None = None


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


class ChatCompletion(BaseModel):
    id: str = Field(default_factory=completion_id)
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: Usage
    system_fingerprint: str | None = None
    keepcurrent: AnswerMeta | None = None  # extension


class ChoiceDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: ChoiceDelta
    logprobs: None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    keepcurrent: AnswerMeta | None = None  # extension


# --- models ---


class ModelMeta(BaseModel):
    """extension: where a served model comes from."""

    role: Literal["chat", "cpt"]
    checkpoint_id: str
    context_window: int
    phase: str | None = None


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "keepcurrent"
    max_model_len: int | None = None  # extension (vLLM's name for it)
    keepcurrent: ModelMeta | None = None  # extension


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


# --- tokenize (vLLM's request and response shape) ---


class TokenizeRequest(_Request):
    model: str | None = None
    prompt: Annotated[str, Field(max_length=1_000_000)] | None = None
    messages: list[ChatMessage] | None = None
    add_generation_prompt: bool = True


class TokenizeResponse(BaseModel):
    model: str
    count: int
    max_model_len: int
    tokens: list[int]


# --- feedback ---


class RatingFeedback(_Request):
    kind: Literal["rating"]
    question: Annotated[str, Field(min_length=1, max_length=20_000)]
    answer: Annotated[str, Field(max_length=20_000)]
    rating: Annotated[int, Field(ge=1, le=5, description="1 (bad) to 5 (good).")]
    strategy: StrategyName | None = None
    model: Annotated[str, Field(max_length=256)] | None = None
    checkpoint_id: Annotated[str, Field(max_length=256)] | None = None
    comment: Annotated[str, Field(max_length=5_000)] | None = None


class PreferenceFeedback(_Request):
    kind: Literal["preference"]
    question: Annotated[str, Field(min_length=1, max_length=20_000)]
    chosen: Annotated[str, Field(max_length=20_000)]
    rejected: Annotated[str, Field(max_length=20_000)]
    strategy: StrategyName | None = None
    model: Annotated[str, Field(max_length=256)] | None = None
    checkpoint_id: Annotated[str, Field(max_length=256)] | None = None
    comment: Annotated[str, Field(max_length=5_000)] | None = None


Feedback = Annotated[RatingFeedback | PreferenceFeedback, Field(discriminator="kind")]


class FeedbackResponse(BaseModel):
    id: int
    kind: Literal["rating", "preference"]
    created_at: dt.datetime


# --- health ---


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    engine: dict[str, Any]
    index_version: int
    queue_depth: int


class ReloadRequest(_Request):
    """`POST /admin/reload` (extension), optional body. With the vllm engine: the server now serving the CPT
    model (its `--served-model-name` must be KC_CPT_MODEL_NAME); without it, KC_VLLM_URLS's entry is asked
    again (a server restarted on a new checkpoint). The embedded engine resolves the checkpoint itself."""

    url: str | None = Field(
        None, pattern=r"^https?://", description="vllm: base URL of the server, ending in /v1"
    )


class ReloadResult(BaseModel):
    """`POST /admin/reload` (extension): the CPT model the gateway serves now."""

    reloaded: bool = Field(description="false when the newest checkpoint is the one already served")
    model: str
    checkpoint_id: str
    path: str
    previous_checkpoint_id: str | None = None
