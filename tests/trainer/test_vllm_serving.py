"""A trainer checkpoint served by vLLM (CPU build, in its own venv: `make vllm-venv`) answers a grounded
question through /v1/chat/completions exactly as it was trained to, and as transformers does."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from trainer.sft import SFTRunConfig, read_chat_rows, run_sft

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_vllm_serves_a_trained_grounded_answer(
    nano_base: Path, nano_world: Path, tmp_path: Path, vllm_server: Callable[[Path, str], str]
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows = read_chat_rows([nano_world / "sft" / "grounded.jsonl"])[:2]
    data = tmp_path / "two.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # Fine-tune until the nano model knows these two grounded answers: the point is serving, not learning.
    cfg = SFTRunConfig(
        from_=str(nano_base), data=[data], out=tmp_path / "sft", max_steps=120, batch_size=2, lr=5e-3,
        warmup=0.0, eval_fraction=0.0, log_every=40,
    )  # fmt: skip
    ckpt = Path(run_sft(cfg)["out"])
    prompt, reference = rows[0]["messages"][:-1], rows[0]["messages"][-1]["content"]

    tok = AutoTokenizer.from_pretrained(str(ckpt))
    model = AutoModelForCausalLM.from_pretrained(str(ckpt))
    ids = tok.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=16, do_sample=False)
    assert tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip() == reference

    base_url = vllm_server(ckpt, "kc-nano")
    reply = httpx.post(
        f"{base_url}/chat/completions",
        json={"model": "kc-nano", "messages": prompt, "temperature": 0, "max_tokens": 16},
        timeout=120,
    ).json()
    assert reply["choices"][0]["message"]["content"].strip() == reference, reply
    assert reply["choices"][0]["finish_reason"] == "stop", reply
