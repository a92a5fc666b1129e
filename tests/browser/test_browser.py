"""The web page in a real browser: headless Chromium (Debian's `chromium`, through playwright) against a
live gateway (`python -m service`) on a nano model and a four-document index, with an eval run made
through it. The browser may reach the gateway and nothing else: every other request is aborted and
recorded, and the test fails if there was one.

Where no system Chromium is installed this skips, and fails under KC_REQUIRE_SERVICES=1 (CI: `.ci/run`
installs the package with apt-get).
"""

from __future__ import annotations

import importlib.util
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import web_support as web

from core.prompts import ABSTAIN_ANSWER
from service.feedback import FeedbackStore
from service.settings import ServiceSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass
class Site:
    env: dict[str, str]
    gateway: web.LiveGateway

    @property
    def url(self) -> str:
        return self.gateway.url


@pytest.fixture(scope="module")
def chromium() -> str:
    path = web.chromium_path()
    missing = None
    if importlib.util.find_spec("playwright") is None:
        missing = "playwright (the dev extras: pip install -e '.[dev]')"
    elif path is None:
        missing = "a system Chromium (apt-get install chromium)"
    if missing is not None:
        if os.environ.get("KC_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{missing} is required in CI for the browser tests but missing")
        pytest.skip(f"{missing} not available for the browser tests")
    assert path is not None
    return path


@pytest.fixture(scope="module")
def site(chromium: str, tmp_path_factory: pytest.TempPathFactory, embedder: Any) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("web")
    env = web.prepare_home(root, embedder)
    gateway = web.start_gateway(env, root / "gateway.log")
    try:
        web.eval_run(env, gateway.url, root)
        yield Site(env, gateway)
    finally:
        gateway.stop()
    assert web.KEY not in gateway.log.read_text(), "the API key appeared in the gateway's log"


