"""Journeys: their definitions (and the files left out), runs, a run's trail, start, cancel."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request

from api.deps import SettingsDep, audited, client_of, for_roles
from api.models import JourneyBook, JourneyEntry, JourneyRun, JourneyRunStatus, errors
from clientela.customers.records import UnknownCustomer, get_customer
from clientela.db import session_scope
from clientela.journeys import router as journey_router
from clientela.journeys.runs import JourneyNotFound, journey_cancel, journey_list, journey_status
from clientela.journeys.spec import step_ids
from models.schemas import ExternalId

router = APIRouter(tags=["journeys"])

JourneyName = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,47}$")]
READERS = ("marketer", "desk", "admin")
MARKETERS = ("marketer", "admin")


@router.get(
    "/journeys",
    dependencies=for_roles(*READERS),
    response_model=JourneyBook,
    responses=errors(401, 403),
)
async def journey_definitions(settings: SettingsDep) -> dict[str, Any]:
    """The journeys in force, and each file left out with its file:line:column problem."""
    book = await asyncio.to_thread(journey_router.BOOK.journeys, settings)
    return {
        "journeys": [
            {
                "name": j.name,
                "description": j.spec.description,
                "owner": j.spec.owner,
                "version": j.version,
                "trigger": j.spec.trigger.model_dump(mode="json", by_alias=True, exclude_none=True),
                "when": j.spec.when,
                "steps": step_ids(j.spec),
            }
            for j in book.values()
        ],
        "problems": [str(p) for p in journey_router.BOOK.problems],
    }


@router.get(
    "/journeys/runs",
    dependencies=for_roles(*READERS),
    response_model=list[JourneyRun],
    responses=errors(401, 403, 503),
)
async def journey_runs(
    request: Request,
    customer_id: ExternalId | None = None,
    journey: Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_]{0,47}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Journey runs, newest first, by customer and/or journey."""
    client = await client_of(request.app)
    return await journey_list(client, customer_id, journey, limit=limit)


@router.get(
    "/journeys/{name}/{customer_id}",
    dependencies=for_roles(*READERS),
    response_model=JourneyRunStatus,
    responses=errors(401, 403, 404, 503),
)
async def journey_run(
    name: JourneyName, customer_id: ExternalId, request: Request
) -> dict[str, Any]:
    """The customer's latest run of the journey: each step taken, messages, events."""
    client = await client_of(request.app)
    try:
        return await journey_status(client, name, customer_id)
    except JourneyNotFound as exc:
        raise HTTPException(404, str(exc)) from None


@router.post(
    "/journeys/{name}/{customer_id}/start",
    dependencies=for_roles(*MARKETERS),
    response_model=JourneyEntry,
    responses=errors(401, 403, 404, 503),
)
async def journey_start(
    settings: SettingsDep, name: JourneyName, customer_id: ExternalId, request: Request
) -> dict[str, Any]:
    """Start a journey for a customer by hand (its condition and re-entry policy apply:
    ``started`` false with the reason when they do not)."""

    def known() -> None:
        with session_scope(settings.db_url) as session:
            get_customer(session=session, external_id=customer_id)

    try:
        await asyncio.to_thread(known)
    except UnknownCustomer as exc:
        raise HTTPException(404, f"customer_id: {exc}") from None
    client = await client_of(request.app)
    try:
        entry = await journey_router.start_by_name(client, settings, name, customer_id)
    except LookupError as exc:
        raise HTTPException(404, str(exc)) from None
    if entry.started:
        await audited(
            request, "journey.started", f"journey:{name}:{customer_id}", workflow=entry.workflow_id
        )
    return entry.as_dict() | {"reason": entry.reason or None}


@router.post(
    "/journeys/{name}/{customer_id}/cancel",
    dependencies=for_roles(*MARKETERS),
    response_model=list[str],
    responses=errors(401, 403, 503),
)
async def journey_stop(
    settings: SettingsDep, name: JourneyName, customer_id: ExternalId, request: Request
) -> list[str]:
    """Cancel the customer's running journeys of that name; the workflow ids cancelled."""
    client = await client_of(request.app)
    cancelled = await journey_cancel(client, name, customer_id)
    if cancelled:
        await audited(
            request, "journey.cancelled", f"journey:{name}:{customer_id}", workflows=cancelled
        )
    return cancelled
