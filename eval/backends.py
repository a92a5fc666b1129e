"""Where the eval harness sends its questions: the gateway's strategy code in this process, or a running
gateway over HTTP. Both answer with the JSON of `service.api_schemas.Answer` (a dict), so scoring does not
care which one ran.

In-process builds the engine, retriever and strategies exactly as the gateway's lifespan does, from the
same `KC_*` settings. `naive_rag` (eval.systems) retrieves from the index named by the local settings and
generates through the engine (in-process) or `/v1/chat/completions` (HTTP).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from core.engine import SamplingParams, complete
from core.prompts import Message
from core.protocols import Retriever
from core.registry import find_checkpoint
from eval.systems import NaiveRag, PlacedLongContext
from service.errors import Overloaded
from service.security import resolve_max_tokens
from service.settings import ServiceSettings
from service.strategies import Strategies, Strategy
from service.strategies.cpt import NO_CPT
from service.strategies.long_context import LongContext

log = logging.getLogger(__name__)

EMPTY_INDEX = "the index is empty: ingest documents first (python -m indexer ingest DIR)"
INDEXED = ("rag", "long_context", "naive_rag")
RETRIES = 5  # of a refused (overloaded) request, after Retry-After


def _warm_up(retriever: Retriever) -> None:
    """Load the embedder and the index before the first question, as the gateway does at start-up, so
    that the first answer's latency is not the loading time."""
    if retriever.version > 0:
        retriever.search("warm-up", 1, "dense")


class BackendError(ValueError):
    """The backend cannot run at all (gateway unreachable, no model): a one-line message for the CLI."""


def _naive_answer(
    fields: dict[str, Any], model: str, checkpoint_id: str, retrieve_ms: float, generate_ms: float,
    usage: tuple[int, int], index_version: int,
) -> dict[str, Any]:  # fmt: skip
    return {
        **fields,
        "strategy": "naive_rag",
        "model": model,
        "checkpoint_id": checkpoint_id,
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
        "latency": {
            "retrieve_ms": round(retrieve_ms, 3),
            "generate_ms": round(generate_ms, 3),
            "total_ms": round(retrieve_ms + generate_ms, 3),
        },
        "index_version": index_version,
        "coverage": None,
    }


class Backend:
    """What a run needs: start/stop, facts for the summary, which strategies can run, and answers."""

    mode = "?"
    naive: NaiveRag | None = None

    def __init__(self, settings: ServiceSettings, max_tokens: int | None) -> None:
        self.settings = settings
        self.max_tokens = resolve_max_tokens(settings, max_tokens)
        self.index_version = 0
        self.info: dict[str, Any] = {}

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...

    def unavailable(self, strategy: str) -> str | None:
        """Why the strategy cannot run here, or None."""
        if strategy in INDEXED and self.index_version == 0:
            return EMPTY_INDEX
        return None

    async def ask(self, strategy: str, question: str) -> dict[str, Any]:
        if strategy == "naive_rag":
            return await self._naive(question)
        return await self._ask(strategy, question)

    async def _ask(self, strategy: str, question: str) -> dict[str, Any]:
        raise NotImplementedError

    async def _chat(self, messages: list[Message]) -> tuple[str, int, int]:
        """(text, prompt tokens, completion tokens) of the chat model, greedy."""
        raise NotImplementedError

    async def _naive(self, question: str) -> dict[str, Any]:
        assert self.naive is not None
        prompt = await asyncio.to_thread(self.naive.prepare, question)
        t0 = time.perf_counter()
        text, prompt_tokens, completion_tokens = await self._chat(prompt.messages)
        generate_ms = (time.perf_counter() - t0) * 1000
        return _naive_answer(
            NaiveRag.finish(text, prompt.sources), self.info.get("model_name", "?"),
            self.info.get("checkpoint_id", "?"), prompt.retrieve_ms, generate_ms,
            (prompt_tokens, completion_tokens), prompt.index_version,
        )  # fmt: skip

    async def ask_placed(self, probe_args: tuple[int, float], question: str) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def supports_placement(self) -> bool:
        return False


