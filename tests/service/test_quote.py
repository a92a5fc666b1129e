"""Quote mode: whatever the model prefers, the answer is a verbatim span of the passages or the abstention."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from core.engine import Quote, SamplingParams, complete
from core.prompts import ABSTAIN_ANSWER
from service.engines.embedded import EmbeddedEngine, load_model_dir
from service.engines.quote import QuoteState
from service.served_models import ModelSpec
from service.settings import ServiceSettings

PASSAGES = (
    "Tre Zenond was born in the city of Stanpen. Its population is 97,000 (2024).",
    "Kaste Labs hired Eshen Hainte as chief executive on March 3, 2025.",
)


def at_word_bounds(text: str, passage: str, *, ended: bool) -> bool:
    """Whether `text` occurs in `passage` starting at a word's start (and, when it ended, at a word's end)."""
    for at in (i for i in range(len(passage)) if passage.startswith(text, i)):
        starts = at == 0 or not passage[at - 1].isalnum()
        after = passage[at + len(text) : at + len(text) + 1]
        if starts and (not ended or not after.isalnum()):
            return True
    return False


def test_random_walks_stay_inside_the_passages(nano_model: Path) -> None:
    _, tokenizer = load_model_dir(nano_model)
    stop = {int(tokenizer.eos_token_id)}
    quote = Quote(spans=PASSAGES, whole=(ABSTAIN_ANSWER,))
    rng = random.Random(0)
    endings = 0
    for _ in range(200):
        state = QuoteState.build(tokenizer, quote, stop)
        ids: list[int] = []
        ended = False
        for _ in range(40):
            token = rng.choice(state.allowed())
            if token in stop:
                ended = True
                break
            ids.append(token)
            state.advance(token)
        endings += ended
        text = str(tokenizer.decode(ids)).strip()
        if ABSTAIN_ANSWER.startswith(text):
            assert not ended or text == ABSTAIN_ANSWER  # the abstention only ends whole
        else:
            assert any(at_word_bounds(text, p, ended=ended) for p in PASSAGES), text
    assert endings > 100  # the constraint offers the end of turn where a word ends


def test_the_abstention_is_taken_whole(nano_model: Path) -> None:
    _, tokenizer = load_model_dir(nano_model)
    stop = {int(tokenizer.eos_token_id)}
    state = QuoteState.build(tokenizer, Quote(spans=(), whole=(ABSTAIN_ANSWER,)), stop)
    ids = [int(i) for i in tokenizer.encode(ABSTAIN_ANSWER, add_special_tokens=False)]
    for token in ids:
        assert token in state.allowed() and not stop & set(state.allowed())  # no end before the last word
        state.advance(token)
    assert set(state.allowed()) == stop


@pytest.mark.anyio
@pytest.mark.parametrize("temperature", [0.0, 1.5])
async def test_the_engine_answers_with_a_span(nano_model: Path, temperature: float) -> None:
    eng = EmbeddedEngine([ModelSpec("nano", "chat", path=nano_model, checkpoint_id="sft/nano")])
    await eng.start()
    try:
        for seed in range(4):
            params = SamplingParams(max_tokens=12, temperature=temperature, seed=seed, quote=Quote(PASSAGES))
            done = await complete(eng, "nano", [{"role": "user", "content": "Where was Tre born?"}], params)
            assert done.text and any(done.text.strip() in p for p in PASSAGES), done.text
            free = await complete(
                eng, "nano", [{"role": "user", "content": "Where was Tre born?"}],
                SamplingParams(max_tokens=12, temperature=temperature, seed=seed),
            )  # fmt: skip
            assert free.completion_tokens > 0  # the same request unconstrained still generates
    finally:
        await eng.aclose()


def test_quote_mode_needs_the_embedded_engine() -> None:
    with pytest.raises(ValidationError, match="KC_RAG_QUOTE"):
        ServiceSettings(rag_quote=True, engine="vllm", vllm_urls={"m": "http://localhost:1/v1"})
    assert ServiceSettings(rag_quote=True).rag_quote
