"""Service indicators."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from api.deps import SettingsDep, for_roles
from api.models import (
    ServiceReport,
    errors,
)
from clientela.db import session_scope
from clientela.service import report as service_report
from clientela.settings import Settings

router = APIRouter(tags=["service"])


@router.get(
    "/service/report",
    dependencies=for_roles("desk", "marketer", "admin"),
    response_model=ServiceReport,
    responses=errors(401, 403),
)
async def service_report_json(
    settings: SettingsDep, since: datetime | None = None
) -> dict[str, Any]:
    """Service indicators (the JSON of `clientela service report --json`)."""
    return await asyncio.to_thread(_service_report, settings, since)


@router.get(
    "/service/report.html",
    dependencies=for_roles("desk", "marketer", "admin"),
    response_class=HTMLResponse,
    responses=errors(401, 403, html=True),
)
async def service_report_page(settings: SettingsDep, since: datetime | None = None) -> HTMLResponse:
    data = await asyncio.to_thread(_service_report, settings, since)
    return HTMLResponse(service_report.render_html(data))


def _service_report(settings: Settings, since: datetime | None) -> dict[str, Any]:
    with session_scope(settings.db_url) as session:
        return service_report.build(session, since=since)
