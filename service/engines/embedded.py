"""The embedded engine: transformers in this process, with continuous batching.

One worker thread per model owns the model and one batched KV cache. Each turn of its loop it admits
waiting requests into free batch slots (prefilling them together, left-padded, and splicing their cache
rows into the running batch), then decodes one token for every running sequence in a single forward
pass. A sequence leaves the batch as soon as it hits a stop token, a stop string or its `max_tokens`,
and a waiting request takes its slot at the next turn, so a short answer never waits for a long one.

Requests beyond the batch wait in a bounded queue; when it is full `submit` raises `Overloaded` (429
with Retry-After) at once instead of letting clients hang. Tokens travel back to the event loop through
`loop.call_soon_threadsafe`, one asyncio queue per request.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.engine import Chunk, FinishReason, ModelCard, SamplingParams
from core.hardware import precision_setting
from core.prompts import Message
from service.engines import find_card
from service.engines.prefix_cache import Hit, PrefixCache
from service.engines.quote import QuoteState
from service.errors import APIError, BadRequest, EngineUnavailable, Overloaded
from service.served_models import ModelSpec

log = logging.getLogger(__name__)

_CHAT_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>")


class _Failed:
    """Sent to a request's queue when the worker could not finish it."""

    def __init__(self, error: APIError) -> None:
        self.error = error


@dataclass(eq=False)
class _Request:
    prompt: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue[Chunk | _Failed]
    cancelled: threading.Event = field(default_factory=threading.Event)
    generated: list[int] = field(default_factory=list)
    sent: int = 0  # characters of the decoded text already sent
    rng: Any = None  # torch.Generator when sampling
    quote: QuoteState | None = None  # quote mode's constraint
    submitted: float = field(default_factory=time.perf_counter)

    def send(self, item: Chunk | _Failed) -> None:
        self.loop.call_soon_threadsafe(self.out.put_nowait, item)


class EmbeddedGeneration:
    """The caller's handle on a queued request."""

    def __init__(self, request: _Request, worker: _Worker) -> None:
        self._request = request
        self._worker = worker
        self.prompt_tokens = len(request.prompt)
        self._done = False

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Chunk]:
        while not self._done:
            item = await self._request.out.get()
            if isinstance(item, _Failed):
                self._done = True
                raise item.error
            if item.finish_reason is not None:
                self._done = True
            yield item

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            self._request.cancelled.set()
            self._worker.wake()


