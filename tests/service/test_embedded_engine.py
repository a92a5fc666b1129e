"""The embedded engine: continuous batching gives what plain `model.generate` gives, and never hangs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from core.engine import SamplingParams, complete
from service.engines.embedded import EmbeddedEngine, _partial_stop, load_model_dir
from service.engines.prefix_cache import PrefixCache
from service.errors import BadRequest, Overloaded
from service.served_models import ModelSpec

pytestmark = pytest.mark.anyio

QUESTIONS = [f"What is the population of city {i}?" * (1 + i % 3) for i in range(6)]


def messages(q: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": q}]


def reference(model: Any, tokenizer: Any, stop_ids: list[int], q: str, n: int) -> list[int]:
    """Greedy tokens from plain transformers, one request at a time."""
    enc = tokenizer.apply_chat_template(
        messages(q), add_generation_prompt=True, return_dict=True, return_tensors="pt"
    )
    out = model.generate(
        **enc, max_new_tokens=n, do_sample=False, eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id
    )
    return [int(t) for t in out[0, enc["input_ids"].shape[1] :] if int(t) not in stop_ids]


def engine(path: Path, **kwargs: Any) -> EmbeddedEngine:
    return EmbeddedEngine([ModelSpec("nano", "chat", path=path, checkpoint_id="sft/nano")], **kwargs)


async def test_batched_greedy_equals_generate_one_by_one(nano_model: Path) -> None:
    eng = engine(nano_model, max_batch=4)
    await eng.start()
    try:
        model, tokenizer = load_model_dir(nano_model)
        stops = sorted(eng.worker("nano").stop_ids)
        n = [3 + 4 * i for i in range(len(QUESTIONS))]  # different lengths: rows leave and join mid-batch

        async def staggered(i: int) -> Any:
            await asyncio.sleep(0.005 * i)
            return await complete(eng, "nano", messages(QUESTIONS[i]), SamplingParams(max_tokens=n[i]))

        got = await asyncio.gather(*(staggered(i) for i in range(len(QUESTIONS))))
        for i, answer in enumerate(got):
            want = reference(model, tokenizer, stops, QUESTIONS[i], n[i])
            assert answer.text == tokenizer.decode(want, skip_special_tokens=True).lstrip()
            assert answer.completion_tokens == len(want)
            assert answer.finish_reason == ("length" if len(want) == n[i] else "stop")
        assert eng.worker("nano").steps > 0
    finally:
        await eng.aclose()


async def test_stream_pieces_join_to_the_answer_and_stop_strings_cut(nano_model: Path) -> None:
    eng = engine(nano_model)
    await eng.start()
    try:
        full = await complete(eng, "nano", messages(QUESTIONS[0]), SamplingParams(max_tokens=24))
        generation = await eng.submit("nano", messages(QUESTIONS[0]), SamplingParams(max_tokens=24))
        pieces = [c async for c in generation]
        assert "".join(c.text for c in pieces) == full.text
        assert pieces[-1].finish_reason is not None and pieces[-1].prompt_tokens > 0
        assert all(c.finish_reason is None for c in pieces[:-1])
        stop = full.text[5:8]
        if stop.strip() and "\ufffd" not in stop:
            cut = await complete(
                eng, "nano", messages(QUESTIONS[0]), SamplingParams(max_tokens=24, stop=(stop,))
            )
            assert cut.text == full.text[: full.text.index(stop)] and cut.finish_reason == "stop"
    finally:
        await eng.aclose()


async def test_seeded_sampling_repeats(nano_model: Path) -> None:
    eng = engine(nano_model)
    await eng.start()
    try:
        params = SamplingParams(max_tokens=12, temperature=1.0, top_p=0.9, seed=7)
        a, b = [await complete(eng, "nano", messages("hello"), params) for _ in range(2)]
        assert a.text == b.text
    finally:
        await eng.aclose()


async def test_full_queue_refuses_at_once_and_cancel_frees_the_slot(nano_model: Path) -> None:
    eng = engine(nano_model, max_batch=1, queue_size=1, retry_after_s=3)
    await eng.start()
    try:
        long = SamplingParams(max_tokens=400, ignore_eos=True)
        first = await eng.submit("nano", messages("a"), long)
        second = await eng.submit("nano", messages("b"), long)
        with pytest.raises(Overloaded) as refused:
            await eng.submit("nano", messages("c"), long)
        assert refused.value.status == 429 and refused.value.headers["Retry-After"] == "3"
        await first.aclose()
        await second.aclose()
        answer = await asyncio.wait_for(
            complete(eng, "nano", messages("d"), SamplingParams(max_tokens=2)), timeout=30
        )
        assert answer.completion_tokens <= 2
    finally:
        await eng.aclose()


async def test_prompt_beyond_the_window_is_a_bad_request(nano_model: Path) -> None:
    eng = engine(nano_model, max_prompt_tokens=100)
    await eng.start()
    try:
        with pytest.raises(BadRequest, match="KC_MAX_PROMPT_TOKENS"):
            await eng.submit("nano", messages("word " * 200), SamplingParams(max_tokens=1))
        window = eng.models()[0].context_window
        with pytest.raises(BadRequest, match=f"context window is {window} tokens"):
            await eng.submit("nano", messages("hi"), SamplingParams(max_tokens=window))
    finally:
        await eng.aclose()


async def test_prefix_cache_answers_as_a_full_prefill_and_skips_the_shared_tokens(nano_model: Path) -> None:
    """long_context's shape: one long block of documents, a different question after it each time. The
    cached requests prefill only their question, and greedy answers equal plain `generate`'s."""
    documents = " ".join(f"Document {i}: the city of Amber{i} was founded in {1800 + i}." for i in range(18))
    questions = [f"{documents}\nQuestion: when was Amber{i} founded?" for i in (3, 7, 11, 16)]
    eng = engine(nano_model, max_batch=4, prefix_cache_mb=64)
    await eng.start()
    try:
        model, tokenizer = load_model_dir(nano_model)
        worker = eng.worker("nano")
        stops = sorted(worker.stop_ids)
        first = await complete(eng, "nano", messages(questions[0]), SamplingParams(max_tokens=8))
        assert worker.prefix is not None and worker.prefix.hits == 0
        rest = await asyncio.gather(
            *(complete(eng, "nano", messages(q), SamplingParams(max_tokens=8)) for q in questions[1:])
        )
        prompt = len(worker.encode(messages(questions[1]), None, True))
        assert worker.prefix.hits == 3
        assert worker.prefix.reused_tokens >= 3 * (prompt - 32)  # all but the question
        for q, answer in zip(questions, [first, *rest], strict=True):
            want = reference(model, tokenizer, stops, q, 8)
            assert answer.text == tokenizer.decode(want, skip_special_tokens=True).lstrip()
    finally:
        await eng.aclose()


