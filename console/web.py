"""What every console page shares: who is signed in, their language, the form token, the
Jinja environment, and the answers for a missing sign-in, a missing role or a bad form."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from clientela.db import session_scope
from clientela.people import sessions
from clientela.settings import Settings
from console.i18n import LANGUAGES, Gettext, choose, gettext

HERE = Path(__file__).parent
SESSION_COOKIE = "clientela_session"
FORM_COOKIE = "clientela_form"  # the sign-in form's token, before there is a session
LANG_COOKIE = "clientela_lang"
MAX_FIELD = 200_000

#: The roles each part of the console takes (as the management API's routes do).
MARKETERS = ("marketer", "admin")
APPROVERS = ("approver",)
CAMPAIGN_READERS = ("marketer", "approver", "admin")
DESK = ("desk", "admin")
CUSTOMER_READERS = ("desk", "marketer", "admin")
ADMINS = ("admin",)
AUDIT_READERS = ("admin", "approver")


class NeedsSignIn(Exception):
    """No valid session: the browser is sent to the sign-in page, then back."""


class Refused(Exception):
    """A page or action the user may not have, or a form that did not come from the console."""

    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message
        super().__init__(message)


def _local(next_path: str | None) -> str:
    """Only a path inside the console may be a place to return to (no open redirect)."""
    if (
        next_path
        and (next_path == "/console" or next_path.startswith(("/console/", "/console?")))
        and "//" not in next_path
        and ".." not in next_path
        and all(c.isprintable() and c != "\\" for c in next_path)
    ):
        return next_path
    return "/console"


@dataclass
class Viewer:
    """The person looking at a page: None before sign-in."""

    lang: str
    _: Gettext
    user: sessions.SignedIn | None = None
    request: Request | None = field(default=None, repr=False)

    def can(self, *roles: str) -> bool:
        return self.user is not None and bool(set(self.user.roles) & set(roles))


def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["number"] = lambda n: f"{n:,}" if isinstance(n, int) else n
    env.filters["tojson_attr"] = lambda v: Markup.escape(json.dumps(v))
    return env


def when(value: str | datetime | None) -> str:
    """A time as people read it (UTC), or an empty string."""
    if not value:
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


ENV = _env()


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def viewer_of(request: Request) -> Viewer:
    lang = choose(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language"))
    return Viewer(lang, gettext(lang), request=request)


async def signed_in(request: Request) -> Viewer:
    """The page's viewer, signed in; the caller becomes the audit actor for what follows."""
    viewer = viewer_of(request)
    token = request.cookies.get(SESSION_COOKIE, "")
    settings = settings_of(request)

    def look() -> sessions.SignedIn | None:
        with session_scope(settings.db_url) as session:
            return sessions.current(
                session, token, idle=settings.session_idle, longest=settings.session_max
            )

    user = await asyncio.to_thread(look) if token else None
    if user is None:
        raise NeedsSignIn()
    viewer.user = user
    request.state.actor, request.state.roles = f"user:{user.username}", list(user.roles)
    return viewer


Signed = Annotated[Viewer, Depends(signed_in)]


def role(*roles: str) -> Any:
    """A dependency: the signed-in viewer, holding one of ``roles``."""

    async def check(viewer: Signed) -> Viewer:
        if not viewer.can(*roles):
            names = " / ".join(viewer._(r) for r in roles)
            raise Refused(
                403,
                viewer._(
                    "This takes the role %(roles)s. An admin can give it to you.", roles=names
                ),
            )
        return viewer

    return Depends(check)


async def form_of(request: Request, viewer: Viewer) -> dict[str, str]:
    """The posted form, refused unless it carries this session's token (or the header htmx
    sends): a form made by another site cannot act for the signed-in user."""
    # A browser percent-encodes a form: raw bytes beyond ASCII are not one of ours (and
    # would be read as Latin-1).
    if (await request.body()).isascii() is False:
        raise Refused(400, viewer._("This form could not be read. Reload the page and try again."))
    try:
        form = await request.form(max_files=0, max_fields=64, max_part_size=MAX_FIELD)
    except HTTPException:
        raise Refused(
            400, viewer._("This form could not be read. Reload the page and try again.")
        ) from None
    given = str(form.get("csrf") or request.headers.get("x-csrf-token") or "")
    assert viewer.user is not None
    if not secrets.compare_digest(given.encode(), viewer.user.csrf.encode()):
        raise Refused(
            403,
            viewer._(
                "This form has expired or did not come from the console. "
                "Reload the page and try again."
            ),
        )
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    for key, value in values.items():
        if len(value) > MAX_FIELD:
            raise Refused(413, viewer._("The field %(field)s is too long.", field=key))
        if "\ufffd" in key + value or any(
            not c.isprintable() and c not in "\r\n\t" for c in key + value
        ):
            raise Refused(
                400,
                viewer._(
                    "The field %(field)s holds characters that are not text. Remove them and "
                    "send it again.",
                    field=key,
                ),
            )
    return values


def page(viewer: Viewer, template: str, code: int = 200, **context: Any) -> HTMLResponse:
    request = viewer.request
    html = ENV.get_template(template).render(
        v=viewer,
        _=viewer._,
        user=viewer.user,
        languages=LANGUAGES,
        path=request.url.path if request else "/console",
        query=str(request.url.query) if request else "",
        **context,
    )
    return HTMLResponse(html, status_code=code)


async def in_thread(settings: Settings, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(session, ...)`` in one transaction, off the event loop."""

    def run() -> Any:
        with session_scope(settings.db_url) as session:
            return fn(session, *args, **kwargs)

    return await asyncio.to_thread(partial(run))


@dataclass
class Problem:
    status: int
    message: str
    items: list[dict[str, Any]] = field(default_factory=list)


async def call(coro: Any) -> tuple[Any, Problem | None]:
    """Run one of the management API's handlers, the single place each change is made, and
    turn its refusals into a problem to show (with lines, for a spec or a template)."""
    try:
        result = await coro
    except HTTPException as exc:
        return None, Problem(exc.status_code, str(exc.detail))
    if isinstance(result, JSONResponse):
        body = json.loads(bytes(result.body))
        detail = body.get("detail")
        if isinstance(detail, list):
            return None, Problem(result.status_code, "", detail)
        return None, Problem(result.status_code, str(detail))
    return result, None


def install(app: FastAPI) -> None:
    """The console's answers for a missing session and a refusal."""

    async def needs_sign_in(request: Request, exc: Exception) -> Response:
        target = _local(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        if request.method != "GET":
            target = "/console"
        location = f"/console/sign-in?next={quote(target)}"
        if request.headers.get("hx-request"):
            return Response(status_code=204, headers={"HX-Redirect": location})
        return RedirectResponse(location, status_code=303)

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refused)
        viewer = viewer_of(request)
        if request.headers.get("hx-request"):
            return HTMLResponse(
                f'<p class="error" role="alert">{Markup.escape(exc.message)}</p>',
                status_code=exc.status,
            )
        with contextlib.suppress(NeedsSignIn):
            viewer = await signed_in(request)
        return page(viewer, "refused.html", code=exc.status, message=exc.message)

    app.add_exception_handler(NeedsSignIn, needs_sign_in)
    app.add_exception_handler(Refused, refused)