class InProcess(Backend):
    """The gateway's engine, retriever and strategies, built in this process from `settings`."""

    mode = "in-process"

    def __init__(self, settings: ServiceSettings, max_tokens: int | None) -> None:
        super().__init__(settings, max_tokens)
        self.gold: dict[str, set[str]] = {}
        self._placed: dict[tuple[int, float], LongContext] = {}

    async def start(self) -> None:
        from indexer.retriever import IndexRetriever
        from service.app import strategy_context
        from service.engines import build_engine
        from service.served_models import resolve_models

        settings = self.settings
        settings.ensure_home()
        specs = resolve_models(settings)  # SettingsError (a ValueError) names the setting to fix
        self.engine = build_engine(settings, specs)
        await self.engine.start()
        retriever: Retriever = IndexRetriever(settings)
        self.ctx = strategy_context(settings, self.engine, retriever)
        self.strategies = Strategies(self.ctx)
        self.index_version = await asyncio.to_thread(lambda: retriever.version)
        await asyncio.to_thread(_warm_up, retriever)
        self.naive = NaiveRag(retriever)
        cards = {c.name: c for c in self.engine.models()}
        chat = cards[self.ctx.chat_model]
        cpt = cards.get(self.ctx.cpt_model or "")
        self.info = {
            "mode": self.mode,
            "engine": self.engine.kind,
            "model_name": chat.name,
            "model_path": chat.path,
            "checkpoint_id": chat.checkpoint_id,
            "context_window": chat.context_window,
            "cpt_model_path": cpt.path if cpt else None,
            "cpt_checkpoint_id": cpt.checkpoint_id if cpt else None,
        }

    async def aclose(self) -> None:
        if hasattr(self, "engine"):
            await self.engine.aclose()

    def unavailable(self, strategy: str) -> str | None:
        if strategy == "cpt" and self.ctx.cpt_model is None:
            return NO_CPT
        return super().unavailable(strategy)

    async def _run(self, strategy: str | Strategy, question: str) -> dict[str, Any]:
        for attempt in range(RETRIES + 1):
            try:
                stream = await self.strategies.start(strategy, question, max_tokens=self.max_tokens)
                break
            except Overloaded:  # more in flight than KC_QUEUE_SIZE: wait as an HTTP client would
                if attempt == RETRIES:
                    raise
                await asyncio.sleep(self.settings.retry_after_s)
        answer = await stream.result()
        return answer.model_dump(mode="json")

    async def _ask(self, strategy: str, question: str) -> dict[str, Any]:
        return await self._run(strategy, question)

    async def _chat(self, messages: list[Message]) -> tuple[str, int, int]:
        done = await complete(
            self.engine, self.ctx.chat_model, messages, SamplingParams(max_tokens=self.max_tokens)
        )
        return done.text, done.prompt_tokens, done.completion_tokens

    @property
    def supports_placement(self) -> bool:
        return True

    async def ask_placed(self, probe_args: tuple[int, float], question: str) -> dict[str, Any]:
        if probe_args not in self._placed:
            self._placed[probe_args] = PlacedLongContext(self.ctx, *probe_args, gold=self.gold)
        return await self._run(self._placed[probe_args], question)


