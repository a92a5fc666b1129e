"""The gateway against hostile clients (issue 24): keys, body and window limits, logs, paths, headers.

- every admin route, and every route but the health checks, refuses a request without the key (401 in
  the envelope); keys are compared with `hmac.compare_digest`;
- neither the key nor document text reaches the logs at INFO;
- a body over KC_MAX_BODY_BYTES gets 413 before anything parses it; a question longer than the model's
  window gets a 4xx that names the limit;
- a path a request names (`/reports/{run_id}`) cannot leave KC_HOME (`service.security.path_under`);
- fuzzed headers and query strings never get a 5xx, and every 4xx is the envelope.
"""

from __future__ import annotations

import hmac
import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from gateway_support import DOCS, make_app, write_docs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from reliability_support import API_KEY, AUTH, OPEN_PATHS, indexed_settings

from service.errors import NotFound
from service.security import BodyLimitMiddleware, path_under
from service.settings import ServiceSettings


def envelope(response: Any, status: int | None = None) -> dict[str, Any]:
    """The error of an envelope response (checked to be one)."""
    if status is not None:
        assert response.status_code == status, (response.status_code, response.text)
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    error: dict[str, Any] = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and "code" in error
    return error


def operations(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path) of every operation the OpenAPI schema lists."""
    return [(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops]


def route_paths(routes: list[Any]) -> list[str]:
    """The path templates of every route, those of included routers too (schema or not)."""
    out: list[str] = []
    for route in routes:
        if isinstance(getattr(route, "path", None), str):
            out.append(route.path)
        inner = getattr(getattr(route, "original_router", None), "routes", None) or getattr(
            route, "routes", None
        )
        if inner:
            out += route_paths(list(inner))
    return out


def call(client: TestClient, method: str, path: str, **kwargs: Any) -> Any:
    if method == "POST":
        kwargs.setdefault("json", {})
    return client.request(method, path, **kwargs)


# -- keys --------------------------------------------------------------------------------------------


def test_every_admin_route_requires_the_key(
    keyed_client: TestClient, keyed: ServiceSettings, embedder: Any
) -> None:
    admin = [(m, p) for m, p in operations(keyed_client.app) if p.startswith("/admin")]  # type: ignore[arg-type]
    assert admin, "no admin routes: the test would check nothing"
    for method, path in admin:
        missing = envelope(call(keyed_client, method, path), 401)
        assert missing["code"] == "missing_api_key"
        wrong = call(keyed_client, method, path, headers={"Authorization": "Bearer nope"})
        assert envelope(wrong, 401)["code"] == "invalid_api_key"
        assert wrong.headers["WWW-Authenticate"] == "Bearer"
        # Not even a body that cannot be parsed tells an unauthenticated client more than 401 or 400.
        assert call(keyed_client, method, path, json=None, content=b"{").status_code in (400, 401)
    open_settings = keyed.model_copy(update={"api_key": None})
    with TestClient(make_app(open_settings, embedder)) as client:
        for method, path in admin:  # without KC_API_KEY the admin routes are off, even with a header
            error = envelope(call(client, method, path, headers=AUTH), 403)
            assert error["code"] == "admin_disabled"


def test_every_route_but_the_health_checks_requires_the_key(keyed_client: TestClient) -> None:
    ops = operations(keyed_client.app)  # type: ignore[arg-type]
    keyed = [(m, p) for m, p in ops if p not in OPEN_PATHS]
    assert len(keyed) >= 6, ops
    for method, path in keyed:
        assert envelope(call(keyed_client, method, path), 401)["code"] == "missing_api_key", path
        for header in (f"Basic {API_KEY}", f"Bearer {API_KEY[:-1]}", f"Bearer {API_KEY}x", "Bearer", API_KEY):
            response = call(keyed_client, method, path, headers={"Authorization": header})
            assert envelope(response, 401), (path, header)
    for path in OPEN_PATHS:
        assert keyed_client.get(path).status_code == 200
    assert keyed_client.get("/v1/models", headers=AUTH).status_code == 200


def test_keys_are_compared_in_constant_time(
    keyed_client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every key a client sends goes through hmac.compare_digest, whatever its length or prefix."""
    seen: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        seen.append((a, b))
        return compare(a, b)

    monkeypatch.setattr("service.security.hmac.compare_digest", spy)
    tries = {"x": 401, API_KEY[:4]: 401, API_KEY + "0": 401, API_KEY.upper(): 401, API_KEY: 200}
    for key, status in tries.items():
        assert (
            keyed_client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == status
        )
    assert [given for given, _ in seen] == [key.encode() for key in tries]
    assert {expected for _, expected in seen} == {API_KEY.encode()}


# -- logs --------------------------------------------------------------------------------------------


