"""The API's factory: the app, its limits and error rendering, its routers, its sweep.

Routes live one router per resource in ``api/routes/``; what they share (settings, the API
key, the Temporal client, form bodies) in ``api/deps.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from temporalio.client import Client

from api.deps import client_of, for_roles
from api.limits import BodyLimit, validation_error
from api.models import Health, Readiness, errors
from api.routes import (
    audit,
    campaign_runs,
    campaigns,
    complaints,
    customers,
    events,
    journeys,
    links,
    models,
    rules,
    service,
    templates,
    tracking,
    users,
    webhooks,
)
from api.sweep import sweep
from clientela import metrics
from clientela.db import get_engine
from clientela.settings import Settings, load_settings
from console.app import mount as mount_console


def create_app(settings: Settings | None = None, client: Client | None = None) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(get_engine, settings.db_url)
        sweeper = asyncio.create_task(sweep(app, settings.sweep_interval.total_seconds()))
        yield
        sweeper.cancel()

    app = FastAPI(title="Clientela", version="0.1.0", lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.state.union_tags = events.EVENT_TYPES
    app.state.settings = settings
    app.state.client = client
    app.state.client_lock = asyncio.Lock()

    @app.get("/health", response_model=Health)
    async def health() -> dict[str, str]:
        """Alive: the process answers (a liveness probe)."""
        return {"status": "ok"}

    @app.get("/ready", response_model=Readiness, responses={503: {"model": Readiness}})
    async def ready() -> JSONResponse:
        """Ready to serve: the database answers and Temporal is reachable (a readiness
        probe: a load balancer sends no traffic while either is down)."""
        checks: dict[str, str] = {}

        def database() -> None:
            with get_engine(settings.db_url).connect() as conn:
                conn.execute(text("SELECT 1"))

        try:
            await asyncio.wait_for(asyncio.to_thread(database), timeout=5)
            checks["database"] = "ok"
        except Exception as exc:  # any failure is the answer: not ready, and why
            checks["database"] = f"unreachable: {type(exc).__name__}"
        try:
            temporal = await asyncio.wait_for(client_of(app), timeout=5)
            await asyncio.wait_for(temporal.service_client.check_health(), timeout=5)
            checks["temporal"] = "ok"
        except Exception as exc:
            detail = getattr(exc, "detail", "") or str(exc) or type(exc).__name__
            checks["temporal"] = f"unreachable: {detail}"
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ok else "not ready", "checks": checks},
            status_code=200 if ok else 503,
        )

    @app.get(
        "/metrics",
        dependencies=for_roles("admin"),
        response_class=PlainTextResponse,
        responses=errors(401, 403),
    )
    async def prometheus_metrics() -> PlainTextResponse:
        """Prometheus metrics (series ``clientela_*``), for a scraper holding the service key
        or an admin's token. Ledger rows by state and journeys running are read now."""
        try:
            await asyncio.wait_for(asyncio.to_thread(metrics.read_ledger, settings.db_url), 10)
        except Exception as exc:  # the rest is still worth scraping
            metrics.log.warning("metrics: cannot read the ledger: %r", exc)
        try:
            temporal = await asyncio.wait_for(client_of(app), timeout=5)
            await asyncio.wait_for(metrics.read_journeys(temporal), timeout=5)
        except Exception as exc:
            metrics.log.warning("metrics: cannot count running journeys: %r", exc)
        return PlainTextResponse(generate_latest().decode(), media_type=CONTENT_TYPE_LATEST)

    for module in (
        events,
        webhooks,
        links,
        tracking,
        campaign_runs,
        campaigns,
        journeys,
        customers,
        complaints,
        rules,
        models,
        service,
        templates,
        audit,
        users,
    ):
        app.include_router(module.router)
    mount_console(app)
    return app


def app_from_env() -> FastAPI:
    """Entry point for uvicorn (``--factory``); logs as ``CLIENTELA_LOG_FORMAT`` says."""
    from clientela import logs

    settings = load_settings()
    logs.configure(settings.log_format, "api")
    return create_app(settings)
