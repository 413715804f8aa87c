"""Sign-in, sign-out and the console's language."""

from __future__ import annotations

import asyncio
import secrets
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.deps import read_form
from clientela.db import session_scope
from clientela.people import sessions
from console.i18n import LANGUAGES
from console.web import (
    FORM_COOKIE,
    LANG_COOKIE,
    SESSION_COOKIE,
    Refused,
    Signed,
    _local,
    form_of,
    page,
    settings_of,
    viewer_of,
)

router = APIRouter()


def _secure(request: Request) -> bool:
    """Cookies are marked Secure when the console is reached over TLS (behind a proxy, run
    uvicorn with --proxy-headers so that the scheme is the browser's)."""
    return request.url.scheme == "https"


def _sign_in_page(
    request: Request, next_path: str, error: str = "", status: int = 200, username: str = ""
) -> HTMLResponse:
    viewer = viewer_of(request)
    token = secrets.token_urlsafe(32)
    response = page(
        viewer,
        "sign_in.html",
        code=status,
        form_token=token,
        next=next_path,
        error=error,
        username=username,
    )
    response.set_cookie(
        FORM_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        path="/console/sign-in",
    )
    return response


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_form(
    request: Request, next: Annotated[str, Query(max_length=2000)] = "/console"
) -> HTMLResponse:
    return _sign_in_page(request, _local(next))


@router.post("/sign-in", response_class=HTMLResponse)
async def sign_in(request: Request) -> Response:
    viewer = viewer_of(request)
    _ = viewer._
    form = await read_form(request)
    next_path = _local(form.get("next"))
    expected = request.cookies.get(FORM_COOKIE, "")
    given = form.get("csrf", "")
    if not expected or not secrets.compare_digest(given.encode(), expected.encode()):
        return _sign_in_page(
            request, next_path, _("The sign-in form had expired. Please try again."), 403
        )
    username, password = form.get("username", "")[:64], form.get("password", "")[:1024]
    settings = settings_of(request)
    client = request.client.host if request.client else "unknown"

    def attempt() -> tuple[str, sessions.SignedIn] | None:
        with session_scope(settings.db_url) as session:
            return sessions.sign_in(
                session,
                username=username,
                password=password,
                client=client,
                limit=settings.sign_in_attempts,
            )

    try:
        done = await asyncio.to_thread(attempt)
    except sessions.TooManyAttempts as exc:
        minutes = max(1, round(exc.retry_after.total_seconds() / 60))
        response = _sign_in_page(
            request,
            next_path,
            _("Too many failed sign-ins. Try again in %(minutes)s min.", minutes=minutes),
            429,
            username,
        )
        response.headers["Retry-After"] = str(max(1, int(exc.retry_after.total_seconds())))
        return response
    if done is None:
        return _sign_in_page(
            request, next_path, _("That username and password do not match."), 401, username
        )
    token, _who = done
    redirect = RedirectResponse(next_path, status_code=303)
    redirect.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=_secure(request),
        path="/console",
    )
    redirect.delete_cookie(FORM_COOKIE, path="/console/sign-in")
    return redirect


@router.post("/sign-out")
async def sign_out(request: Request, viewer: Signed) -> Response:
    await form_of(request, viewer)
    settings = settings_of(request)
    token = request.cookies.get(SESSION_COOKIE, "")

    def end() -> None:
        with session_scope(settings.db_url) as session:
            sessions.sign_out(session, token)

    await asyncio.to_thread(end)
    response = RedirectResponse("/console/sign-in", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


@router.get("/language/{lang}")
async def language(
    request: Request, lang: str, next: Annotated[str, Query(max_length=2000)] = "/console"
) -> Response:
    """Show the console in ``lang`` from now on (a choice kept in the browser)."""
    if lang not in LANGUAGES:
        raise Refused(404, viewer_of(request)._("No such language."))
    response = RedirectResponse(_local(next), status_code=303)
    response.set_cookie(
        LANG_COOKIE,
        lang,
        max_age=365 * 86400,
        samesite="lax",
        secure=_secure(request),
        path="/console",
    )
    return response