def test_no_key_and_no_document_text_in_the_logs(
    kc_home: Path, nano_model: Path, embedder: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    settings = indexed_settings(
        kc_home, nano_model, embedder, write_docs(tmp_path / "docs"), api_key=SecretStr(API_KEY)
    )
    wrong = "kc-wrong-key-0d9e8f7a"
    with TestClient(make_app(settings, embedder)) as client:
        for strategy in ("closed_book", "rag", "long_context", "compare"):
            body = {"question": "Who became the chief executive of Kelvor Dynamics?", "strategy": strategy}
            assert client.post("/ask", json=body, headers=AUTH).status_code == 200
        chat = {
            "model": "keepcurrent",
            "messages": [{"role": "user", "content": "Who leads Kelvor?"}],
            "strategy": "rag",
        }
        assert client.post("/v1/chat/completions", json=chat, headers=AUTH).status_code == 200
        assert client.post("/tokenize", json={"prompt": DOCS["ceo.md"][3]}, headers=AUTH).status_code == 200
        assert client.get("/v1/models", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
        assert client.post("/ask", json={"question": "x" * 30_000}, headers=AUTH).status_code == 400
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "gateway ready" in logged  # the capture works: the gateway's INFO lines are here
    assert API_KEY not in logged and wrong not in logged
    for _, _, _, text in DOCS.values():
        for sentence in text.split(". "):
            assert sentence.strip(". ") not in logged, sentence


# -- body and window limits --------------------------------------------------------------------------


async def _spy_app(scope: Any, receive: Any, send: Any) -> None:
    _spy_app.bodies.append(await receive())  # type: ignore[attr-defined]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize("chunked", [False, True])
def test_oversized_bodies_get_413_before_the_app_reads_them(chunked: bool) -> None:
    _spy_app.bodies = []  # type: ignore[attr-defined]
    client = TestClient(BodyLimitMiddleware(_spy_app, max_bytes=1024))  # type: ignore[arg-type]
    big = b"{" * 4096  # not JSON: a parser would have said 400

    def chunks() -> Any:
        for i in range(0, len(big), 512):
            yield big[i : i + 512]

    response = client.post("/ask", content=chunks() if chunked else big)
    assert envelope(response, 413)["code"] == "request_too_large"
    assert "1024" in response.json()["error"]["message"]
    assert _spy_app.bodies == []  # type: ignore[attr-defined]
    small = client.post("/ask", content=b"{" * 1000)  # within the limit: passed on whole
    assert small.status_code == 200 and len(_spy_app.bodies) == 1  # type: ignore[attr-defined]


def test_a_bad_content_length_is_400() -> None:
    _spy_app.bodies = []  # type: ignore[attr-defined]
    client = TestClient(BodyLimitMiddleware(_spy_app, max_bytes=1024))  # type: ignore[arg-type]
    for value in ("abc", "-1", "1e3", ""):
        response = client.post("/ask", content=b"{}", headers={"Content-Length": value})
        assert envelope(response, 400)["code"] == "invalid_content_length", value
    assert _spy_app.bodies == []  # type: ignore[attr-defined]


def test_oversized_bodies_get_413_on_every_route(keyed: ServiceSettings, embedder: Any) -> None:
    small = keyed.model_copy(update={"max_body_bytes": 2048})
    with TestClient(make_app(small, embedder)) as client:
        for method, path in operations(client.app):  # type: ignore[arg-type]
            response = client.request(method, path, content=b"[" * 4096, headers=AUTH)
            assert envelope(response, 413)["code"] == "request_too_large", path


def test_a_question_longer_than_the_window_is_a_4xx_naming_the_limit(keyed_client: TestClient) -> None:
    window = next(m["max_model_len"] for m in keyed_client.get("/v1/models", headers=AUTH).json()["data"])
    question = "Who leads Kelvor Dynamics"
    while keyed_client.post("/tokenize", json={"prompt": question}, headers=AUTH).json()["count"] <= window:
        question += " and which city hosts the Dapaik Fair"
    assert len(question) < 20_000  # under the request schema's own limit: the window refuses it
    for strategy in ("closed_book", "rag", "long_context", "auto"):
        response = keyed_client.post("/ask", json={"question": question, "strategy": strategy}, headers=AUTH)
        message = envelope(response, 400)["message"]
        assert str(window) in message and "window" in message, (strategy, message)
    # compare answers 200 with each strategy's own error in its place
    compare = keyed_client.post("/ask", json={"question": question, "strategy": "compare"}, headers=AUTH)
    answers = compare.json()["answers"]
    assert compare.status_code == 200 and {"closed_book", "rag", "long_context"} <= set(answers)
    for strategy in ("closed_book", "rag", "long_context"):
        message = answers[strategy]["error"]["message"]
        assert str(window) in message and "window" in message, (strategy, message)
    chat = {"model": "keepcurrent", "messages": [{"role": "user", "content": question}]}
    message = envelope(keyed_client.post("/v1/chat/completions", json=chat, headers=AUTH), 400)["message"]
    assert str(window) in message and "window" in message


# -- paths -------------------------------------------------------------------------------------------


def test_path_under_keeps_names_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "home" / "reports"
    (root / "run-1").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    assert path_under(root, "run-1") == (root / "run-1").resolve()
    assert path_under(root, "run-1", "report.html") == (root / "run-1" / "report.html").resolve()
    hostile = ["..", ".", "", "../outside", "/etc/passwd", "run-1/../..", "a\\..\\..", "run-1\x00", "escape"]
    for name in hostile:
        with pytest.raises(NotFound):
            path_under(root, name)
    with pytest.raises(NotFound):
        path_under(root, "run-1", "..")
    with pytest.raises(NotFound):
        path_under(root)


TRAVERSALS = [
    "..", "..%2F..%2Fkeepcurrent.db", "%2e%2e", "%2e%2e%2f%2e%2e%2fsecret.txt", "..%5C..%5Csecret.txt",
    "%2Fetc%2Fpasswd", "escape", "escape%2Freport.html", "run-1%00", "....%2F%2F....%2F%2Fsecret.txt",
]  # fmt: skip


def test_report_ids_cannot_leave_kc_home(keyed: ServiceSettings, embedder: Any, tmp_path: Path) -> None:
    """`GET /reports/{run_id}` (service/routes/web.py) serves a run's report and nothing outside KC_HOME."""
    app = make_app(keyed, embedder)
    templates = [p for p in route_paths(app.routes) if p.startswith("/reports/{")]
    if not templates:
        pytest.skip("no /reports/{run_id} route in this gateway")
    secret = "TOP-SECRET-3c1f"
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("report.html", "report.md", "summary.json", "secret.txt"):
        (outside / name).write_text(f"{secret} {name}")
    (keyed.resolved_home / "secret.txt").write_text(secret)  # in KC_HOME, but not a report
    reports = keyed.resolved_home / "reports"
    good = reports / "run-1"
    good.mkdir(parents=True)
    for name in ("report.html", "report.md", "summary.json"):
        (good / name).write_text("{}" if name.endswith(".json") else "the report of run-1")
    (good / "results.jsonl").write_text("")
    (reports / "escape").symlink_to(outside, target_is_directory=True)
    with TestClient(app) as client:
        status, body = raw_get(client, "/reports/run-1")
        assert status < 500, body
        for template in templates:
            for attack in TRAVERSALS:
                url = template.replace("{run_id}", attack)
                url = url.split("{", 1)[0].rstrip("/") if "{" in url else url
                status, body = raw_get(client, url)
                assert status in (400, 404), (url, status, body[:200])
                assert secret.encode() not in body, url
                assert "error" in json.loads(body), url


def raw_get(client: TestClient, raw_path: str) -> tuple[int, bytes]:
    """GET `raw_path` as a server hands it to the app: not normalised ('..' stays), percent-decoded into
    `path` as uvicorn does. (An HTTP client would resolve the dot segments before sending.)"""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": unquote(raw_path), "raw_path": raw_path.encode(), "root_path": "", "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"authorization", AUTH["Authorization"].encode())],
        "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
    }  # fmt: skip
    assert client.portal is not None  # inside `with TestClient(app)`: the app's lifespan has run
    client.portal.call(client.app, scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


# -- headers and query strings -------------------------------------------------------------------------

HEADER_NAMES = [
    "authorization", "content-type", "content-length", "accept", "accept-encoding", "transfer-encoding",
    "host", "x-forwarded-for", "cookie", "range", "expect", "connection", "user-agent", "x-request-id",
]  # fmt: skip
latin1 = st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"), max_size=40)
header_names = st.sampled_from(HEADER_NAMES) | st.from_regex(
    r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}", fullmatch=True
)
headers = st.dictionaries(header_names, latin1, max_size=6)
queries = st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=5)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(data=st.data(), extra=headers, query=queries, with_key=st.booleans())
def test_fuzzed_headers_and_query_strings(
    keyed_client: TestClient,
    data: st.DataObject,
    extra: dict[str, str],
    query: dict[str, str],
    with_key: bool,
) -> None:
    method, path = data.draw(st.sampled_from(operations(keyed_client.app)))  # type: ignore[arg-type]
    sent = {k.encode("latin-1"): v.encode("latin-1") for k, v in extra.items()}
    if with_key and b"authorization" not in {k.lower() for k in sent}:
        sent[b"authorization"] = AUTH["Authorization"].encode()
    body = b'{"question": "Who leads Kelvor Dynamics?", "messages": [{"role": "user", "content": "hi"}]}'
    response = keyed_client.request(
        method, path, params=query, content=body if method == "POST" else None, headers=list(sent.items())
    )
    assert response.status_code < 500, (method, path, extra, response.text)
    if response.status_code >= 400:
        envelope(response)
