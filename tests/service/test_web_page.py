"""The web page's routes in-process (service/routes/web.py): the page and its assets, `/web/config`, the
report pages drawn by the renderer that writes report.html (service/report_pages.py), run ids that must
not leave $KC_HOME/reports, and the API key. The page itself is driven in a browser by
tests/browser/test_browser.py."""

from __future__ import annotations

import fnmatch
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from gateway_support import REPO, make_app
from pydantic import SecretStr

from eval.report import ResultRow, write_report
from service.api_schemas import STRATEGIES
from service.app import create_app
from service.settings import ServiceSettings

STATIC = REPO / "service" / "static"
KEY = "kc-web-secret-42"
NAVIGATE = {"Sec-Fetch-Mode": "navigate", "Accept": "text/html,application/xhtml+xml"}


def envelope(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"] and error["type"] and (code is None or error["code"] == code), error
    return dict(error)


def pages(settings: ServiceSettings) -> TestClient:
    """The app without its lifespan: the page and the reports need only the settings, no engine."""
    return TestClient(create_app(settings))


def row(strategy: str, qid: str, correct: bool, **extra: Any) -> ResultRow:
    category = extra.pop("category", "new")
    return ResultRow(
        question_id=qid, category=category, question=f"Question {qid}?", strategy=strategy,
        answer=extra.pop("answer", "Orvan Teel [1]" if correct else "Sta Ind"), correct=correct,
        exact_match=correct, f1=float(correct), abstained=extra.pop("abstained", False), stale=False,
        answers=["Orvan Teel"], prompt_tokens=extra.pop("prompt_tokens", 20), completion_tokens=4,
        generate_ms=50.0, **extra,
    )  # fmt: skip


def write_run(home: Path, run_id: str) -> Path:
    """A run as `python -m eval run` leaves it: results.jsonl, then write_report's files."""
    cited = {"n": 1, "doc_id": "d7", "source": "post-0007", "title": "Orvan Teel leads Kelvor Dynamics",
             "date": "2025-03-14", "chunk_id": 3, "score": 0.8}  # fmt: skip
    rows = [
        row("closed_book", "q1", False), row("closed_book", "q2", False),
        row("closed_book", "q3", True, category="unanswerable", abstained=True),
        row("rag", "q1", True, retrieved=["post-0007", "post-0002"], citations=[cited], prompt_tokens=300),
        row("rag", "q2", False, answer="Korme [1]", retrieved=["post-0002", "post-0007"],
            citations=[{**cited, "source": "post-0002", "title": "Korme hosts the Dapaik Fair"}],
            prompt_tokens=300),
        row("rag", "q3", True, category="unanswerable", abstained=True, prompt_tokens=300),
        row("long_context", "q1", True, answer_position=0.0, prompt_tokens=900),
        row("long_context", "q2", False, answer_position=1.0, prompt_tokens=900),
        row("long_context", "q3", False, category="unanswerable", prompt_tokens=900),
    ]  # fmt: skip
    folder = home / "reports" / run_id
    folder.mkdir(parents=True)
    (folder / "results.jsonl").write_text("".join(r.model_dump_json() + "\n" for r in rows))
    write_report(folder, rows, {"run_id": run_id, "model": "nano", "index_version": 2})
    return folder


def test_the_page_and_its_assets_come_from_the_gateway_alone(service_settings: ServiceSettings) -> None:
    client = pages(service_settings.model_copy(update={"api_key": SecretStr(KEY)}))
    page = client.get("/")  # no key: the page holds no data, and asks for the key itself
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/page.js" defer></script>' in page.text and 'id="ask-form"' in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    js, css = client.get("/static/page.js"), client.get("/static/page.css")
    assert js.status_code == css.status_code == 200
    assert js.headers["content-type"].startswith("text/javascript") and css.headers[
        "content-type"
    ].startswith("text/css")
    for text in (page.text, js.text, css.text):  # nothing from another host: no absolute URL, no @import
        assert not re.search(r"(https?:)?//[a-z0-9]", text, re.IGNORECASE) and "@import" not in text
    assert "localStorage" not in js.text and "sessionStorage" in js.text  # the key: this tab only
    envelope(client.get("/static/app.py"), 404, "not_found")
    envelope(client.get("/static/..%2Fapp.py"), 404)
    total = sum(len(p.read_text().splitlines()) for p in STATIC.iterdir())
    assert total <= 600, f"the page has {total} lines of HTML, JS and CSS (issue 23: under ~600)"


def test_the_assets_ship_in_the_package() -> None:
    from setuptools.config.pyprojecttoml import read_configuration

    patterns = read_configuration(REPO / "pyproject.toml")["tool"]["setuptools"]["package-data"]["service"]
    for asset in STATIC.iterdir():
        relative = asset.relative_to(REPO / "service").as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), f"{relative} is not package data"