class Http(Backend):
    """A running gateway: `/ask` for the strategies, `/v1/chat/completions` for naive_rag's generation."""

    mode = "http"

    def __init__(self, url: str, settings: ServiceSettings, max_tokens: int | None, timeout_s: float = 600):
        super().__init__(settings, max_tokens)
        self.url = url.rstrip("/")
        headers = {}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self.client = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout_s)
        self.cards: dict[str, dict[str, Any]] = {}

    async def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """The JSON of a 200 answer; 429/503 are retried after Retry-After; other errors raise with the
        gateway's message."""
        for attempt in range(RETRIES + 1):
            try:
                r = await self.client.request(method, path, **kwargs)
            except httpx.TransportError as e:
                raise BackendError(f"gateway {self.url} unreachable: {type(e).__name__}: {e}") from None
            if r.status_code in (429, 503) and attempt < RETRIES:
                await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                continue
            if r.status_code != 200:
                try:
                    message = r.json()["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    message = r.text[:300]
                raise RuntimeError(f"{method} {path}: HTTP {r.status_code}: {message}")
            data: dict[str, Any] = r.json()
            return data
        raise AssertionError("unreachable")

    async def start(self) -> None:
        try:
            models = await self._call("GET", "/v1/models")
        except RuntimeError as e:
            raise BackendError(f"gateway {self.url}: {e}") from None
        self.cards = {m["id"]: m for m in models["data"]}
        chat = next((m for m in models["data"] if (m.get("keepcurrent") or {}).get("role") == "chat"), None)
        if chat is None:
            raise BackendError(f"gateway {self.url} serves no chat model ({', '.join(self.cards)})")
        cpt = next((m for m in models["data"] if (m.get("keepcurrent") or {}).get("role") == "cpt"), None)
        try:
            self.index_version = int((await self._call("GET", "/readyz"))["index_version"])
        except (RuntimeError, KeyError, ValueError):
            self.index_version = -1  # unknown: let the strategies say it themselves
        self.info = {
            "mode": self.mode,
            "gateway": self.url,
            "model_name": chat["id"],
            "model_path": None,
            "checkpoint_id": chat["keepcurrent"]["checkpoint_id"],
            "context_window": chat.get("max_model_len"),
            "cpt_model_path": self._registered_path(cpt["keepcurrent"]["checkpoint_id"]) if cpt else None,
            "cpt_checkpoint_id": cpt["keepcurrent"]["checkpoint_id"] if cpt else None,
        }
        self._has_cpt = cpt is not None
        self.naive = await asyncio.to_thread(self._local_naive)

    def _registered_path(self, checkpoint_id: str) -> str | None:
        """The directory of a `phase/tag` checkpoint in the local registry (shared with the gateway, as the
        index is), for what its lineage says (CPT training time); None when it is not registered here."""
        phase, _, tag = checkpoint_id.rpartition("/")
        try:
            entry = find_checkpoint(self.settings.resolved_database_url, tag, phase or None)
        except Exception:  # the registry is optional: the cost table then says "not recorded"
            return None
        return entry.path if entry else None

    def _local_naive(self) -> NaiveRag | None:
        from indexer.retriever import IndexRetriever

        try:
            retriever = IndexRetriever(self.settings)
            if retriever.version == 0:
                return None
            _warm_up(retriever)
            return NaiveRag(retriever)
        except Exception as e:  # a local index is optional over HTTP; naive_rag is skipped without one
            log.warning("no local index for naive_rag: %s: %s", type(e).__name__, e)
            return None

    async def aclose(self) -> None:
        await self.client.aclose()

    def unavailable(self, strategy: str) -> str | None:
        if strategy == "cpt" and not self._has_cpt:
            return f"the gateway at {self.url} serves no CPT model. {NO_CPT}"
        if strategy == "naive_rag" and self.naive is None:
            return (
                f"naive_rag retrieves from the local index (KC_HOME={self.settings.resolved_home}), which "
                "is empty or unreadable: run the eval with the gateway's KC_HOME"
            )
        return super().unavailable(strategy)

    async def _ask(self, strategy: str, question: str) -> dict[str, Any]:
        body = {"question": question, "strategy": strategy, "max_tokens": self.max_tokens}
        return await self._call("POST", "/ask", json=body)

    async def _chat(self, messages: list[Message]) -> tuple[str, int, int]:
        body = {
            "model": self.info["model_name"],
            "messages": messages,
            "max_tokens": self.max_tokens,
            "temperature": 0,
        }
        r = await self._call("POST", "/v1/chat/completions", json=body)
        usage = r.get("usage") or {}
        return (
            r["choices"][0]["message"]["content"],
            usage.get("prompt_tokens", 0),
            usage.get("completion_tokens", 0),
        )