class _Worker:
    """Owns one model: a thread running the continuous-batching loop."""

    def __init__(
        self, spec: ModelSpec, max_batch: int, queue_size: int, retry_after_s: int, prefix_cache_mb: int = 0
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        assert spec.path is not None
        self.spec = spec
        self.max_batch = max_batch
        self.queue_size = queue_size
        self.retry_after_s = retry_after_s
        self.tokenizer = AutoTokenizer.from_pretrained(str(spec.path))
        if not getattr(self.tokenizer, "chat_template", None):
            raise ValueError(f"{spec.path} has no chat template: the embedded engine serves chat models")
        self.model = AutoModelForCausalLM.from_pretrained(str(spec.path), dtype=serving_dtype())
        self.model.eval()
        config = self.model.config.get_text_config(decoder=True)
        if getattr(config, "sliding_window", None) or getattr(config, "layer_types", None) not in (
            None,
            ["full_attention"] * config.num_hidden_layers,
        ):
            raise ValueError(f"{spec.path}: the embedded engine batches full-attention models only")
        self.window = int(getattr(config, "max_position_embeddings", 2048))
        self.stop_ids = self._stop_ids()
        self.pad_id = self._pad_id()
        self.card = ModelCard(
            name=spec.name,
            role=spec.role,
            checkpoint_id=spec.checkpoint_id or spec.path.name,
            context_window=self.window,
            path=str(spec.path),
            phase=spec.phase,
            extra={
                "parameters": int(sum(p.numel() for p in self.model.parameters())),
                "stamp": checkpoint_stamp(spec.path),
            },
        )
        self._pending: collections.deque[_Request] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._rows: list[_Request] = []
        self._admitting = 0  # taken from the queue, being prefilled: not yet in _rows
        self._cache: Any = None
        self._mask: Any = None  # [rows, cache length] 1 for real tokens, 0 for left padding
        # keys and values of one token, all layers, in the weights' dtype
        per_token = 2 * config.num_hidden_layers * self._kv_width(config) * self.model.dtype.itemsize
        budget = prefix_cache_mb * 2**20 // per_token
        self.prefix = PrefixCache(budget) if budget > 0 else None
        self._thread = threading.Thread(target=self._run, name=f"engine-{spec.name}", daemon=True)
        self.steps = 0

    @staticmethod
    def _kv_width(config: Any) -> int:
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        return int(heads * head_dim)

    def _stop_ids(self) -> set[int]:
        ids: set[int] = set()
        eos = self.model.generation_config.eos_token_id
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        vocab = self.tokenizer.get_vocab()
        ids.update(vocab[t] for t in _CHAT_END_TOKENS if t in vocab)
        return ids

    def _pad_id(self) -> int:
        for candidate in (self.tokenizer.pad_token_id, self.model.generation_config.pad_token_id):
            if candidate is not None:
                return int(candidate)
        return min(self.stop_ids) if self.stop_ids else 0

    # -- the caller's side (event loop thread) --

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=10)

    def drain_and_stop(self, timeout_s: float) -> None:
        """Stop once the requests already taken have finished (a replaced model's last answers)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and (self._pending or self._rows or self._admitting):
            time.sleep(0.05)
        self.stop()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    def queue_depth(self) -> int:
        return len(self._pending)

    def encode(
        self, messages: list[Message] | None, text: str | None, add_generation_prompt: bool
    ) -> list[int]:
        if messages is not None:
            try:
                ids = self.tokenizer.apply_chat_template(
                    messages, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=False
                )
            except Exception as e:  # a template may reject a conversation (e.g. roles out of order)
                raise BadRequest(f"the chat template rejected these messages: {e}", param="messages") from e
            if hasattr(ids, "keys"):  # a BatchEncoding, in versions that ignore return_dict=False
                ids = ids["input_ids"]  # type: ignore[call-overload,index]
            return [int(i) for i in ids]  # type: ignore[arg-type]
        return [int(i) for i in self.tokenizer.encode(text or "", add_special_tokens=False)]

    def submit(self, prompt: list[int], params: SamplingParams) -> EmbeddedGeneration:
        if not self.alive:
            raise EngineUnavailable(f"the embedded engine for {self.spec.name!r} is not running (shut down)")
        if not prompt:
            raise BadRequest("the prompt is empty", param="messages")
        if len(prompt) + params.max_tokens > self.window:
            raise BadRequest(
                f"this model's context window is {self.window} tokens; the prompt has {len(prompt)} and "
                f"max_tokens asks for {params.max_tokens}: shorten the messages or lower max_tokens",
                code="context_length_exceeded",
                param="messages",
            )
        request = _Request(prompt, params, asyncio.get_running_loop(), asyncio.Queue())
        if params.quote is not None:
            request.quote = QuoteState.build(self.tokenizer, params.quote, self.stop_ids)
        if params.temperature > 0:
            import torch

            request.rng = torch.Generator()
            request.rng.manual_seed(params.seed if params.seed is not None else int(time.time_ns() % 2**62))
        with self._cond:
            if (refusal := self._refusal()) is not None:
                raise refusal
            self._pending.append(request)
            self._cond.notify_all()
        return EmbeddedGeneration(request, self)

    def _refusal(self) -> Overloaded | None:
        """What a new request gets when the batch and the queue are full (the caller holds `_cond`)."""
        if any(r.cancelled.is_set() for r in self._pending):
            self._pending = collections.deque(r for r in self._pending if not r.cancelled.is_set())
        active = sum(not r.cancelled.is_set() for r in self._rows) + self._admitting
        free_slots = max(0, self.max_batch - active)
        if len(self._pending) < self.queue_size + free_slots:
            return None
        return Overloaded(
            f"the engine is busy: {active} requests generating and {len(self._pending)} waiting "
            f"(KC_QUEUE_SIZE={self.queue_size}); retry after {self.retry_after_s} s",
            retry_after_s=self.retry_after_s,
        )

    def check_room(self) -> None:
        with self._cond:
            if (refusal := self._refusal()) is not None:
                raise refusal

    # -- the worker thread --

    def _run(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._stopping and not self._pending and not self._rows:
                        self._cond.wait()
                    if self._stopping:
                        break
                    admit: list[_Request] = []
                    while self._pending and len(self._rows) + len(admit) < self.max_batch:
                        request = self._pending.popleft()
                        if not request.cancelled.is_set():
                            admit.append(request)
                    self._admitting = len(admit)
                try:
                    if admit:
                        self._prefill(admit)
                        self._admitting = 0
                    self._drop_finished()
                    if self._rows:
                        self._decode()
                        self._drop_finished()
                except Exception as e:
                    log.exception("engine %s failed a batch", self.spec.name)
                    error = EngineUnavailable(f"the engine failed while generating: {type(e).__name__}: {e}")
                    for request in {*self._rows, *admit}:
                        request.send(_Failed(error))
                    self._rows, self._cache, self._mask = [], None, None
                    self._admitting = 0
        failure = EngineUnavailable("the gateway is shutting down")
        with self._cond:
            for request in [*self._rows, *self._pending]:
                request.send(_Failed(failure))
            self._pending.clear()
            self._rows = []

    def _prefill(self, admit: list[_Request]) -> None:
        """Prefill the admitted requests: those whose prompt starts like a cached one from the cached rows,
        one by one; the others together, left-padded."""
        fresh = []
        for r in admit:
            hit = self.prefix.lookup(r.prompt) if self.prefix is not None else None
            if hit is None:
                fresh.append(r)
            else:
                self._prefill_after(r, hit)
        if fresh:
            self._prefill_batch(fresh)

    def _prefill_batch(self, admit: list[_Request]) -> None:
        import torch
        from transformers import DynamicCache

        longest = max(len(r.prompt) for r in admit)
        ids = torch.full((len(admit), longest), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(admit), longest), dtype=torch.long)
        for i, r in enumerate(admit):
            ids[i, longest - len(r.prompt) :] = torch.tensor(r.prompt)
            mask[i, longest - len(r.prompt) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache: Any = DynamicCache(config=self.model.config)
        logits = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1, :]  # fmt: skip
        if self.prefix is not None:
            for i, r in enumerate(admit):
                start = longest - len(r.prompt)
                self.prefix.store(r.prompt, [(x.keys[i : i + 1, :, start:], x.values[i : i + 1, :, start:])
                                             for x in cache.layers])  # fmt: skip
        self._merge(admit, cache, mask)
        self._accept(admit, self._sample(admit, logits))

    def _prefill_after(self, r: _Request, hit: Hit) -> None:
        """Prefill one request whose first `hit.tokens` tokens' keys and values are cached."""
        import torch
        from transformers import DynamicCache

        cache: Any = DynamicCache(ddp_cache_data=hit.layers, config=self.model.config)
        rest = torch.tensor([r.prompt[hit.tokens :]], dtype=torch.long)
        mask = torch.ones((1, len(r.prompt)), dtype=torch.long)
        positions = torch.arange(hit.tokens, len(r.prompt)).unsqueeze(0)
        logits = self.model(
            input_ids=rest, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1, :]  # fmt: skip
        assert self.prefix is not None
        # Kept only when it extends the cached prefix by a reusable stretch: otherwise every long_context
        # question would copy the whole window into a near-duplicate entry.
        if len(r.prompt) - hit.tokens >= self.prefix.min_tokens:
            self.prefix.store(r.prompt, [(x.keys, x.values) for x in cache.layers])
        self._merge([r], cache, mask)
        self._accept([r], self._sample([r], logits))

    def _merge(self, admit: list[_Request], cache: Any, mask: Any) -> None:
        """Splice the new rows into the running batch, left-padding the shorter side's cache."""
        import torch
        from transformers import DynamicCache

        if not self._rows:
            self._rows, self._cache, self._mask = list(admit), cache, mask
            return
        old_len, new_len = self._mask.shape[1], mask.shape[1]
        length = max(old_len, new_len)

        def pad(t: Any, n: int) -> Any:
            if n == 0:
                return t
            shape = list(t.shape)
            shape[-2 if t.dim() == 4 else -1] = n
            return torch.cat([t.new_zeros(shape), t], dim=-2 if t.dim() == 4 else -1)

        layers = []
        for old, new in zip(self._cache.layers, cache.layers, strict=True):
            keys = torch.cat([pad(old.keys, length - old_len), pad(new.keys, length - new_len)], dim=0)
            values = torch.cat([pad(old.values, length - old_len), pad(new.values, length - new_len)], dim=0)
            layers.append((keys, values))
        self._cache = DynamicCache(ddp_cache_data=layers, config=self.model.config)
        self._mask = torch.cat([pad(self._mask, length - old_len), pad(mask, length - new_len)], dim=0)
        self._rows = self._rows + admit

    def _decode(self) -> None:
        import torch

        last = torch.tensor([[r.generated[-1]] for r in self._rows], dtype=torch.long)
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(self._rows), 1))], dim=1)
        positions = self._mask.sum(dim=1, keepdim=True) - 1
        logits = self.model(
            input_ids=last, attention_mask=self._mask, position_ids=positions, cache=self._cache,
            use_cache=True, logits_to_keep=1,
        ).logits[:, -1, :]  # fmt: skip
        self.steps += 1
        self._accept(self._rows, self._sample(self._rows, logits))

    def _sample(self, rows: list[_Request], logits: Any) -> list[int]:
        import torch

        for i, r in enumerate(rows):
            if r.quote is not None:
                allowed = torch.tensor(r.quote.allowed(), dtype=torch.long)
                row = torch.full_like(logits[i], float("-inf"))
                row[allowed] = logits[i][allowed]
                logits[i] = row
        tokens = logits.argmax(dim=-1).tolist()
        for i, r in enumerate(rows):
            p = r.params
            if p.temperature <= 0:
                continue
            probs = torch.softmax(logits[i].float() / p.temperature, dim=-1)
            if p.top_p < 1.0:
                sorted_probs, order = probs.sort(descending=True)
                keep = sorted_probs.cumsum(-1) - sorted_probs < p.top_p
                probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
            tokens[i] = int(torch.multinomial(probs, 1, generator=r.rng).item())
        return [int(t) for t in tokens]

    def _accept(self, rows: list[_Request], tokens: list[int]) -> None:
        """Append each row's new token, send the text it completes, and finish rows that are done."""
        for r, token in zip(rows, tokens, strict=True):
            if r.cancelled.is_set():
                continue
            finish: FinishReason | None = None
            if token in self.stop_ids and not r.params.ignore_eos:
                finish = "stop"
            else:
                r.generated.append(token)
                if r.quote is not None:
                    r.quote.advance(token)
            # Leading whitespace is not part of the answer (our chat template opens it with a space).
            text = str(self.tokenizer.decode(r.generated, skip_special_tokens=True)).lstrip()
            end = len(text)
            for s in r.params.stop:
                at = text.find(s, max(0, r.sent - len(s)))
                if at >= 0 and at < end:
                    end, finish = at, "stop"
            end = max(end, r.sent)
            if finish is None and len(r.generated) >= r.params.max_tokens:
                finish = "length"
            if finish is None:
                # Hold back an incomplete UTF-8 character and anything that may be the start of a stop string.
                if text.endswith("\ufffd"):
                    end = len(text) - 1
                end = min(end, len(text) - _partial_stop(text, r.params.stop))
                if end > r.sent:
                    r.send(Chunk(text[r.sent : end]))
                    r.sent = end
            else:
                r.send(Chunk(text[r.sent : end], finish, len(r.prompt), len(r.generated)))
                r.sent = -1  # finished

    def _drop_finished(self) -> None:
        import torch

        keep = [i for i, r in enumerate(self._rows) if r.sent >= 0 and not r.cancelled.is_set()]
        if len(keep) == len(self._rows):
            return
        for i, r in enumerate(self._rows):
            if i not in keep and r.cancelled.is_set() and r.sent >= 0:
                r.send(Chunk("", "cancelled", len(r.prompt), len(r.generated)))
        if not keep:
            self._rows, self._cache, self._mask = [], None, None
            return
        index = torch.tensor(keep, dtype=torch.long)
        mask = self._mask.index_select(0, index)
        # Columns that are padding for every remaining row carry no information: cut them.
        first = int((mask.sum(dim=0) > 0).nonzero()[0].item())
        self._mask = mask[:, first:]
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, index)[:, :, first:, :]
            layer.values = layer.values.index_select(0, index)[:, :, first:, :]
        self._rows = [self._rows[i] for i in keep]