def test_web_config_needs_the_key_and_says_the_cutoff(indexed: ServiceSettings, embedder: Any) -> None:
    settings = indexed.model_copy(update={"api_key": SecretStr(KEY), "auto_cutoff": "2025-03-01"})
    with TestClient(make_app(settings, embedder)) as client:
        envelope(client.get("/web/config"), 401, "missing_api_key")
        envelope(client.get("/web/config", headers={"Authorization": "Bearer nope"}), 401, "invalid_api_key")
        config = client.get("/web/config", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert config["strategies"] == list(STRATEGIES) and config["cutoff"] == "2025-03-01"
    assert config["models"] == [{"name": "keepcurrent", "role": "chat", "checkpoint_id": "sft/nano-service"}]


def _summary_table(page: str) -> str:
    match = re.search(r"<h2>Summary</h2>(.*?</table></div>)", page)
    assert match, "no summary table"
    return match.group(1)


def test_report_pages_are_report_html_from_the_same_renderer(service_settings: ServiceSettings) -> None:
    home = service_settings.resolved_home
    folder = write_run(home, "r1")
    (home / "reports" / "r2-running").mkdir()  # a run that has not written its summary yet
    ((home / "reports" / "r2-running") / "results.jsonl").write_text("")
    client = pages(service_settings)

    listing = client.get("/reports")
    assert listing.status_code == 200 and listing.headers["cache-control"] == "no-store"
    assert (
        '<a href="/reports/r1">r1</a>' in listing.text and "r2-running (no summary.json yet" in listing.text
    )
    assert "rag 0.67 [" in listing.text  # accuracy with its CI, from summary.json

    page = client.get("/reports/r1").text
    on_disk = (folder / "report.html").read_text()
    assert _summary_table(page) == _summary_table(on_disk)  # one renderer: the CLI's page and the gateway's
    assert "<th>truthfulness [95% CI]</th>" in page and "<script" not in page
    assert "<h2>Accuracy by category [95% CI]</h2>" in page and "0.67 [" in page
    assert page.count("data:image/png;base64,") == on_disk.count("data:image/png;base64,") == 3
    assert "<h2>Accuracy against cost</h2>" in page
    # The failures, with the passages that were in the prompt (the cited one with its title and number).
    failures = page[page.index("<h2>Failures</h2>") :]
    assert "5 wrong answers of 9" in failures and "Question q2?" in failures
    assert "<code>post-0002</code> — Korme hosts the Dapaik Fair (2025-03-14), cited as [1]" in failures
    assert '<nav aria-label="Pages"><a href="/">Ask</a>' in page and "<nav" not in on_disk
    assert "Published context" in on_disk and "Published context" not in page  # eval's own section
    md = (folder / "report.md").read_text()
    assert "| rag | 0.67 [" in md and "<td>rag</td><td>0.67 [" in page  # the same cells, as Markdown

    # Drawn from summary.json as it is now, not from report.html.
    full = json.loads((folder / "summary.json").read_text())
    full["strategies"]["rag"]["accuracy"] = {"value": 0.12, "ci95": [0.01, 0.34], "n": 3}
    (folder / "summary.json").write_text(json.dumps(full))
    assert "<td>rag</td><td>0.12 [0.01, 0.34]</td>" in client.get("/reports/r1").text


RUN_NOT_FOUND = "run_not_found"  # the id reached run_dir; "not_found": no route takes a path with a "/"


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/reports/...", RUN_NOT_FOUND), ("/reports/.hidden", RUN_NOT_FOUND),
        ("/reports/%2e%2e", RUN_NOT_FOUND), ("/reports/a%5Cb", RUN_NOT_FOUND),
        ("/reports/" + "x" * 300, RUN_NOT_FOUND),
        ("/reports/nope", RUN_NOT_FOUND), ("/reports/outside", RUN_NOT_FOUND),
        ("/reports/r2-running", RUN_NOT_FOUND), ("/reports/..%2F..%2Fkeepcurrent.db", "not_found"),
        ("/reports/r1/results.jsonl", "not_found"),
    ],
)  # fmt: skip
def test_a_bad_run_id_gets_a_404_envelope(service_settings: ServiceSettings, path: str, code: str) -> None:
    home = service_settings.resolved_home
    write_run(home, "r1")
    (home / "reports" / "r2-running").mkdir()
    elsewhere = write_run(home.parent / "elsewhere", "kept-out")
    (home / "reports" / "outside").symlink_to(elsewhere)  # a folder that resolves out of reports/
    response = pages(service_settings).get(path)
    error = envelope(response, 404, code)
    assert "kept-out" not in response.text and str(home) not in error["message"]
    listing = pages(service_settings).get("/reports").text
    assert "r1" in listing and "outside" not in listing and "kept-out" not in listing


def test_an_unreadable_summary_is_the_servers_error(service_settings: ServiceSettings) -> None:
    folder = write_run(service_settings.resolved_home, "r1")
    (folder / "summary.json").write_text("{not json")
    envelope(pages(service_settings).get("/reports/r1"), 500, "report_unreadable")
    assert "r1 (summary.json unreadable" in pages(service_settings).get("/reports").text


def test_reports_need_the_key_and_a_browser_gets_the_page_that_asks_for_it(
    service_settings: ServiceSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    write_run(service_settings.resolved_home, "r1")
    client = pages(service_settings.model_copy(update={"api_key": SecretStr(KEY)}))
    for path in ("/reports", "/reports/r1"):
        envelope(client.get(path), 401, "missing_api_key")
        shell = client.get(path, headers=NAVIGATE)  # the address bar sends no header: the page asks for it
        assert shell.status_code == 200 and 'id="reports-view"' in shell.text and "r1" not in shell.text
        wrong = {**NAVIGATE, "Authorization": "Bearer nope"}
        envelope(client.get(path, headers=wrong), 401, "invalid_api_key")
        shown = client.get(path, headers={"Authorization": f"Bearer {KEY}"})
        assert shown.status_code == 200 and "keepcurrent eval" in shown.text
    assert KEY not in caplog.text


def test_eval_writes_html_only_through_the_renderer() -> None:
    source = (REPO / "eval" / "report.py").read_text()
    assert "<table" not in source and "<html" not in source and "matplotlib" not in source
