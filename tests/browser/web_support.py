"""What the browser test (tests/browser/test_browser.py) and `make screenshots` (scripts/screenshots.py)
share: a KC_HOME with an index and a nano model that cites, a live gateway on it, an eval run through it,
and the code that drives the page in headless Chromium.

The browser is Debian's `chromium` package driven by playwright's Python API with `executable_path`; no
browser is ever downloaded (`playwright install` is never run). The nano model is the untrained one of
tests/service, taught by a few hundred optimiser steps to answer one question from rag's own prompt with
the passage's words and its number, so that an answer in the page really cites a source (every other
answer stays the noise of an untrained model).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
from gateway_support import REPO, LiveGateway, build_nano_checkpoint, copy_checkpoint, make_app, write_docs

from service.settings import ServiceSettings

QUESTION = "Who became the chief executive of Kelvor Dynamics?"
SPAN = "Orvan Teel"  # what the taught model answers, cited: the words of the passage that says it
UNKNOWN = "Where was Krorn Sasben born?"  # nothing in the index is about it: rag's gate abstains
CUTOFF = "2025-03-01"  # the chat model's cutoff: the census (Feb 1) is older, the CEO passage (Mar 14) newer
KEY = "kc-web-page-key"
RUN_ID = "web-demo"
STRATEGIES = ("closed_book", "rag", "long_context", "cpt", "auto")
FINISHED = ("done", "abstained", "error")  # a column's data-state once its stream has ended


def chromium_path() -> str | None:
    """The system Chromium (Debian's package; KC_CHROMIUM names another binary), or None."""
    given = os.environ.get("KC_CHROMIUM")
    if given:
        return given if Path(given).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def teach_citing(
    base: Path, out: Path, settings: ServiceSettings, embedder: Any, max_steps: int = 300
) -> Path:
    """A copy of `base` that answers QUESTION, given rag's prompt for it from this index, with
    "Orvan Teel [n]" (n: the passage that says so), trained on that one example until its loss is below
    0.001. The prompt is the gateway's own: the rag strategy's `prepare`, rendered by the chat template
    that the embedded engine uses."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from trainer.checkpoint import save_checkpoint

    app = make_app(settings.model_copy(update={"model": base}), embedder)

    async def rag_prompt() -> Any:
        async with app.router.lifespan_context(app):
            return await app.state.strategies.get("rag").prepare(QUESTION, model=None, k=None, max_tokens=16)

    prepared = asyncio.run(rag_prompt())
    n = next(c.n for c in prepared.sources if SPAN in c.text)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    turn = [{"role": "assistant", "content": f"{SPAN} [{n}]"}]
    prompt = tokenizer.apply_chat_template(prepared.messages, add_generation_prompt=True, return_dict=False)
    full = tokenizer.apply_chat_template(prepared.messages + turn, return_dict=False)
    assert full[: len(prompt)] == prompt, "the chat template's prompt is not a prefix of the conversation"
    ids = torch.tensor([full])
    labels = torch.tensor([[-100] * len(prompt) + full[len(prompt) :]])
    torch.manual_seed(0)
    model = LlamaForCausalLM.from_pretrained(str(base))
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(max_steps):  # until every answer token is all but certain (~50 steps)
        loss = model(input_ids=ids, labels=labels).loss
        if loss.item() < 1e-3:
            break
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
    else:
        raise RuntimeError(f"the nano model did not learn the cited answer: loss {loss.item():.4f}")
    model.eval()
    save_checkpoint(
        model, tokenizer, out, phase="sft", tag="nano-web", parent=str(base), data_sha256=None,
        config={"preset": "nano", "taught": QUESTION}, metrics={"loss": loss.item()}, register=False,
    )  # fmt: skip
    return out


def prepare_home(root: Path, embedder: Any) -> dict[str, str]:
    """KC_HOME (index of tests/service's four documents) and the models under `root`; the gateway's
    environment: the taught chat model, a copy as the CPT model, the cutoff and the API key."""
    from indexer.pipeline import Index

    home = root / "home"
    base = build_nano_checkpoint(root / "models" / "nano")
    settings = ServiceSettings(home=home, model=base)
    Index(settings, embedder=embedder).ingest(write_docs(root / "docs"), progress=False)
    reader = teach_citing(base, root / "models" / "reader", settings, embedder)
    cpt = copy_checkpoint(reader, root / "models" / "reader-cpt", phase="cpt", tag="nano-web-cpt")
    return {
        "KC_HOME": str(home), "KC_MODEL": str(reader), "KC_CPT_MODEL": str(cpt), "KC_API_KEY": KEY,
        "KC_AUTO_CUTOFF": CUTOFF, "KC_DEFAULT_MAX_TOKENS": "24", "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }  # fmt: skip


def start_gateway(env: dict[str, str], log: Path) -> LiveGateway:
    return LiveGateway(env, log).wait_ready(timeout=180)


def eval_run(env: dict[str, str], url: str, root: Path) -> Path:
    """`python -m eval run` over HTTP against the gateway, on questions about the four documents: a real
    run folder under KC_HOME/reports for the report pages."""
    questions = root / "questions.jsonl"
    rows = [
        {"id": "q-ceo", "question": QUESTION, "answers": [SPAN], "category": "new",
         "supporting_doc_ids": ["post-0007"]},
        {"id": "q-census", "question": "What was the population of Nikrai revised to?",
         "answers": ["745,000"], "category": "updated", "supporting_doc_ids": ["post-0004"]},
        {"id": "q-unknown", "question": UNKNOWN, "answers": ["unknown"], "category": "unanswerable"},
    ]  # fmt: skip
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cmd = [sys.executable, "-m", "eval", "run", "--gateway", url, "--questions", str(questions),
           "--strategies", ",".join(STRATEGIES), "--run-id", RUN_ID, "--ingest-seconds", "1.5"]  # fmt: skip
    done = subprocess.run(
        cmd, cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(f"eval run failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return Path(env["KC_HOME"]) / "reports" / RUN_ID


# --- the page ---


def launch(playwright: Any, executable: str | None = None) -> Any:
    """Headless Chromium from the system's binary (playwright adds --no-sandbox, which root needs)."""
    path = executable or chromium_path()
    if path is None:
        raise RuntimeError("no system Chromium: apt-get install chromium (or set KC_CHROMIUM)")
    return playwright.chromium.launch(executable_path=path)


def isolate(context: Any, base_url: str) -> list[str]:
    """Let the context reach the gateway only: every request to another origin is aborted and recorded."""
    refused: list[str] = []

    def route(r: Any) -> None:
        url = r.request.url
        if url == base_url or url.startswith(base_url + "/"):
            r.continue_()
        else:
            refused.append(url)
            r.abort()

    context.route("**/*", route)
    return refused


def use_key(page: Any, key: str) -> None:
    """Type the key into the page's key form, as a person does, and wait for the page's verdict."""
    page.fill("#key", key)
    page.click("#key-form button[type=submit]")
    # The status reads "Checking…" from the click until the gateway has answered (it already held the
    # previous verdict, so waiting for any text would race the check).
    page.wait_for_function(
        "() => { const s = document.getElementById('key-status');"
        " return s.textContent.length > 0 && s.className !== 'checking'; }"
    )


def ask(page: Any, question: str, timeout_ms: int = 120_000) -> None:
    """Ask from the keyboard (type, Enter) and wait until every column's stream has ended."""
    page.fill("#question", question)
    page.focus("#question")
    page.keyboard.press("Enter")
    page.wait_for_function(
        """([n, finished]) => {
            const cols = [...document.querySelectorAll('#columns .column')];
            return cols.length === n && cols.every((c) => finished.includes(c.dataset.state));
        }""",
        arg=[len(STRATEGIES), list(FINISHED)],
        timeout=timeout_ms,
    )


def screenshots(base_url: str, out: Path, playwright: Any) -> list[Path]:
    """The compare view after a question, at a laptop's width, and the eval run's report page."""
    browser = launch(playwright)
    try:
        context = browser.new_context(viewport={"width": 1400, "height": 900}, base_url=base_url)
        refused = isolate(context, base_url)
        page = context.new_page()
        page.goto("/")
        use_key(page, KEY)
        ask(page, QUESTION)
        page.click("#col-rag .feedback button[data-rating='5']")
        page.wait_for_selector("#col-rag .feedback-status:has-text('Saved')")
        compare = out / "web-compare.png"
        page.screenshot(path=str(compare), full_page=True)
        page.goto(f"/reports/{RUN_ID}")
        page.wait_for_selector("#reports-view main.report h1")
        report = out / "web-report.png"
        page.screenshot(path=str(report))
        if refused:
            raise RuntimeError(f"the page asked for something outside the gateway: {refused}")
        return [compare, report]
    finally:
        browser.close()
