"""The console's routes under ``/console``, its static files, and its error answers."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from console import web
from console.routes import (
    campaigns,
    customers,
    desk,
    home,
    journeys,
    people,
    rules,
    session,
    templates,
)

MODULES = (session, home, campaigns, templates, journeys, customers, rules, desk, people)


def mount(app: FastAPI) -> None:
    for module in MODULES:
        app.include_router(module.router, prefix="/console", include_in_schema=False)
    app.mount("/console/static", StaticFiles(directory=web.HERE / "static"), name="console-static")
    web.install(app)

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/console", status_code=307)
