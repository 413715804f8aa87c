"""Request limits and error answers that hold whatever a client sends."""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """Refuses a request body larger than ``limit`` bytes with 413, before it is read whole.

    Written by hand: FastAPI's own ``max_body_size`` answers a bare ``Content Too Large`` in
    plain text, while every other refusal of this API is JSON that says what to do. A
    declared Content-Length is checked at once; a body without one (chunked) is read here up
    to the limit and handed on.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._refuse(send, 400, "Content-Length is not a number")
                    return
                if declared > self.limit:
                    await self._refuse(send, 413, self._too_large())
                    return
        if any(name == b"content-length" for name, _ in scope.get("headers", [])):
            await self.app(scope, receive, send)  # declared, and within the limit
            return
        # No declared length (chunked): read it here, up to the limit, then hand it on.
        chunks: list[Message] = []
        seen = 0
        while True:
            message = await receive()
            chunks.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > self.limit:
                await self._refuse(send, 413, self._too_large())
                return
            if not message.get("more_body", False):
                break
        replay = iter(chunks)

        async def replayed() -> Message:
            return next(replay, None) or await receive()

        await self.app(scope, replayed, send)

    def _too_large(self) -> str:
        return (
            f"the request body is larger than {self.limit:,} bytes "
            "(CLIENTELA_MAX_BODY_BYTES); send less per request"
        )

    @staticmethod
    async def _refuse(send: Send, status: int, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def printable(value: Any) -> Any:
    """A value any JSON encoder can write: lone surrogates escaped, NaN and infinities as
    text, anything else as its text."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, bool | int) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {printable(str(k)): printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [printable(v) for v in value]
    return printable(str(value))


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 naming each field: ``{"detail": [{"loc", "msg", "type", "field"}]}``.

    FastAPI's own handler echoes the input, which fails to render for NaN or a lone
    surrogate; this one writes only what can be written.
    """
    assert isinstance(exc, RequestValidationError)
    tags: set[str] = getattr(request.app.state, "union_tags", set())
    detail = []
    for error in exc.errors():
        loc = list(error.get("loc", ()))
        if loc[:1] == ["body"]:  # the field as the client wrote it: no "body", no union tag
            loc = loc[2:] if len(loc) > 2 and loc[1] in tags else loc[1:]
        elif len(loc) > 1:
            loc = loc[1:]
        item = {
            "loc": printable(list(error.get("loc", ()))),
            "field": printable(".".join(str(p) for p in loc)),
            "msg": printable(str(error.get("msg", "")).removeprefix("Value error, ")),
            "type": printable(error.get("type", "")),
        }
        detail.append(item)
    return JSONResponse({"detail": detail}, status_code=422)


def unprocessable(items: list[dict[str, Any]]) -> JSONResponse:
    """A 422 in the same shape as every other (``loc``, ``field``, ``msg``, ``type``, and any
    place such as ``line``), whatever the items hold."""
    return JSONResponse({"detail": [printable(item) for item in items]}, status_code=422)


def field_error(field: str, message: str) -> JSONResponse:
    """A 422 for one field of the body, and what is wrong with it."""
    return unprocessable(
        [{"loc": ["body", field], "field": field, "msg": message, "type": "value_error"}]
    )
