"""API keys and request limits.

- `require_api_key`: when `KC_API_KEY` is set, every route but the health checks wants
  `Authorization: Bearer <key>`, compared in constant time. The key is never logged or echoed.
- `BodyLimitMiddleware`: bodies over `KC_MAX_BODY_BYTES` get 413 before any parsing.
- `resolve_max_tokens` and `check_messages`: the per-request limits on generation and message count.
  Prompt length is checked in tokens by the engine (the model's window and `KC_MAX_PROMPT_TOKENS`).
- `path_under`: a file a request names (a report id, a source) as a path that cannot leave its root
  under `KC_HOME`.
"""

from __future__ import annotations

import hmac
import json
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import APIError, BadRequest, NotFound, PayloadTooLarge, Unauthorized
from service.settings import ServiceSettings


def get_settings(request: Request) -> ServiceSettings:
    settings: ServiceSettings = request.app.state.settings
    return settings


SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]


async def require_api_key(request: Request, settings: SettingsDep) -> None:
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    challenge = {"WWW-Authenticate": "Bearer"}
    if scheme.lower() != "bearer" or not given.strip():
        raise Unauthorized(
            "missing API key: send the header 'Authorization: Bearer <key>' (the key is KC_API_KEY)",
            code="missing_api_key",
            headers=challenge,
        )
    if not hmac.compare_digest(given.strip().encode(), expected):
        raise Unauthorized("invalid API key", headers=challenge)


ApiKey = Depends(require_api_key)


def resolve_max_tokens(settings: ServiceSettings, *asked: int | None) -> int:
    """The first `max_tokens` given, else the default; never above `KC_MAX_TOKENS_LIMIT`."""
    default = min(settings.default_max_tokens, settings.max_tokens_limit)
    value = next((a for a in asked if a is not None), default)
    if value > settings.max_tokens_limit:
        raise BadRequest(
            f"max_tokens={value} is above this gateway's limit of {settings.max_tokens_limit} "
            "(KC_MAX_TOKENS_LIMIT)",
            param="max_tokens",
        )
    return value


def check_messages(settings: ServiceSettings, count: int) -> None:
    if count > settings.max_messages:
        raise BadRequest(
            f"{count} messages is more than this gateway's limit of {settings.max_messages} "
            "(KC_MAX_MESSAGES)",
            param="messages",
        )


def path_under(root: Path, *names: str, what: str = "file") -> Path:
    """`root/names...` for names a request gave, refused with 404 unless the path stays inside `root`.

    Each name is one path component: empty, ".", "..", a separator or a NUL is refused before the file
    system is asked, and the resolved path (symbolic links followed) must still lie under the resolved
    root, so that no request reads outside `KC_HOME`. The 404 does not say which rule refused it."""
    refused = NotFound(f"no such {what}", code=f"{what.replace(' ', '_')}_not_found")
    if not names or any(name in ("", ".", "..") or any(c in name for c in "/\\\x00") for name in names):
        raise refused
    base = root.resolve()
    path = base.joinpath(*names).resolve()
    if not path.is_relative_to(base) or path == base:
        raise refused
    return path


class BodyLimitMiddleware:
    """Refuse request bodies larger than `max_bytes` with 413 and the error envelope.

    Content-Length is checked first; a chunked body is counted as it arrives, and buffered (it is at
    most `max_bytes`) so that the limit holds before the app reads any of it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and not declared.isdigit():
            bad = BadRequest(
                "the Content-Length header is not a number of bytes", code="invalid_content_length"
            )
            await self._send_error(send, bad)
            return
        if declared is not None and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        replay = iter(messages)

        async def replayed() -> Message:
            try:
                return next(replay)
            except StopIteration:
                return await receive()

        await self.app(scope, replayed, send)

    async def _refuse(self, send: Send) -> None:
        err = PayloadTooLarge(f"the request body is larger than {self.max_bytes} bytes (KC_MAX_BODY_BYTES)")
        await self._send_error(send, err)

    @staticmethod
    async def _send_error(send: Send, err: APIError) -> None:
        body = json.dumps(err.body()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": err.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
