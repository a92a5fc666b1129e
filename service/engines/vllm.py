"""The vllm engine: an OpenAI-compatible HTTP client to vLLM servers, one base URL per served model name.

    KC_ENGINE=vllm KC_VLLM_URLS='{"keepcurrent": "http://127.0.0.1:8001/v1"}' python -m service

Generation streams through (`/v1/chat/completions` with `stream: true`, usage in the last chunk);
`/tokenize` (at the server's root, vLLM's shape) counts tokens and tells the context window. A server
that is down answers 503 naming the model and URL; one that does not answer in `KC_VLLM_TIMEOUT_S`, 504.
vLLM schedules and batches itself: the gateway only bounds how many requests it has in flight to it
(`KC_QUEUE_SIZE` + `KC_MAX_BATCH_SIZE`; more get 429).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from core.engine import Chunk, FinishReason, ModelCard, SamplingParams
from core.prompts import Message
from service.engines import find_card
from service.errors import APIError, BadRequest, EngineTimeout, EngineUnavailable, NotFound, Overloaded
from service.served_models import ModelSpec, lineage_of

log = logging.getLogger(__name__)


def _root(url: str) -> str:
    """The server's root from its OpenAI base URL (`http://h:p/v1` -> `http://h:p`), where /tokenize is."""
    return url[: -len("/v1")] if url.endswith("/v1") else url


class VLLMGeneration:
    def __init__(self, response: httpx.Response, engine: VLLMEngine, name: str, url: str) -> None:
        self._response = response
        self._engine = engine
        self._name = name
        self._url = url
        self._closed = False

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Chunk]:
        finish: FinishReason = "stop"
        prompt_tokens = completion_tokens = 0
        started = False
        try:
            async for line in self._response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if "error" in event:
                    error = event["error"]
                    raise EngineUnavailable(
                        f"vLLM server {self._name!r} failed midway: {error.get('message', error)}"
                    )
                for choice in event.get("choices") or []:
                    text = (choice.get("delta") or {}).get("content") or ""
                    if not started:  # leading whitespace is not part of the answer, as in the embedded engine
                        text = text.lstrip()
                    if text:
                        started = True
                        yield Chunk(text)
                    if choice.get("finish_reason"):
                        finish = "length" if choice["finish_reason"] == "length" else "stop"
                usage = event.get("usage")
                if usage:
                    prompt_tokens = int(usage.get("prompt_tokens", 0))
                    completion_tokens = int(usage.get("completion_tokens", 0))
        except httpx.TimeoutException as e:
            raise EngineTimeout(
                f"vLLM server {self._name!r} at {self._url} stopped answering mid-stream "
                f"(KC_VLLM_TIMEOUT_S={self._engine.timeout_s})"
            ) from e
        except (httpx.TransportError, ValueError) as e:
            raise EngineUnavailable(
                f"vLLM server {self._name!r} at {self._url} broke the stream: {type(e).__name__}"
            ) from e
        finally:
            await self.aclose()
        yield Chunk("", finish, prompt_tokens, completion_tokens)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._engine._inflight -= 1
            await self._response.aclose()


