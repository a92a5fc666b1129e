"""The embedded engine: continuous batching gives what plain `model.generate` gives, and never hangs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from core.engine import SamplingParams, complete
from service.engines.embedded import EmbeddedEngine, _partial_stop, load_model_dir
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


def test_partial_stop() -> None:
    assert _partial_stop("abc</", ("</s>",)) == 2
    assert _partial_stop("abc", ("</s>",)) == 0
    assert _partial_stop("ab", ()) == 0