def test_prefix_cache_keeps_the_longest_prefix_and_its_budget() -> None:
    import torch

    def rows(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(torch.arange(n, dtype=torch.float).view(1, 1, n, 1), torch.zeros(1, 1, n, 1))]

    cache = PrefixCache(max_tokens=100, min_tokens=4)
    cache.store(list(range(10)), rows(10))
    cache.store([*list(range(6)), 99, 98], rows(8))
    assert cache.lookup([7, 7, 7, 7, 7, 7]) is None  # nothing shared
    hit = cache.lookup(list(range(12)))
    assert hit is not None and hit.tokens == 10 and hit.layers[0][0].shape == (1, 1, 10, 1)
    hit = cache.lookup(list(range(10)))  # the same prompt: its last token is left to run
    assert hit is not None and hit.tokens == 9
    assert cache.lookup([*list(range(3)), 50, 51, 52]) is None  # 3 shared tokens: under min_tokens
    cache.store(list(range(200)), rows(200))  # over the budget: not kept
    assert cache.held_tokens == 18
    probe = [*list(range(6)), 99, 98, 97]
    assert (hit := cache.lookup(probe)) is not None and hit.tokens == 8
    cache.lookup(list(range(12)))  # the 10-token entry is now the most recently used
    for start in range(100, 190, 30):  # 90 more tokens: the least recently used entry must go
        cache.store(list(range(start, start + 30)), rows(30))
    assert cache.held_tokens == 100
    assert (hit := cache.lookup(probe)) is not None and hit.tokens == 6  # from the 10-token entry


def test_partial_stop() -> None:
    assert _partial_stop("abc</", ("</s>",)) == 2
    assert _partial_stop("abc", ("</s>",)) == 0
    assert _partial_stop("ab", ()) == 0
