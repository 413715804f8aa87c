"""What every route shares: settings, the API key, the Temporal client, form bodies."""

from __future__ import annotations

import secrets
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from temporalio.client import Client

from clientela.settings import Settings
from clientela.temporal import connect

bearer = HTTPBearer(auto_error=False)


async def require_api_key(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """With CLIENTELA_API_KEY set, every call needs ``Authorization: Bearer <key>``."""
    expected = request.app.state.settings.api_key
    if not expected:
        return
    given = credentials.credentials if credentials else ""
    if not secrets.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            401, "a valid API key is required: Authorization: Bearer <CLIENTELA_API_KEY>"
        )


Authorised = [Depends(require_api_key)]


async def temporal_client(request: Request) -> Client:
    """The app's Temporal client, connected on first use; 503 while Temporal is down."""
    return await client_of(request.app)


async def client_of(app: FastAPI) -> Client:
    state = app.state
    if state.client is None:
        async with state.client_lock:
            if state.client is None:
                try:
                    state.client = await connect(state.settings)
                except ConnectionError as exc:
                    raise HTTPException(503, str(exc)) from None
    return state.client


def get_settings(request: Request) -> Settings:
    """The settings the app was made with."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def form_body(fields: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    """The OpenAPI description of a form body a route reads itself (signed forms must be
    read raw, before anything is decoded)."""
    schema: dict[str, Any] = {"type": "object", "properties": fields}
    if required:
        schema["required"] = required
    return {
        "requestBody": {
            "content": {"application/x-www-form-urlencoded": {"schema": schema}},
            "required": bool(required),
        }
    }


async def read_form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body; 400 unless it is UTF-8 throughout."""
    try:
        body = (await request.body()).decode("utf-8")
        return dict(parse_qsl(body, keep_blank_values=True, errors="strict", max_num_fields=100))
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(
            400, "the form body is not UTF-8 form data (application/x-www-form-urlencoded)"
        ) from None