def _partial_stop(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that is the beginning of a stop string."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


def checkpoint_stamp(path: Path) -> str:
    """Changes when a checkpoint directory is rewritten (lineage.json is written last by every save)."""
    marker = path / "lineage.json"
    if not marker.exists():
        marker = path / "config.json"
    try:
        return f"{path}:{marker.stat().st_mtime_ns}"
    except OSError:
        return str(path)


class EmbeddedEngine:
    """Implements `core.engine.Engine` with one `_Worker` per model."""

    kind = "embedded"

    def __init__(
        self,
        specs: list[ModelSpec],
        max_batch: int = 8,
        queue_size: int = 64,
        retry_after_s: int = 1,
        max_prompt_tokens: int | None = None,
        prefix_cache_mb: int = 0,
    ) -> None:
        for spec in specs:
            if spec.path is None:
                raise ValueError(f"model {spec.name!r} has no checkpoint directory")
        self.specs = specs
        self.max_batch = max_batch
        self.queue_size = queue_size
        self.retry_after_s = retry_after_s
        self.max_prompt_tokens = max_prompt_tokens
        self.prefix_cache_mb = prefix_cache_mb
        self._workers: dict[str, _Worker] = {}
        self._draining: set[asyncio.Task[None]] = set()

    def _new_worker(self, spec: ModelSpec) -> _Worker:
        return _Worker(spec, self.max_batch, self.queue_size, self.retry_after_s, self.prefix_cache_mb)

    async def start(self) -> None:
        for spec in self.specs:
            worker = await asyncio.to_thread(self._new_worker, spec)
            worker.start()
            self._workers[spec.name] = worker
            log.info(
                "embedded engine: %s = %s (%d parameters, window %d)",
                spec.name, spec.path, worker.card.extra["parameters"], worker.window,
            )  # fmt: skip

    async def load(self, spec: ModelSpec, drain_timeout_s: float = 300.0) -> ModelCard:
        """Serve `spec` without a restart: load it beside the running models, route new requests to it, and
        stop the model it replaces once that one has finished the answers it already started."""
        if spec.path is None:
            raise ValueError(f"model {spec.name!r} has no checkpoint directory")
        worker = await asyncio.to_thread(self._new_worker, spec)
        worker.start()
        old = self._workers.get(spec.name)
        self._workers[spec.name] = worker
        self.specs = [s for s in self.specs if s.name != spec.name] + [spec]
        if old is not None:
            task = asyncio.create_task(asyncio.to_thread(old.drain_and_stop, drain_timeout_s))
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)
        log.info("embedded engine: %s = %s (loaded without a restart)", spec.name, spec.path)
        return worker.card

    async def aclose(self) -> None:
        for worker in self._workers.values():
            await asyncio.to_thread(worker.stop)
        self._workers.clear()
        if self._draining:
            await asyncio.gather(*self._draining, return_exceptions=True)

    def models(self) -> list[ModelCard]:
        return [w.card for w in self._workers.values()]

    def _worker(self, model: str) -> _Worker:
        find_card(self.models(), model)
        return self._workers[model]

    def worker(self, model: str) -> _Worker:
        """The worker serving `model` (for benchmarks and tests that compare with plain transformers)."""
        return self._worker(model)

    async def ready(self) -> dict[str, Any]:
        if not self._workers:
            raise EngineUnavailable("the embedded engine has no model loaded")
        dead = [name for name, w in self._workers.items() if not w.alive]
        if dead:
            raise EngineUnavailable(f"the embedded engine's worker for {', '.join(dead)} has stopped")
        return {"engine": self.kind, "models": list(self._workers)}

    def queue_depth(self) -> int:
        return sum(w.queue_depth() for w in self._workers.values())

    def running(self) -> int:
        return sum(len(w._rows) for w in self._workers.values())

    def check_room(self, model: str) -> None:
        self._worker(model).check_room()

    async def tokenize(
        self,
        model: str,
        *,
        text: str | None = None,
        messages: list[Message] | None = None,
        add_generation_prompt: bool = True,
    ) -> list[int]:
        return self._worker(model).encode(messages, text, add_generation_prompt)

    async def submit(self, model: str, messages: list[Message], params: SamplingParams) -> EmbeddedGeneration:
        worker = self._worker(model)
        prompt = worker.encode(messages, None, True)
        if self.max_prompt_tokens is not None and len(prompt) > self.max_prompt_tokens:
            raise BadRequest(
                f"the prompt has {len(prompt)} tokens, more than this gateway's limit of "
                f"{self.max_prompt_tokens} (KC_MAX_PROMPT_TOKENS)",
                code="context_length_exceeded",
                param="messages",
            )
        return worker.submit(prompt, params)


def load_model_dir(path: Path) -> tuple[Any, Any]:
    """The model and tokenizer of a checkpoint directory, as the engine loads them (for benchmarks)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=serving_dtype())
    model.eval()
    return model, AutoTokenizer.from_pretrained(str(path))


def serving_dtype() -> Any:
    """The weights' dtype: float32 unless `KC_PRECISION=bf16` (core.hardware). In bf16 a 1,024-token prefill
    of SmolLM2-135M takes 1.35 s instead of 2.1 s here, but a greedy answer can then depend on what else is
    in the batch (rounding follows the padded shape): not always the answer the question gets asked alone."""
    import torch

    return torch.bfloat16 if precision_setting() == "bf16" else torch.float32
