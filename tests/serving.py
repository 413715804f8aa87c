"""The HTTP API in the test's own process (ASGI, with its lifespan), optionally with a worker."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from temporalio.client import Client

from api.app import create_app
from clientela.settings import Settings
from worker import build_worker


@contextlib.asynccontextmanager
async def api(
    client: Client, settings: Settings, *, worker: bool = False
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the API configured by ``settings``; with ``worker``, a worker polls
    the settings' task queue meanwhile."""
    app = create_app(settings, client)
    async with contextlib.AsyncExitStack() as stack:
        if worker:
            await stack.enter_async_context(build_worker(client, settings))
        await stack.enter_async_context(app.router.lifespan_context(app))
        yield await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        )
