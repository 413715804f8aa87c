"""What every route shares: settings, the API key, the Temporal client, form bodies."""

from __future__ import annotations

import asyncio
import secrets
from functools import partial
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from temporalio.client import Client

from clientela.db import session_scope
from clientela.people import audit
from clientela.people.users import TOKEN_PREFIX, user_for_token
from clientela.settings import Settings
from clientela.temporal import connect
from models.people import ROLES

bearer = HTTPBearer(auto_error=False)


async def require_api_key(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """``Authorization: Bearer <token>``: a user's personal token (`clientela users token`),
    or the service key CLIENTELA_API_KEY. With no service key set (the API on loopback), a
    call without a token is let through. Who called is ``request.state.actor``."""
    settings: Settings = request.app.state.settings
    given = credentials.credentials if credentials else ""
    if given.startswith(TOKEN_PREFIX):
        user = await asyncio.to_thread(_token_user, settings.db_url, given)
        if user is None:
            raise HTTPException(401, "this API token is not valid (revoked, or its user disabled)")
        request.state.actor, request.state.roles = f"user:{user[0]}", user[1]
        return
    expected = settings.api_key
    if expected and not secrets.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            401,
            "a valid API key is required: Authorization: Bearer <CLIENTELA_API_KEY or a "
            "personal token from `clientela users token`>",
        )
    request.state.actor = "api:service" if expected else "api:local"
    request.state.roles = list(ROLES)


async def audited(request: Request, action: str, subject: str, **detail: Any) -> None:
    """Record a change the caller made through the API (empty details left out)."""
    settings: Settings = request.app.state.settings
    await asyncio.to_thread(
        partial(
            audit.record_now,
            settings.db_url,
            actor=getattr(request.state, "actor", "api"),
            action=action,
            subject=subject,
            detail={k: v for k, v in detail.items() if v not in (None, "")},
        )
    )


def _token_user(db_url: str, token: str) -> tuple[str, list[str]] | None:
    with session_scope(db_url) as session:
        user = user_for_token(session, token)
        return (user.username, list(user.roles)) if user is not None else None


Authorised = [Depends(require_api_key)]


def for_roles(*roles: str) -> list[Any]:
    """A route's dependencies: an authorised caller holding one of ``roles`` (a personal
    token's user; the service key and a loopback API without one hold every role)."""

    async def check(request: Request) -> None:
        held = set(getattr(request.state, "roles", []))
        if not held & set(roles):
            raise HTTPException(
                403,
                f"{request.state.actor} may not do this: it takes the role "
                f"{' or '.join(roles)} (`clientela users roles USER --role {roles[0]}`)",
            )

    return [Depends(require_api_key), Depends(check)]


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
