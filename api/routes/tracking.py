"""Tracked links and the open pixel (``clientela.messaging.tracking`` documents the rules)."""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Request
from fastapi.responses import RedirectResponse, Response

from api.deps import SettingsDep, client_of
from api.routes.links import invalid_link
from clientela.db import session_scope
from clientela.journeys import router as journey_router
from clientela.messaging import engagement
from clientela.messaging.links import BadToken
from clientela.messaging.tracking import TOKEN_PATTERN, read_click, read_open
from clientela.settings import Settings

log = logging.getLogger(__name__)

TrackingToken = Annotated[str, Path(min_length=24, max_length=2800, pattern=TOKEN_PATTERN)]
#: A transparent 1x1 GIF.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"Cache-Control": "no-store, private", "Pragma": "no-cache"}

router = APIRouter(tags=["recipients"])


@router.api_route(
    "/c/{token}",
    methods=["GET", "HEAD"],
    response_class=RedirectResponse,
    status_code=302,
    responses={
        302: {"description": "to the link's address"},
        404: {
            "description": "the link is not valid: a page that says so, and no redirect",
            "content": {"text/html": {}},
        },
    },
)
async def click(settings: SettingsDep, token: TrackingToken, request: Request) -> Response:
    """A tracked link: recorded (a person's first click on it as a response, a machine's
    apart), then redirected to the address that was in the message. A token that does not
    open redirects nowhere."""
    try:
        key, url = read_click(settings, token)
    except BadToken:
        return invalid_link(settings)
    await _record(request, settings, "click", key, url)
    return RedirectResponse(url, status_code=302, headers=NO_STORE)


@router.api_route(
    "/o/{token}",
    methods=["GET", "HEAD"],
    response_class=Response,
    responses={
        200: {"description": "a transparent 1x1 GIF", "content": {"image/gif": {}}},
        404: {"description": "not an open pixel of ours", "content": {"image/gif": {}}},
    },
)
async def opened(settings: SettingsDep, token: TrackingToken, request: Request) -> Response:
    """The open pixel: a person's first open of the message is a response, a privacy
    proxy's or scanner's is counted apart."""
    try:
        key = read_open(settings, token)
    except BadToken:
        return Response(PIXEL, status_code=404, media_type="image/gif", headers=NO_STORE)
    await _record(request, settings, "open", key, "")
    return Response(PIXEL, media_type="image/gif", headers=NO_STORE)


async def _record(request: Request, settings: Settings, kind: str, key: str, url: str) -> None:
    """Record the hit; the recipient is never kept from their page by our bookkeeping (a
    database that cannot be written is logged, and the redirect still happens)."""
    h = request.headers
    visit = engagement.Visit(
        method=request.method,
        user_agent=h.get("user-agent", "")[:512],
        client=request.client.host if request.client else None,
        purpose=" ".join(h.get(n, "") for n in ("sec-purpose", "purpose", "x-purpose", "x-moz")),
    )

    def write() -> engagement.Hit:
        with session_scope(settings.db_url) as session:
            return engagement.record(session, settings, kind=kind, key=key, url=url, visit=visit)

    try:
        hit = await asyncio.to_thread(write)
    except Exception as exc:  # the person still gets where they were going
        log.warning("a %s could not be recorded (%s): %r", kind, key, exc)
        return
    if hit.held:
        _later(_release(request.app, settings, hit.held))


_running: set[asyncio.Task[Any]] = set()


def _later(work: Any) -> None:
    """Run ``work`` after the response, keeping a reference until it ends."""
    task = asyncio.get_running_loop().create_task(work)
    _running.add(task)
    task.add_done_callback(_running.discard)


async def _release(app: FastAPI, settings: Settings, held: list[int]) -> None:
    """Tell the customer's journeys (and start those the response lets them into); left
    in the outbox for the sweep while Temporal cannot be reached."""
    try:
        await journey_router.release(await client_of(app), settings, held)
    except Exception as exc:
        log.warning("journeys not told yet (the sweep tries again): %r", exc)
