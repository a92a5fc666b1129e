"""The vllm engine (an OpenAI-compatible HTTP client).

Here: unit tests against an in-process fake of vLLM's HTTP API (httpx.MockTransport), and an integration
test against a live embedded gateway, which speaks the same API (`/v1/models` with `max_model_len`,
`/v1/chat/completions` streaming with usage, `/tokenize`). The real vLLM server: test_vllm_real.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from gateway_support import free_port, make_app
from pydantic import SecretStr

from core.engine import SamplingParams, complete
from service.engines.vllm import VLLMEngine
from service.errors import BadRequest, EngineTimeout, EngineUnavailable, NotFound, Overloaded
from service.served_models import ModelSpec
from service.settings import ServiceSettings

pytestmark = pytest.mark.anyio
URL = "http://vllm.test:8001/v1"


def sse(*events: Any) -> bytes:
    return b"".join(f"data: {json.dumps(e) if not isinstance(e, str) else e}\n\n".encode() for e in events)


class FakeVLLM:
    """vLLM's OpenAI-compatible API, as far as the engine uses it; records the requests it gets."""

    def __init__(self, fail: Exception | None = None, status: int = 200) -> None:
        self.fail = fail
        self.status = status
        self.requests: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.fail is not None:
            raise self.fail
        path = request.url.path
        if path == "/v1/models":
            data = [{"id": "m", "object": "model", "root": "/models/m", "max_model_len": 2048}]
            return httpx.Response(200, json={"object": "list", "data": data})
        body = json.loads(request.content)
        self.requests.append({"path": path, **body})
        if path == "/tokenize":
            return httpx.Response(200, json={"count": 3, "max_model_len": 2048, "tokens": [5, 6, 7]})
        if self.status != 200:
            error = {"object": "error", "message": "This model's maximum context length is 2048", "code": 400}
            return httpx.Response(self.status, json=error)
        chunk = {"id": "c", "object": "chat.completion.chunk", "model": "m"}
        stream = sse(
            {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
            # our chat template opens the answer with a space; the engine does not pass it on
            {**chunk, "choices": [{"index": 0, "delta": {"content": " "}}]},
            {**chunk, "choices": [{"index": 0, "delta": {"content": " Orvan "}}]},
            {**chunk, "choices": [{"index": 0, "delta": {"content": "Teel [1]"}, "finish_reason": "length"}]},
            {
                **chunk,
                "choices": [],
                "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14},
            },
            "[DONE]",
        )
        return httpx.Response(200, content=stream, headers={"content-type": "text/event-stream"})


def engine(fake: FakeVLLM, **kwargs: Any) -> VLLMEngine:
    spec = ModelSpec("m", "chat", url=URL)
    return VLLMEngine([spec], transport=httpx.MockTransport(fake), **kwargs)


async def test_streams_and_counts_through_the_openai_api() -> None:
    fake = FakeVLLM()
    eng = engine(fake)
    await eng.start()
    try:
        card = eng.models()[0]
        assert (card.context_window, card.checkpoint_id) == (2048, "/models/m")
        params = SamplingParams(max_tokens=3, temperature=0.5, stop=("\n",), seed=3, ignore_eos=True)
        generation = await eng.submit("m", [{"role": "user", "content": "who?"}], params)
        assert eng.running() == 1
        chunks = [c async for c in generation]
        assert [c.text for c in chunks] == ["Orvan ", "Teel [1]", ""]
        assert (chunks[-1].finish_reason, chunks[-1].prompt_tokens, chunks[-1].completion_tokens) == (
            "length",
            11,
            3,
        )
        assert eng.running() == 0
        sent = fake.requests[-1]
        assert sent["path"] == "/v1/chat/completions" and sent["stream"] is True
        assert sent["stream_options"] == {"include_usage": True} and sent["ignore_eos"] is True
        assert (sent["max_tokens"], sent["temperature"], sent["stop"], sent["seed"]) == (3, 0.5, ["\n"], 3)
        assert await eng.tokenize("m", text="abc") == [5, 6, 7]
        assert await eng.tokenize("m", messages=[{"role": "user", "content": "x"}]) == [5, 6, 7]
        assert fake.requests[-1]["path"] == "/tokenize" and fake.requests[-1]["add_generation_prompt"] is True
        assert (await eng.ready())["models"] == ["m"]
    finally:
        await eng.aclose()


async def test_prompt_limit_is_counted_by_the_server() -> None:
    eng = engine(FakeVLLM(), max_prompt_tokens=2)
    await eng.start()
    try:
        with pytest.raises(BadRequest, match="KC_MAX_PROMPT_TOKENS"):
            await eng.submit("m", [{"role": "user", "content": "long enough"}], SamplingParams(max_tokens=1))
        with pytest.raises(NotFound):
            await eng.submit("other", [{"role": "user", "content": "x"}], SamplingParams(max_tokens=1))
    finally:
        await eng.aclose()


async def test_the_inflight_limit_holds_when_requests_arrive_together() -> None:
    import asyncio

    fake = FakeVLLM()

    async def slow_headers(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/chat/completions"):
            await asyncio.sleep(0.05)  # every request is past the limit check before the first answers
        return fake(request)

    spec = ModelSpec("m", "chat", url=URL)
    eng = VLLMEngine([spec], queue_size=0, max_batch=2, transport=httpx.MockTransport(slow_headers))
    await eng.start()
    try:
        message = [{"role": "user", "content": "x"}]
        outcomes = await asyncio.gather(
            *(eng.submit("m", message, SamplingParams(max_tokens=1)) for _ in range(8)),
            return_exceptions=True,
        )
        admitted = [o for o in outcomes if not isinstance(o, BaseException)]
        assert len(admitted) == 2 and all(isinstance(o, Overloaded) for o in outcomes if o not in admitted)
        assert eng.running() == 2
        for generation in admitted:
            await generation.aclose()
        assert eng.running() == 0
    finally:
        await eng.aclose()


@pytest.mark.parametrize(
    ("fake", "error", "status"),
    [
        (FakeVLLM(status=400), BadRequest, 400),
        (FakeVLLM(status=429), Overloaded, 429),
        (FakeVLLM(status=500), EngineUnavailable, 503),
        (FakeVLLM(fail=httpx.ConnectError("refused")), EngineUnavailable, 503),
        (FakeVLLM(fail=httpx.ReadTimeout("slow")), EngineTimeout, 504),
    ],
)
async def test_server_errors_map_to_clear_statuses(
    fake: FakeVLLM, error: type[Exception], status: int
) -> None:
    eng = engine(fake)
    await eng.start()  # a server that is down at start-up is only logged
    try:
        with pytest.raises(error) as raised:
            await complete(eng, "m", [{"role": "user", "content": "x"}], SamplingParams(max_tokens=1))
        assert raised.value.status == status  # type: ignore[attr-defined]
        if fake.fail is not None:
            assert URL in str(raised.value) and "'m'" in str(raised.value)
        assert eng.running() == 0
    finally:
        await eng.aclose()


def test_engine_down_gives_503_and_readyz_says_why(indexed: ServiceSettings, embedder: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    settings = indexed.model_copy(update={"engine": "vllm", "vllm_urls": {"keepcurrent": url}})
    with TestClient(make_app(settings, embedder)) as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "not reachable" in ready.json()["error"]["message"]
        chat = client.post(
            "/v1/chat/completions",
            json={"model": "keepcurrent", "messages": [{"role": "user", "content": "x"}]},
        )
        assert chat.status_code == 503
        error = chat.json()["error"]
        assert error["code"] == "engine_unavailable" and url in error["message"]
        for strategy in ("closed_book", "rag", "long_context"):
            r = client.post("/ask", json={"question": "Who leads Kelvor Dynamics?", "strategy": strategy})
            assert r.status_code == 503, (strategy, r.text)
        assert client.get("/v1/models").json()["data"][0]["id"] == "keepcurrent"


@pytest.mark.integration
@pytest.mark.slow
def test_vllm_engine_against_a_live_openai_compatible_server(
    indexed: ServiceSettings, nano_model: Path, embedder: Any, start_gateway: Any, tmp_path: Path
) -> None:
    """Gateway B (vllm engine) -> gateway A (embedded, nano), all strategies through B."""
    import openai

    backend = start_gateway({"KC_HOME": str(tmp_path / "backend"), "KC_MODEL": str(nano_model)}, "backend")
    settings = indexed.model_copy(
        update={"engine": "vllm", "vllm_urls": {"keepcurrent": f"{backend.url}/v1"}}
    )
    with TestClient(make_app(settings, embedder)) as client:
        assert client.get("/readyz").status_code == 200
        window = json.loads((nano_model / "config.json").read_text())["max_position_embeddings"]
        model = client.get("/v1/models").json()["data"][0]
        assert (
            model["max_model_len"] == window and model["keepcurrent"]["checkpoint_id"] == "sft/nano-service"
        )
        messages = [{"role": "user", "content": "Who leads Kelvor Dynamics?"}]
        plain = client.post(
            "/v1/chat/completions", json={"model": "keepcurrent", "messages": messages, "max_tokens": 5}
        )
        direct = openai.OpenAI(base_url=f"{backend.url}/v1", api_key="none").chat.completions.create(
            model="keepcurrent",
            messages=messages,
            max_tokens=5,  # type: ignore[arg-type]
        )
        assert plain.json()["choices"][0]["message"]["content"] == direct.choices[0].message.content
        assert plain.json()["usage"]["prompt_tokens"] == direct.usage.prompt_tokens  # type: ignore[union-attr]
        for strategy in ("closed_book", "rag", "long_context"):
            r = client.post("/ask", json={"question": "Who leads Kelvor Dynamics?", "strategy": strategy})
            assert r.status_code == 200, r.text
        assert r.json()["coverage"]["documents_packed"] == 4
        assert client.post("/tokenize", json={"prompt": "Kelvor"}).json()["max_model_len"] == window


@pytest.mark.integration
@pytest.mark.slow
def test_a_cpt_server_is_routed_without_a_restart(
    indexed: ServiceSettings,
    nano_model: Path,
    nano_cpt: Path,
    embedder: Any,
    start_gateway: Any,
    tmp_path: Path,
) -> None:
    """`POST /admin/reload {"url"}`, vllm engine: the gateway checks that the server serves the CPT name."""
    backend = start_gateway(
        {"KC_HOME": str(tmp_path / "backend"), "KC_MODEL": str(nano_model), "KC_CPT_MODEL": str(nano_cpt)},
        "backend",
    )
    settings = indexed.model_copy(
        update={
            "engine": "vllm",
            "vllm_urls": {"keepcurrent": f"{backend.url}/v1"},
            "api_key": SecretStr("k"),
        }
    )
    ask = {"question": "Who leads Kelvor Dynamics?", "strategy": "cpt", "max_tokens": 3}
    with TestClient(make_app(settings, embedder), headers={"Authorization": "Bearer k"}) as client:
        assert client.post("/ask", json=ask).json()["error"]["code"] == "no_cpt_checkpoint"
        r = client.post("/admin/reload")
        assert r.status_code == 400 and r.json()["error"]["code"] == "reload_needs_url"
        assert client.post("/admin/reload", json={"url": "ftp://x"}).status_code == 400
        down = client.post("/admin/reload", json={"url": f"http://127.0.0.1:{free_port()}/v1"})
        assert down.status_code == 503 and "not reachable" in down.json()["error"]["message"]
        assert client.post("/ask", json=ask).status_code == 404  # the failed reload left nothing behind
        r = client.post("/admin/reload", json={"url": f"{backend.url}/v1"})
        assert r.status_code == 200, r.text
        assert r.json()["reloaded"] is True and r.json()["checkpoint_id"] == "cpt/nano-cpt"
        answer = client.post("/ask", json=ask).json()
        assert answer["model"] == "keepcurrent-cpt" and answer["checkpoint_id"] == "cpt/nano-cpt"
        assert client.post("/admin/reload").json()["reloaded"] is False  # same server, same checkpoint
