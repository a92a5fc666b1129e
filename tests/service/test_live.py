"""The official `openai` client against a live gateway process (`python -m service` on a free port)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from gateway_support import REPO

from service.settings import ServiceSettings

KEY = "kc-live-key"


@pytest.fixture
def live(indexed: ServiceSettings, start_gateway: Any) -> Any:
    env = {"KC_HOME": str(indexed.home), "KC_MODEL": str(indexed.model), "KC_API_KEY": KEY}
    return start_gateway(env)


@pytest.mark.integration
@pytest.mark.slow
def test_openai_client_plain_streaming_strategies_and_auth(live: Any) -> None:
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list()] == ["keepcurrent"]
    messages: Any = [{"role": "user", "content": "Who leads Kelvor Dynamics?"}]

    plain = client.chat.completions.create(model="keepcurrent", messages=messages, max_tokens=6)
    assert plain.object == "chat.completion" and plain.choices[0].finish_reason in ("stop", "length")
    assert plain.usage is not None and 0 < plain.usage.completion_tokens <= 6

    stream = client.chat.completions.create(
        model="keepcurrent",
        messages=messages,
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content  # greedy: same answer streamed or not
    assert (
        chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    )

    rag = client.chat.completions.create(
        model="keepcurrent", messages=messages, max_tokens=6, extra_body={"strategy": "rag"}
    )
    meta = (rag.model_extra or {})["keepcurrent"]
    assert meta["strategy"] == "rag" and meta["sources"][0]["source"] == "post-0007"

    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4", messages=messages)
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="keepcurrent", messages=messages, n=2)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{live.url}/v1", api_key="wrong", max_retries=0).models.list()

    headers = {"Authorization": f"Bearer {KEY}"}
    ask = httpx.post(
        f"{live.url}/ask", json={"question": "Who leads Kelvor Dynamics?"}, headers=headers, timeout=60
    )
    assert ask.status_code == 200 and ask.json()["strategy"] == "rag"
    assert httpx.get(f"{live.url}/readyz").status_code == 200
    assert KEY not in Path(live.log).read_text()


def test_cli_help_and_a_clear_error_without_a_model(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "KC_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    shown = subprocess.run(
        [sys.executable, "-m", "service", "--help"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert shown.returncode == 0 and "KC_VLLM_URLS" in shown.stdout and "KC_API_KEY" in shown.stdout
    failed = subprocess.run(
        [sys.executable, "-m", "service"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert failed.returncode == 2 and "no chat model: set KC_MODEL" in failed.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "service"],
        cwd=REPO,
        env={**env, "KC_ENGINE": "vllm"},
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "KC_VLLM_URLS" in bad.stderr
