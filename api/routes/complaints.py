"""Complaint cases: the service desk's side."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from api.deps import SettingsDep, client_of, for_roles
from api.models import (
    CaseView,
    errors,
)
from clientela.customers.records import UnknownCustomer
from clientela.db import session_scope
from clientela.journeys.runs import tell_case
from clientela.service import cases as complaints
from clientela.settings import Settings
from models import Complaint
from models.schemas import ExternalId, Name, Text

#: A complaint case's number, as the database can hold it.
CaseId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the case number")]


class CaseResponse(BaseModel):
    """The responsible answered the customer (the first answer counts for the service level)."""

    model_config = ConfigDict(extra="forbid")

    by: Annotated[Name, Field(min_length=1)]
    note: Text = ""


class CaseResolution(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: Annotated[Name, Field(min_length=1)]
    resolution: Text = ""


class CaseRating(BaseModel):
    """The customer's satisfaction with the handling: 1 (very unhappy) to 5 (very happy)."""

    model_config = ConfigDict(extra="forbid")

    score: int = Field(ge=1, le=5)
    comment: Text = ""


router = APIRouter(tags=["complaints"])


@router.get(
    "/complaints",
    dependencies=for_roles("desk", "admin"),
    response_model=list[CaseView],
    responses=errors(401, 403, 404),
)
async def complaint_list(
    settings: SettingsDep,
    state: Literal["open", "responded", "resolved", "closed", "unresolved"] | None = None,
    customer_id: ExternalId | None = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="at most this many cases")] = 100,
) -> list[dict[str, Any]]:
    """Complaint cases, newest first; ``state=unresolved`` for open and answered ones."""
    try:
        return await asyncio.to_thread(_cases, settings, state, customer_id, limit)
    except UnknownCustomer as exc:
        raise HTTPException(404, f"customer_id: {exc}") from None


@router.get(
    "/complaints/{complaint_id}",
    dependencies=for_roles("desk", "admin"),
    response_model=CaseView,
    responses=errors(401, 403, 404),
)
async def complaint_case(settings: SettingsDep, complaint_id: CaseId) -> dict[str, Any]:
    return await case_change(settings, complaint_id, None)


@router.post(
    "/complaints/{complaint_id}/response",
    dependencies=for_roles("desk", "admin"),
    response_model=CaseView,
    responses=errors(400, 401, 403, 404, 409, 413),
)
async def complaint_response(
    settings: SettingsDep, complaint_id: CaseId, body: CaseResponse, request: Request
) -> dict[str, Any]:
    """Record the first answer to the customer; the case's reminders stop."""
    change = partial(complaints.respond, complaint_id=complaint_id, by=body.by, note=body.note)
    return await case_change(
        settings, complaint_id, change, request, "complaint.responded", {"by": body.by}
    )


@router.post(
    "/complaints/{complaint_id}/resolution",
    dependencies=for_roles("desk", "admin"),
    response_model=CaseView,
    responses=errors(400, 401, 403, 404, 409, 413),
)
async def complaint_resolution(
    settings: SettingsDep, complaint_id: CaseId, body: CaseResolution, request: Request
) -> dict[str, Any]:
    """Resolve the case; the customer is asked for a satisfaction score."""
    change = partial(
        complaints.resolve, complaint_id=complaint_id, by=body.by, resolution=body.resolution
    )
    return await case_change(
        settings, complaint_id, change, request, "complaint.resolved", {"by": body.by}
    )


@router.post(
    "/complaints/{complaint_id}/satisfaction",
    dependencies=for_roles("desk", "admin"),
    response_model=CaseView,
    responses=errors(400, 401, 403, 404, 409, 413),
)
async def complaint_satisfaction(
    settings: SettingsDep, complaint_id: CaseId, body: CaseRating, request: Request
) -> dict[str, Any]:
    """The customer's score, taken by another channel (a call, a form of your own)."""
    change = partial(
        complaints.rate, complaint_id=complaint_id, score=body.score, comment=body.comment
    )
    return await case_change(
        settings, complaint_id, change, request, "complaint.rated", {"score": body.score}
    )


def _cases(
    settings: Settings, state: str | None, customer_id: str | None, limit: int
) -> list[dict[str, Any]]:
    with session_scope(settings.db_url) as session:
        return complaints.list_cases(session, state=state, customer_id=customer_id, limit=limit)


async def case_change(
    settings: Settings,
    complaint_id: int,
    change: Callable[[Any], Complaint] | None,
    request: Request | None = None,
    action: str = "",
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Apply a change to a case (or only read it), audited as ``action`` by whoever called,
    then wake its workflow."""
    actor = getattr(request.state, "actor", "") if request is not None else ""
    try:
        case, uid = await asyncio.to_thread(
            partial(
                complaints.apply,
                settings.db_url,
                complaint_id,
                change,
                actor=actor,
                action=action,
                detail=detail,
            )
        )
    except complaints.UnknownComplaint as exc:
        raise HTTPException(404, str(exc)) from None
    except complaints.CaseConflict as exc:
        raise HTTPException(409, str(exc)) from None
    if change is not None and request is not None:
        try:
            client = await client_of(request.app)
            case["workflow_told"] = await tell_case(client, complaint_id, uid)
        except HTTPException:  # recorded; the workflow reads it at its next deadline
            case["workflow_told"] = False
    return case