@pytest.fixture
def browser(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chrome = web.launch(playwright, chromium)
        yield chrome
        chrome.close()


@pytest.fixture
def open_page(browser: Any, site: Site) -> Iterator[Any]:
    """A fresh browser context (its own sessionStorage) on the gateway alone; checks what it asked for."""
    contexts: list[tuple[Any, list[str], list[str]]] = []

    def make(**options: Any) -> Any:
        context = browser.new_context(base_url=site.url, **options)
        refused = web.isolate(context, site.url)
        asked: list[str] = []
        context.on("request", lambda r: asked.append(r.url))
        contexts.append((context, refused, asked))
        page = context.new_page()
        page.goto("/")
        return page

    yield make
    for context, refused, asked in contexts:
        context.close()
        assert refused == [], f"the page asked for something outside the gateway: {refused}"
        assert asked and all(url.startswith(site.url) for url in asked)
        assert not any(web.KEY in url or "wrong-key" in url for url in asked), "a key went into a URL"


def text(page: Any, selector: str) -> str:
    return str(page.locator(selector).inner_text())


def test_every_strategy_answers_with_its_sources_and_feedback_is_stored(open_page: Any, site: Site) -> None:
    page = open_page()
    page.wait_for_selector("#key-status.problem")
    assert "needs an API key" in text(page, "#key-status")  # said, not failed silently
    web.use_key(page, web.KEY)
    assert "Key accepted" in text(page, "#key-status") and web.CUTOFF in text(page, "#cutoff")
    web.ask(page, web.QUESTION)

    for name in web.STRATEGIES:
        column = f"#col-{name}"
        assert page.get_attribute(column, "data-state") in ("done", "abstained"), text(page, column)
        assert text(page, f"{column} .answer").strip(), f"{name} shows no answer"
        meta = text(page, f"{column} .meta")
        assert "Tokens" in meta and "prompt +" in meta and "Latency" in meta and " ms" in meta
        cards = page.locator(f"{column} .source")
        if name in ("closed_book", "cpt"):
            assert cards.count() == 0 and "weights alone" in text(page, f"{column} .no-sources")
            continue
        assert cards.count() >= 1, f"{name} shows no source"
        for i in range(cards.count()):
            card = cards.nth(i)
            assert card.locator(".cite-n").inner_text() == f"[{i + 1}]"
            assert card.locator(".title").inner_text() and card.locator(".snippet").inner_text()
            assert card.locator("time").get_attribute("datetime")
    # Sources dated after the model's cutoff are marked, in words; older ones are not.
    ceo = page.locator("#col-rag .source", has_text="Orvan Teel leads Kelvor Dynamics")
    census = page.locator("#col-rag .source", has_text="Nikrai census revised")
    assert "newer than the model" in ceo.inner_text() and "newer" not in census.inner_text()
    assert "Route: rag" in text(page, "#col-auto .route")

    # The taught model cites its passage: the citation links to that source card, and moves the focus to it.
    link = page.locator("#col-rag .answer a.cite").first
    n = link.inner_text().strip("[]")
    assert (
        text(page, "#col-rag .answer").startswith(web.SPAN) and link.get_attribute("href") == f"#src-rag-{n}"
    )
    link.focus()
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == f"src-rag-{n}"
    assert web.SPAN in text(page, f"#src-rag-{n}")

    # Feedback from the keyboard: a rating on rag's answer, then "rag is better than closed_book".
    page.focus("#col-rag .feedback button[data-rating='5']")
    page.keyboard.press("Enter")
    page.wait_for_selector("#col-rag .feedback-status:has-text('Saved as feedback')")
    assert page.get_attribute("#col-rag button[data-rating='5']", "aria-pressed") == "true"
    page.select_option("#prefer-a", "rag")
    page.select_option("#prefer-b", "closed_book")
    page.click("#prefer-form button[type=submit]")
    page.wait_for_selector("#prefer-status:has-text('Saved as feedback')")
    closed_book = text(page, "#col-closed_book .answer")
    store = FeedbackStore(ServiceSettings(home=Path(site.env["KC_HOME"])).resolved_database_url)
    rows = [r for r in store.all() if r.question == web.QUESTION]
    rating = next(r for r in rows if r.kind == "rating")
    assert (rating.rating, rating.strategy, rating.answer) == (5, "rag", f"{web.SPAN} [{n}]")
    assert rating.checkpoint_id == "sft/nano-web" and rating.model == "keepcurrent"
    preference = next(r for r in rows if r.kind == "preference")
    assert (preference.chosen, preference.strategy) == (f"{web.SPAN} [{n}]", "rag")
    assert preference.rejected == closed_book and "closed_book" in (preference.comment or "")

    # An abstention is shown as one, in words.
    web.ask(page, web.UNKNOWN)
    assert page.get_attribute("#col-rag", "data-state") == "abstained"
    assert text(page, "#col-rag .abstained").startswith("Abstained")
    assert text(page, "#col-rag .state") == "Abstained" and text(page, "#col-rag .answer") == ABSTAIN_ANSWER


def test_a_missing_or_wrong_key_is_said(open_page: Any) -> None:
    page = open_page()
    page.wait_for_selector("#key-status.problem")
    page.fill("#question", web.QUESTION)
    page.press("#question", "Enter")
    page.wait_for_selector("#ask-status:has-text('Cannot ask yet')")
    assert page.locator("#columns .column").count() == 0
    web.use_key(page, "wrong-key")
    page.wait_for_selector("#key-status:has-text('refused')")
    assert "invalid API key" in text(page, "#key-status")
    assert page.evaluate("sessionStorage.getItem('keepcurrent.apiKey')") == "wrong-key"  # this tab only
    page.click("#forget-key")
    page.wait_for_selector("#key-status:has-text('needs an API key')")


def test_the_reports_of_the_eval_run(open_page: Any) -> None:
    page = open_page()
    web.use_key(page, web.KEY)
    page.click("#nav-reports")  # a plain link: the gateway sends the page, which fetches with the key
    page.wait_for_selector(f"#reports-view a[href='/reports/{web.RUN_ID}']")
    assert page.get_attribute("#nav-reports", "aria-current") == "page"
    page.click(f"#reports-view a[href='/reports/{web.RUN_ID}']")
    page.wait_for_selector("#reports-view main.report h1")
    assert text(page, "#reports-view h1") == f"keepcurrent eval — {web.RUN_ID}"
    summary = page.locator("#reports-view table").first
    assert [summary.locator("tbody tr").nth(i).locator("td").first.inner_text() for i in range(5)] == list(
        web.STRATEGIES
    )
    assert "[" in summary.locator("tbody tr").first.locator("td").nth(1).inner_text()  # the CI
    headings = page.locator("#reports-view h2").all_inner_texts()
    assert {"Summary", "Accuracy by category [95% CI]", "Accuracy against cost", "Failures"} <= set(headings)
    plot = page.locator("#reports-view img[alt^='Accuracy against tokens']")
    assert plot.evaluate("img => img.complete && img.naturalWidth > 0")
    # A failure with the passages that were in its prompt: long context's (noise) on the CEO question.
    failure = page.locator("#reports-view .failure", has_text="long_context · new").inner_text()
    assert (
        web.QUESTION in failure and "Passages in the prompt, in order" in failure and "post-0007" in failure
    )
    page.goto("/reports/.hidden")
    page.wait_for_selector("#reports-view:has-text('cannot be shown')")
    assert "is not a run id" in text(page, "#reports-view")


def test_a_phone_width_stacks_the_columns(open_page: Any) -> None:
    page = open_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    web.use_key(page, web.KEY)
    web.ask(page, web.QUESTION)
    boxes = [page.locator(f"#col-{name}").bounding_box() for name in web.STRATEGIES]
    assert len({round(b["x"]) for b in boxes}) == 1 and all(b["width"] > 300 for b in boxes)
    assert all(a["y"] < b["y"] for a, b in itertools.pairwise(boxes))
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.focus("#question")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "ask-button"
