"""Campaigns from spec to report, as the CLI drives them: preview, create, decide, control,
status, list. Who may do what follows the user's roles (marketers create and control,
approvers decide, four eyes once people exist); every change is in the audit trail."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import col, select
from temporalio.client import WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import SettingsDep, audited, client_of, for_roles
from api.limits import unprocessable
from api.models import CampaignCreated, CampaignPreview, CampaignRow, errors
from api.routes.campaigns import CampaignSlug
from clientela.campaigns import lifecycle
from clientela.db import session_scope
from clientela.journeys.router import rules_for_journeys
from clientela.people.approval import check_decider
from clientela.people.users import PeopleError
from clientela.settings import Settings
from clientela.yamlfile import SpecError
from models import Campaign
from models.schemas import Name, Text
from workflows.campaign import CampaignStatus

router = APIRouter(tags=["campaigns"])

MARKETERS = ("marketer", "admin")
APPROVERS = ("approver",)


class SpecIn(BaseModel):
    """A campaign spec, as the YAML a marketer writes (docs/campaigns.md)."""

    model_config = ConfigDict(extra="forbid")

    spec: str = Field(min_length=1, max_length=200_000)


class DecisionIn(BaseModel):
    """A decision on a campaign. ``by`` is the caller for a personal token; with the service
    key it names who decides."""

    model_config = ConfigDict(extra="forbid")

    by: Name | None = None
    reason: Text = ""


def _spec_problems(exc: SpecError) -> JSONResponse:
    """422 with each problem at its line and column of the spec."""
    return unprocessable(
        [
            {
                "loc": ["body", "spec"],
                "field": "spec",
                "msg": p.message,
                "type": "spec_error",
                "line": p.line,
                "column": p.column,
            }
            for p in exc.problems
        ]
    )


def _problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def _who(request: Request, given: str | None) -> str | None:
    """The name a change is made by: the token's user, else what the caller says."""
    actor: str = getattr(request.state, "actor", "")
    return actor.removeprefix("user:") if actor.startswith("user:") else given


@router.post(
    "/campaigns/preview",
    dependencies=for_roles(*MARKETERS),
    response_model=CampaignPreview,
    responses=errors(400, 401, 403, 413),
)
async def preview_campaign(settings: SettingsDep, body: SpecIn) -> Any:
    """Validate a spec and show whom it would reach and what it would cost; nothing is kept.
    Each problem comes back with its line and column."""

    def run() -> dict[str, Any]:
        rules = rules_for_journeys(settings)
        return lifecycle.preview_source(settings, body.spec, "spec.yaml", rules).as_dict()

    try:
        return await asyncio.to_thread(run)
    except SpecError as exc:
        return _spec_problems(exc)


@router.post(
    "/campaigns",
    status_code=201,
    dependencies=for_roles(*MARKETERS),
    response_model=CampaignCreated,
    responses=errors(400, 401, 403, 409, 413, 503),
)
async def create_campaign(settings: SettingsDep, body: SpecIn, request: Request) -> Any:
    """Validate, preview and start a campaign; it waits for approval before anything goes out."""
    client = await client_of(request.app)
    rules = await asyncio.to_thread(rules_for_journeys, settings)
    try:
        preview, handle = await lifecycle.create_from_source(
            client, settings, body.spec, "spec.yaml", rules
        )
    except SpecError as exc:
        return _spec_problems(exc)
    except lifecycle.CampaignExists as exc:
        return _problem(409, str(exc))
    cid = handle.id.removeprefix("campaign-")
    by = _who(request, None)
    await audited(request, "campaign.created", f"campaign:{cid}", by=by, audience=preview.audience)
    return {"id": cid, "workflow_id": handle.id, "preview": preview.as_dict()}


async def _status(settings: Settings, request: Request, cid: str) -> dict[str, Any]:
    client = await client_of(request.app)
    return asdict(await lifecycle.status(client, cid))


def _temporal_refusal(exc: Exception, cid: str) -> JSONResponse:
    if isinstance(exc, WorkflowUpdateFailedError):
        return _problem(409, str(exc.cause or exc))
    if isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND:
        return _problem(404, f"no campaign {cid!r}; GET /campaigns lists them")
    raise exc


@router.post(
    "/campaigns/{campaign_id}/{verdict}",
    dependencies=for_roles(*APPROVERS),
    response_model=CampaignStatus,
    responses=errors(400, 401, 403, 404, 409, 413, 503),
)
async def decide_campaign(
    settings: SettingsDep,
    campaign_id: CampaignSlug,
    verdict: Literal["approve", "reject", "go"],
    body: DecisionIn,
    request: Request,
) -> Any:
    """Approve or reject a campaign awaiting approval, or go on after its pilot. Four eyes:
    once people exist, the decider is an approver who did not create it."""
    by = _who(request, body.by)
    if not by:
        return _problem(400, "say who decides: a personal token, or `by` in the body")

    def check() -> None:
        with session_scope(settings.db_url) as session:
            check_decider(session, campaign_id, by, self_approval=settings.self_approval)

    try:
        await asyncio.to_thread(check)
    except PeopleError as exc:
        return _problem(403, str(exc))
    client = await client_of(request.app)
    try:
        await lifecycle.decide(client, campaign_id, verdict, by, body.reason)
    except (WorkflowUpdateFailedError, RPCError) as exc:
        return _temporal_refusal(exc, campaign_id)
    action = {"approve": "approved", "reject": "rejected", "go": "go"}[verdict]
    await audited(
        request, f"campaign.{action}", f"campaign:{campaign_id}", by=by, reason=body.reason
    )
    return await _status(settings, request, campaign_id)


@router.post(
    "/campaigns/{campaign_id}/control/{action}",
    dependencies=for_roles(*MARKETERS),
    response_model=CampaignStatus,
    responses=errors(401, 403, 404, 503),
)
async def control_campaign(
    settings: SettingsDep,
    campaign_id: CampaignSlug,
    action: Literal["pause", "resume", "cancel", "close"],
    request: Request,
) -> Any:
    """Pause or resume the sending, cancel the campaign, or close its response window."""
    client = await client_of(request.app)
    try:
        await lifecycle.control(client, campaign_id, action)
    except RPCError as exc:
        return _temporal_refusal(exc, campaign_id)
    await audited(request, f"campaign.{action}", f"campaign:{campaign_id}")
    return await _status(settings, request, campaign_id)


@router.get(
    "/campaigns/{campaign_id}",
    dependencies=for_roles("marketer", "approver", "admin"),
    response_model=CampaignStatus,
    responses=errors(401, 403, 404, 503),
)
async def campaign_status(
    settings: SettingsDep, campaign_id: CampaignSlug, request: Request
) -> Any:
    """Stage and counts while it runs (as `clientela campaign status --json`)."""
    try:
        return await _status(settings, request, campaign_id)
    except RPCError as exc:
        return _temporal_refusal(exc, campaign_id)


@router.get(
    "/campaigns",
    dependencies=for_roles("marketer", "approver", "admin"),
    response_model=list[CampaignRow],
    responses=errors(401, 403),
)
async def campaign_list(
    settings: SettingsDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[dict[str, Any]]:
    """Campaigns, newest first: id, name, stage."""

    def read() -> list[dict[str, Any]]:
        with session_scope(settings.db_url) as session:
            rows = session.exec(
                select(Campaign).order_by(col(Campaign.created_at).desc()).limit(limit)
            ).all()
            return [{"id": c.id, "name": c.name, "stage": c.stage} for c in rows]

    return await asyncio.to_thread(read)
