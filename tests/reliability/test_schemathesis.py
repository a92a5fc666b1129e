"""schemathesis against the gateway's own `/openapi.json`, in process, over every operation, with and
without the API key (issue 24).

Each run is schemathesis's engine, as its CLI runs it (examples, coverage and fuzzing phases; the stateful
phase needs links the schema does not have), against the app built by `create_app` on the nano checkpoint.
What must hold for every generated request:

- no 5xx (`not_a_server_error`);
- every response is documented and conforms to the schema: status code, content type, headers, body
  (`status_code_conformance`, `content_type_conformance`, `response_headers_conformance`,
  `response_schema_conformance`; the errors are documented as the envelope, service/errors.py);
- every 4xx is the error envelope with a message (`error_envelope`, below), and without the key no
  operation but the health checks answers 2xx (`refused_without_key`);
- a request the schema allows is answered (`positive_data_acceptance`), 400 counting as answered: the
  gateway also checks what a schema cannot state (KC_MAX_TOKENS_LIMIT, the model's window, exactly one
  of `prompt` or `messages`).

Left out: `negative_data_rejection`, because the wire schemas are lenient on purpose, as OpenAI-compatible
servers are (unknown fields are ignored, pydantic's lax mode takes "true" for a boolean), so a request the
schema forbids may be answered. The number of generated cases is printed and recorded as a property.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse
from gateway_support import make_app, write_docs
from pydantic import SecretStr
from reliability_support import API_KEY, AUTH, OPEN_PATHS, indexed_settings
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import from_schema
from schemathesis.engine.events import FatalError, NonFatalError, ScenarioFinished
from schemathesis.engine.statistic import Statistic
from schemathesis.python import asgi

# Per operation and phase; the nano model answers in milliseconds, so a run over every operation takes
# seconds. Fixed seed: CI reruns the same cases.
MAX_EXAMPLES = 60
SEED = 24


def _has_key(response: schemathesis.Response) -> bool:
    return response.request.headers.get("Authorization") == AUTH["Authorization"]


@schemathesis.check
def error_envelope(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> bool | None:
    """Every 4xx and 5xx is `{"error": {"message", "type", "code"}}` with a non-empty message."""
    if response.status_code < 400:
        return None
    try:
        error = json.loads(response.content)["error"]
    except (ValueError, KeyError, TypeError):
        raise AssertionError(
            f"{response.status_code} is not the error envelope: {response.content[:200]!r}"
        ) from None
    if not (
        isinstance(error.get("message"), str) and error["message"] and isinstance(error.get("type"), str)
    ):
        raise AssertionError(f"{response.status_code}: incomplete envelope {error!r}")
    if "code" not in error:
        raise AssertionError(f"{response.status_code}: envelope without a code {error!r}")
    return None


@schemathesis.check
def refused_without_key(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> bool | None:
    """With KC_API_KEY set, a request without the key gets nothing but the health checks."""
    keyed = getattr(case.operation.schema, "app_has_key", False)
    if keyed and not _has_key(response) and case.path not in OPEN_PATHS and response.status_code < 400:
        raise AssertionError(f"{case.method} {case.path} answered {response.status_code} without the API key")
    return None


def run_schemathesis(app: FastAPI, headers: dict[str, str], app_has_key: bool) -> tuple[Statistic, list[str]]:
    """One schemathesis run over every operation; the statistics and the engine's errors."""
    config = SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "headers": headers,
            "continue-on-failure": True,
            "generation": {"max-examples": MAX_EXAMPLES},
            "phases": {"stateful": {"enabled": False}},
            "checks": {
                "negative_data_rejection": {"enabled": False},
                "positive_data_acceptance": {"expected-statuses": ["2XX", 400, 401, 403, 404, 429]},
            },
        }
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    schema.app_has_key = app_has_key  # type: ignore[attr-defined]
    statistic = Statistic()
    errors: list[str] = []
    try:
        for event in from_schema(schema).execute():
            if isinstance(event, ScenarioFinished) and event.is_test_scenario:
                statistic.on_scenario_finished(event.recorder)
            elif isinstance(event, FatalError | NonFatalError):
                errors.append(f"{type(event).__name__}: {getattr(event, 'info', None) or event}")
    finally:
        asgi.shutdown_lifespans()  # the engine started the app's lifespan: stop its engine threads
    return statistic, errors


def failures(statistic: Statistic) -> list[str]:
    out = []
    for label, groups in statistic.failures.items():
        for group in groups.values():
            for failure in group.failures:
                out.append(f"{label}: {failure.title}: {failure.message}\n{group.code_sample or ''}")
    return out


RUNS = {
    "with the key": (True, AUTH),
    "without the key": (True, {}),
    "with a wrong key": (True, {"Authorization": "Bearer not-the-key"}),
    "no key configured": (False, {}),
}


@pytest.mark.slow  # about 40 s a run on 2 cores
@pytest.mark.parametrize("run", list(RUNS))
def test_schemathesis_finds_no_failures(
    run: str,
    kc_home: Any,
    nano_model: Any,
    embedder: Any,
    tmp_path: Any,
    record_property: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    app_has_key, headers = RUNS[run]
    extra = {"api_key": SecretStr(API_KEY)} if app_has_key else {}
    settings = indexed_settings(kc_home, nano_model, embedder, write_docs(tmp_path / "docs"), **extra)
    app = make_app(settings, embedder)
    operations = {f"{m.upper()} {p}" for p, ops in app.openapi()["paths"].items() for m in ops}

    statistic, errors = run_schemathesis(app, headers, app_has_key)

    record_property("schemathesis_cases", statistic.total_cases)
    with capsys.disabled():
        print(
            f"\nschemathesis ({run}): {statistic.total_cases} generated cases over "
            f"{len(statistic.tested_operations)} operations, {statistic.total_failures} failures"
        )
    assert not errors, errors
    assert not failures(statistic), "\n\n".join(failures(statistic))
    assert statistic.tested_operations == operations, operations - statistic.tested_operations
    # Every operation got more than its examples: the coverage and fuzzing phases ran.
    assert statistic.total_cases >= 10 * len(operations), statistic.total_cases


def test_the_checks_catch_what_they_are_for() -> None:
    """The same harness on a small app that breaks each rule once: a 5xx, a 4xx outside the envelope, an
    answer without the key. Each is reported, so a clean run of the gateway means something."""
    app = FastAPI()

    @app.get("/crash")
    def crash() -> JSONResponse:
        return JSONResponse({"detail": "boom"}, status_code=500)

    @app.get("/plain", responses={400: {"content": {"text/plain": {}}}})
    def plain() -> PlainTextResponse:
        return PlainTextResponse("no envelope", status_code=400)

    @app.get("/leaky")
    def leaky() -> dict[str, str]:
        return {"secret": "served without a key"}

    statistic, errors = run_schemathesis(app, {}, app_has_key=True)
    assert not errors, errors
    found = "\n".join(failures(statistic))
    assert "GET /crash: Server error" in found, found
    assert "GET /plain: Custom check failed: `error_envelope`" in found, found
    assert "GET /leaky: Custom check failed: `refused_without_key`" in found, found
