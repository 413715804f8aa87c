"""Journeys in the console: each definition drawn as its steps, with how many customers
are at each step now and how many messages each step has sent; runs with filters; a run's
trail; start by hand and cancel (marketers)."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session, col, func, select

from api.deps import client_of
from api.routes import journeys as api_journeys
from clientela.journeys import router as journey_router
from clientela.journeys.runs import journey_list
from clientela.journeys.spec import Step, step_ids
from console.web import (
    MARKETERS,
    Refused,
    Viewer,
    call,
    form_of,
    in_thread,
    page,
    role,
    settings_of,
)
from models import Message
from models.schemas import EXTERNAL_ID_PATTERN

router = APIRouter(prefix="/journeys")

Reader = Annotated[Viewer, role("marketer", "desk", "admin")]
Marketer = Annotated[Viewer, role(*MARKETERS)]
JourneyName = api_journeys.JourneyName
CustomerId = Annotated[str, Path(pattern=EXTERNAL_ID_PATTERN)]
#: Running runs read from Temporal's visibility per journey to count who is where.
SAMPLE = 1000


def _duration(value: timedelta) -> str:
    """``2d``, ``36h``, ``90m``, ``45s``: as a journey file writes it."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _trigger(trigger: dict[str, Any]) -> str:
    """The trigger in words: ``event purchase``, ``tier change up to A``, ``date birthday``."""
    parts = []
    for key, value in trigger.items():
        if isinstance(value, dict):
            inner = " ".join(
                f"{k} {', '.join(v) if isinstance(v, list) else v}"
                for k, v in value.items()
                if v not in ([], None, "any")
            )
            parts.append(f"{key.replace('_', ' ')} {inner}".strip())
        elif isinstance(value, timedelta):
            parts.append(f"{key.replace('_', ' ')} {_duration(value)}")
        else:
            parts.append(f"{key.replace('_', ' ')} {value}")
    return "; ".join(parts)


def _kind(step: Step, _: Any) -> tuple[str, str]:
    """What a step does, in words, for the drawing."""
    if step.send:
        return "send", f"{step.send.template} ({_(step.send.channel)})"
    if step.wait is not None:
        return "wait", _duration(step.wait)
    if step.wait_until is not None:
        return "wait", step.wait_until.strftime("%H:%M")
    if step.wait_for is not None:
        events = ", ".join(step.wait_for.events)
        return "wait for", f"{events} ≤ {_duration(step.wait_for.timeout)}"
    if step.branch is not None:
        routes = [f"{r.if_} → {r.goto}" for r in step.branch]
        return "branch", "; ".join(routes + ([f"else → {step.else_}"] if step.else_ else []))
    if step.exit is not None:
        return "exit", step.exit
    return "step", ""


def _sent(session: Session, name: str, sends: list[str]) -> dict[str, int]:
    """Messages each send step has produced (the ledger key ends with the step's id)."""
    out = {}
    for sid in sends:
        out[sid] = session.exec(
            select(func.count()).where(
                Message.journey == name, col(Message.key).endswith(f":{sid}")
            )
        ).one()
    return out


@router.get("", response_class=HTMLResponse)
async def journey_book(request: Request, viewer: Reader) -> HTMLResponse:
    settings = settings_of(request)
    book = await asyncio.to_thread(journey_router.BOOK.journeys, settings)
    try:
        client = await client_of(request.app)
    except Exception:
        client = None
    drawn = []
    for j in book.values():
        ids = step_ids(j.spec)
        steps = [(sid, *_kind(s, viewer._)) for sid, s in zip(ids, j.spec.steps, strict=True)]
        sends = [sid for sid, kind, _d in steps if kind == "send"]
        sent = await in_thread(settings, _sent, j.name, sends)
        here: Counter[str] | None = None
        capped = False
        if client is not None:
            try:
                runs = await journey_list(client, None, j.name, limit=SAMPLE, running=True)
                here = Counter(r["step"] for r in runs)
                capped = len(runs) >= SAMPLE
            except Exception:
                here = None
        drawn.append(
            {
                "name": j.name,
                "description": j.spec.description,
                "owner": j.spec.owner,
                "trigger": _trigger(j.spec.trigger.model_dump(by_alias=True, exclude_none=True)),
                "when": j.spec.when,
                "steps": steps,
                "sent": sent,
                "here": here,
                "capped": capped,
            }
        )
    return page(
        viewer,
        "journeys.html",
        journeys=drawn,
        problems=[str(p) for p in journey_router.BOOK.problems],
    )


@router.get("/runs", response_class=HTMLResponse)
async def journey_runs(
    request: Request,
    viewer: Reader,
    journey: Annotated[str, Query(max_length=48)] = "",
    customer: Annotated[str, Query(max_length=128)] = "",
    step: Annotated[str, Query(max_length=64)] = "",
) -> HTMLResponse:
    runs, problem = None, None
    j, c = journey.strip(), customer.strip()
    if j and not re.fullmatch(r"[a-z][a-z0-9_]{0,47}", j):
        problem = viewer._("No such journey.")
    elif c and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}", c):
        problem = viewer._("No such customer.")
    else:
        try:
            client = await client_of(request.app)
            runs = await journey_list(client, c or None, j or None, limit=200)
        except Exception:
            problem = viewer._("Journeys cannot be read now (Temporal is not reachable).")
        if runs is not None and step:
            runs = [r for r in runs if r["step"] == step]
    return page(
        viewer,
        "journey_runs.html",
        runs=runs or [],
        problem=problem,
        journey=journey,
        customer=customer,
        step=step,
    )


@router.get("/{name}/{customer_id}", response_class=HTMLResponse)
async def journey_run(
    request: Request, viewer: Reader, name: JourneyName, customer_id: CustomerId
) -> HTMLResponse:
    run, problem = await call(api_journeys.journey_run(name, customer_id, request))
    if problem is not None:
        raise Refused(problem.status, problem.message)
    return page(
        viewer,
        "journey_run.html",
        run=run,
        name=name,
        customer_id=customer_id,
        can_change=viewer.can(*MARKETERS),
    )


@router.post("/{name}/{customer_id}/{action}", response_class=HTMLResponse)
async def journey_change(
    request: Request, viewer: Marketer, name: JourneyName, customer_id: CustomerId, action: str
) -> Response:
    await form_of(request, viewer)
    settings = settings_of(request)
    if action == "cancel":
        _, problem = await call(api_journeys.journey_stop(settings, name, customer_id, request))
    elif action == "start":
        result, problem = await call(
            api_journeys.journey_start(settings, name, customer_id, request)
        )
        if problem is None and not result["started"]:
            raise Refused(409, viewer._("Not started: %(why)s", why=result.get("reason") or ""))
    else:
        raise Refused(404, viewer._("No such action."))
    if problem is not None:
        raise Refused(problem.status, problem.message)
    return RedirectResponse(f"/console/journeys/{name}/{customer_id}", status_code=303)
