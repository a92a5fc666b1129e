"""Every failure becomes one envelope, as OpenAI clients expect: `{"error": {"message", "type", "code"}}`.

Engines and strategies raise `APIError` subclasses; the handlers installed by `install_error_handlers` turn
them, FastAPI's validation errors, Starlette's HTTP errors and any unexpected exception into the envelope.
It also documents the envelope in `/openapi.json` (`ErrorEnvelope`, as every operation's 4XX and 5XX
response, in place of FastAPI's 422, which the gateway never sends: a request it cannot validate is a 400),
so that a client generated from the schema, and schemathesis, know what an error looks like.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.db import database_unreachable, db_error_reason, redact_url

log = logging.getLogger(__name__)


class APIError(Exception):
    """An error with its HTTP status, OpenAI error type and a machine-readable code."""

    status = 500
    type = "server_error"
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.code, self.param)


class BadRequest(APIError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class Unauthorized(APIError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(APIError):
    status = 403
    type = "permission_error"
    code = "forbidden"


class NotFound(APIError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class PayloadTooLarge(APIError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class Overloaded(APIError):
    """The queue is full: come back later (429 with Retry-After), rather than wait without bound."""

    status = 429
    type = "rate_limit_error"
    code = "queue_full"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class EngineUnavailable(APIError):
    status = 503
    type = "server_error"
    code = "engine_unavailable"


def database_unavailable(url: str, e: BaseException) -> EngineUnavailable:
    """A database that cannot answer now, as a 503 naming it (its password hidden) and the driver's reason."""
    return EngineUnavailable(
        f"the database at {redact_url(url)} is unreachable ({db_error_reason(e)}); try again when /readyz "
        "answers 200",
        code="database_unavailable",
    )


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Raise a database that cannot answer as `database_unavailable` inside a block whose errors must reach
    the client as the envelope even in a stream (strategies read the index and documents there)."""
    try:
        yield
    except SQLAlchemyError as e:
        if database_unreachable(e):
            raise database_unavailable(url, e) from e
        raise


class EngineTimeout(APIError):
    status = 504
    type = "server_error"
    code = "engine_timeout"


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "code": code, "param": param}}


def error_response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


_STATUS_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
    422: ("invalid_request_error", "invalid_request"),
    429: ("rate_limit_error", "rate_limited"),
}


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """The first problem, naming the field and what was wrong, plus how many more there are."""
    errors = list(exc.errors())
    if not errors:
        return "the request body is invalid", None
    first = errors[0]
    where = _location(tuple(first.get("loc", ())))
    if first.get("type") == "json_invalid":
        return (
            "the request body is not valid JSON: send a JSON object with Content-Type: application/json",
            None,
        )
    msg = f"{where}: {first.get('msg', 'invalid value')}"
    if len(errors) > 1:
        msg += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return msg, where


ENVELOPE_SCHEMA: dict[str, Any] = {
    "title": "ErrorEnvelope",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {
                "message": {"type": "string", "minLength": 1},
                "type": {"type": "string"},
                "code": {"type": ["string", "null"]},
                "param": {"type": ["string", "null"]},
            },
        }
    },
}
_ERROR_RESPONSES = {
    "4XX": "the request is refused (400 invalid, 401 no or wrong API key, 403, 404, 413 too large, 429 the "
    "queue is full: retry after Retry-After)",
    "5XX": "the gateway could not answer (503 the engine or the index is unreachable, 504 the engine "
    "timed out)",
}


def document_errors(app: FastAPI) -> None:
    """Make `/openapi.json` say what errors look like: the envelope for every operation's 4XX and 5XX."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        ref = {"$ref": "#/components/schemas/ErrorEnvelope"}
        schema.setdefault("components", {}).setdefault("schemas", {})["ErrorEnvelope"] = ENVELOPE_SCHEMA
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                responses = operation.setdefault("responses", {})
                responses.pop("422", None)
                for status in [s for s in responses if s[:1] in ("4", "5")] + list(_ERROR_RESPONSES):
                    entry = responses.setdefault(status, {"description": _ERROR_RESPONSES.get(status, "")})
                    entry["content"] = {"application/json": {"schema": ref}}
        for unused in ("HTTPValidationError", "ValidationError"):
            schema["components"]["schemas"].pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def install_error_handlers(app: FastAPI) -> None:
    document_errors(app)

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(exc)
        return JSONResponse(error_body(message, "invalid_request_error", "invalid_request", param), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_, code = _STATUS_TYPES.get(exc.status_code, ("server_error", "http_error"))
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse(
            error_body(detail, type_, code), status_code=exc.status_code, headers=dict(exc.headers or {})
        )

    @app.exception_handler(SQLAlchemyError)
    async def _database(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        if database_unreachable(exc):  # down or restarting: 503, as for an engine; anything else is a bug
            return error_response(database_unavailable(request.app.state.settings.resolved_database_url, exc))
        return await _unexpected(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        message = f"internal error ({type(exc).__name__}); the gateway log has the details"
        return JSONResponse(error_body(message, "server_error", "internal_error"), status_code=500)