class VLLMEngine:
    """Implements `core.engine.Engine` over HTTP."""

    kind = "vllm"

    def __init__(
        self,
        specs: list[ModelSpec],
        *,
        timeout_s: float = 120.0,
        max_prompt_tokens: int | None = None,
        queue_size: int = 64,
        max_batch: int = 8,
        retry_after_s: int = 1,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        for spec in specs:
            if spec.url is None:
                raise ValueError(f"model {spec.name!r} has no server URL (KC_VLLM_URLS)")
        self.specs = {s.name: s for s in specs}
        self.timeout_s = timeout_s
        self.max_prompt_tokens = max_prompt_tokens
        self.max_inflight = queue_size + max_batch
        self.retry_after_s = retry_after_s
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._windows: dict[str, int] = {}
        self._checkpoints: dict[str, str] = {}
        self._inflight = 0

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise EngineUnavailable("the vllm engine is not started")
        return self._client

    async def start(self) -> None:
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout_s, connect=min(5.0, self.timeout_s)), transport=self._transport
        )
        for name in self.specs:
            try:
                await self._describe(name)
            except APIError as e:  # a server may come up after the gateway; /readyz says so meanwhile
                log.warning("%s", e.message)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def load(self, spec: ModelSpec) -> ModelCard:
        """Route `spec.name` to the vLLM server at `spec.url` without a restart: the server must already serve
        that name (it was started for the new checkpoint); until it answers, the previous route stays."""
        if spec.url is None:
            raise ValueError(f"model {spec.name!r} has no server URL")
        previous = self.specs.get(spec.name)
        self.specs[spec.name] = spec
        try:
            await self._describe(spec.name)
        except APIError:  # _describe failed before it touched the cached window and checkpoint id
            if previous is None:
                del self.specs[spec.name]
            else:
                self.specs[spec.name] = previous
            raise
        log.info("vllm engine: %s = %s (routed without a restart)", spec.name, spec.url)
        return find_card(self.models(), spec.name)

    def models(self) -> list[ModelCard]:
        return [
            ModelCard(
                name=name,
                role=spec.role,
                checkpoint_id=self._checkpoints.get(name, name),
                context_window=self._windows.get(name, 0),
                phase=spec.phase,
                extra={"url": spec.url},
            )
            for name, spec in self.specs.items()
        ]

    def _url(self, model: str) -> str:
        find_card(self.models(), model)
        url = self.specs[model].url
        assert url is not None
        return url

    @contextmanager
    def _reaching(self, model: str, url: str) -> Iterator[None]:
        """Turn a failure to reach the server at `url` into the gateway's 504 (timeout) or 503 (down)."""
        try:
            yield
        except httpx.TimeoutException as e:
            raise EngineTimeout(
                f"vLLM server {model!r} at {url} did not answer in {self.timeout_s} s (KC_VLLM_TIMEOUT_S)"
            ) from e
        except httpx.TransportError as e:
            raise EngineUnavailable(
                f"vLLM server {model!r} at {url} is not reachable ({type(e).__name__}): is it running? "
                "(see KC_VLLM_URLS)"
            ) from e

    async def _request(self, model: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        with self._reaching(model, url):
            response = await self.client.request(method, url, **kwargs)
        if response.status_code >= 400:
            raise self._error(model, response.status_code, response.text)
        return response

    def _error(self, model: str, status: int, body: str) -> APIError:
        try:
            detail = json.loads(body)
            message = str(detail.get("error", {}).get("message") or detail.get("message") or body)
        except (ValueError, AttributeError):
            message = body[:500]
        if status == 400 or status == 422:
            return BadRequest(f"vLLM refused the request: {message}")
        if status == 404:
            return NotFound(f"vLLM server {model!r}: {message}", code="model_not_found")
        if status == 429:
            return Overloaded(f"vLLM server {model!r} is overloaded: {message}", self.retry_after_s)
        return EngineUnavailable(f"vLLM server {model!r} answered {status}: {message}")

    async def _describe(self, model: str) -> dict[str, Any]:
        """GET /v1/models: the context window (`max_model_len`) and where the weights came from (`root`)."""
        url = self._url(model)
        data = (await self._request(model, "GET", f"{url}/models")).json()
        entries = {m.get("id"): m for m in data.get("data", [])}
        if model not in entries:
            raise NotFound(
                f"vLLM server at {url} does not serve {model!r} (it serves {', '.join(map(str, entries))}): "
                "start it with --served-model-name, or fix KC_VLLM_URLS",
                code="model_not_found",
            )
        entry = entries[model]
        if entry.get("max_model_len"):
            self._windows[model] = int(entry["max_model_len"])
        checkpoint = (entry.get("keepcurrent") or {}).get("checkpoint_id")
        root = entry.get("root")
        if not checkpoint and root and Path(root).is_dir():
            checkpoint = lineage_of(Path(root))[0]
        self._checkpoints[model] = str(checkpoint or root or model)
        return dict(entry)

    async def ready(self) -> dict[str, Any]:
        for name in self.specs:
            await self._describe(name)
        return {"engine": self.kind, "models": list(self.specs), "inflight": self._inflight}

    def queue_depth(self) -> int:
        return 0  # vLLM queues inside the server; the gateway forwards at once

    def running(self) -> int:
        return self._inflight

    async def tokenize(
        self,
        model: str,
        *,
        text: str | None = None,
        messages: list[Message] | None = None,
        add_generation_prompt: bool = True,
    ) -> list[int]:
        url = _root(self._url(model))
        body: dict[str, Any] = {"model": model}
        if messages is not None:
            body |= {"messages": messages, "add_generation_prompt": add_generation_prompt}
        else:
            body["prompt"] = text or ""
        data = (await self._request(model, "POST", f"{url}/tokenize", json=body)).json()
        if data.get("max_model_len"):
            self._windows[model] = int(data["max_model_len"])
        return [int(t) for t in data.get("tokens", [])]

    def check_room(self, model: str) -> None:
        if self._inflight >= self.max_inflight:
            raise Overloaded(
                f"{self._inflight} requests are in flight to vLLM, the gateway's limit "
                "(KC_QUEUE_SIZE + KC_MAX_BATCH_SIZE)",
                self.retry_after_s,
            )

    async def submit(self, model: str, messages: list[Message], params: SamplingParams) -> VLLMGeneration:
        url = self._url(model)
        if params.quote is not None:
            raise BadRequest("quote mode (KC_RAG_QUOTE) needs the embedded engine", param="strategy")
        self.check_room(model)
        self._inflight += 1  # taken before the first await, so requests arriving meanwhile count it
        try:
            response = await self._send(model, url, messages, params)
        except BaseException:
            self._inflight -= 1
            raise
        return VLLMGeneration(response, self, model, url)

    async def _send(
        self, model: str, url: str, messages: list[Message], params: SamplingParams
    ) -> httpx.Response:
        limit = self.max_prompt_tokens
        # A token is at least one byte: only a prompt with more bytes than the limit needs counting.
        if limit is not None and sum(len(m["content"].encode()) for m in messages) > limit:
            count = len(await self.tokenize(model, messages=messages))
            if count > limit:
                raise BadRequest(
                    f"the prompt has {count} tokens, more than this gateway's limit of {limit} "
                    "(KC_MAX_PROMPT_TOKENS)",
                    code="context_length_exceeded",
                    param="messages",
                )
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        if params.ignore_eos:
            body["ignore_eos"] = True
        request = self.client.build_request("POST", f"{url}/chat/completions", json=body)
        with self._reaching(model, url):
            response = await self.client.send(request, stream=True)
        if response.status_code >= 400:
            body_text = (await response.aread()).decode(errors="replace")
            await response.aclose()
            raise self._error(model, response.status_code, body_text)
        return response
