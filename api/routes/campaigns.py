"""Campaign reports."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path
from fastapi.responses import HTMLResponse

from api.deps import SettingsDep, for_roles
from api.models import (
    CampaignReport,
    errors,
)
from clientela.campaigns import html as report_html
from clientela.campaigns.report import UnknownCampaign
from clientela.campaigns.report import build as build_report
from clientela.db import session_scope
from clientela.settings import Settings

#: A campaign's id in a path.
CampaignSlug = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]


router = APIRouter(tags=["campaigns"])


@router.get(
    "/campaigns/{campaign_id}/report",
    dependencies=for_roles("marketer", "approver", "admin"),
    response_model=CampaignReport,
    responses=errors(401, 403, 404),
)
async def campaign_report(settings: SettingsDep, campaign_id: CampaignSlug) -> dict[str, Any]:
    """The campaign report (the documented JSON of `clientela campaign report --json`)."""
    return await report_data(settings, campaign_id)


@router.get(
    "/campaigns/{campaign_id}/report.html",
    dependencies=for_roles("marketer", "approver", "admin"),
    response_class=HTMLResponse,
    responses=errors(401, 403, 404, html=True),
)
async def campaign_report_page(settings: SettingsDep, campaign_id: CampaignSlug) -> HTMLResponse:
    """The report page with its charts, as of now."""
    return HTMLResponse(report_html.render(await report_data(settings, campaign_id)))


async def report_data(settings: Settings, campaign_id: str) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        with session_scope(settings.db_url) as session:
            return build_report(session, campaign_id)

    try:
        return await asyncio.to_thread(read)
    except UnknownCampaign as exc:
        raise HTTPException(404, str(exc)) from None
