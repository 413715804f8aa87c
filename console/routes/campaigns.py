"""Campaigns in the console: the list, a new one from a spec checked as it is typed, its
audience before it exists, the decision (four eyes), control, live status and the report.

Every change goes through the management API's own handler (``api.routes.campaign_runs``),
so the console and the API cannot disagree on a rule or forget an audit record."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from sqlmodel import Session, col, func, select

from api.routes import campaign_runs
from api.routes.campaigns import CampaignSlug, report_data
from clientela import ROOT
from clientela.campaigns import html as report_html
from clientela.campaigns import report as reports
from clientela.campaigns import spec as campaign_spec
from clientela.journeys.router import rules_for_journeys
from clientela.messaging.counts import said
from clientela.messaging.templating import Templates
from clientela.people import audit
from clientela.yamlfile import SpecError
from console.web import (
    APPROVERS,
    CAMPAIGN_READERS,
    MARKETERS,
    Problem,
    Refused,
    Viewer,
    call,
    form_of,
    in_thread,
    page,
    role,
    settings_of,
)
from models import Campaign, Message

router = APIRouter(prefix="/campaigns")

Slug = CampaignSlug  # one id rule for the API and the console
PER_PAGE = 50
FINAL = ("done", "cancelled", "rejected")

Reader = Annotated[Viewer, role(*CAMPAIGN_READERS)]
Marketer = Annotated[Viewer, role(*MARKETERS)]
Approver = Annotated[Viewer, role(*APPROVERS)]


def starter() -> str:
    """The spec a new campaign starts from: the demo's, with an id to change."""
    text = (ROOT / "campaigns" / "demo-offer.yaml").read_text(encoding="utf-8")
    return text.replace("id: demo-offer", "id: my-campaign", 1)


def _listing(session: Session, page_no: int, q: str) -> tuple[list[dict[str, Any]], bool]:
    query = select(Campaign)
    if q:
        like = f"%{q.lower()}%"
        query = query.where(
            func.lower(Campaign.name).like(like) | func.lower(Campaign.id).like(like)
        )
    rows = session.exec(
        query.order_by(col(Campaign.created_at).desc())
        .offset((page_no - 1) * PER_PAGE)
        .limit(PER_PAGE + 1)
    ).all()
    more = len(rows) > PER_PAGE
    rows = rows[:PER_PAGE]
    sent = dict(
        session.exec(
            select(Message.campaign, func.count())
            .where(col(Message.campaign).in_([c.id for c in rows]))
            .where(col(Message.state).in_(("sent", "delivered")))
            .group_by(Message.campaign)
        ).all()
    )
    return [
        {
            "id": c.id,
            "name": c.name,
            "stage": c.stage,
            "created_at": c.created_at,
            "audience": (c.spec.get("preview") or {}).get("audience"),
            "sent": sent.get(c.id, 0),
        }
        for c in rows
    ], more


@router.get("", response_class=HTMLResponse)
async def campaign_list(
    viewer: Reader,
    page_no: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
    q: Annotated[str, Query(max_length=100)] = "",
) -> HTMLResponse:
    settings = settings_of(viewer.request)  # type: ignore[arg-type]
    rows, more = await in_thread(settings, _listing, page_no, q.strip())
    return page(
        viewer,
        "campaigns.html",
        rows=rows,
        page_no=page_no,
        more=more,
        q=q,
        can_create=viewer.can(*MARKETERS),
    )


@router.get("/new", response_class=HTMLResponse)
async def campaign_new(
    viewer: Marketer,
    copy: Annotated[str, Query(alias="from", pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")] = "",
) -> HTMLResponse:
    """A new spec: the demo's, or a copy of an earlier campaign's under a new id."""
    spec = starter()
    if copy:
        settings = settings_of(viewer.request)  # type: ignore[arg-type]
        record = await in_thread(settings, _record, copy)
        if record is None:
            raise Refused(404, viewer._("There is no campaign %(id)s.", id=copy))
        spec = re.sub(
            r"^id:.*$", f"id: {copy[:58]}-copy", record["source"], count=1, flags=re.MULTILINE
        )
        # A plain name gets " (copy)"; a quoted one is left for the marketer to change.
        spec = re.sub(r"^(name: [^'\"\n].*?)\s*$", r"\1 (copy)", spec, count=1, flags=re.MULTILINE)
    return page(viewer, "campaign_new.html", spec=spec, problems=[], preview=None)


def _problems(exc: SpecError) -> list[dict[str, Any]]:
    return [{"line": p.line, "column": p.column, "msg": p.message} for p in exc.problems]


@router.post("/check", response_class=HTMLResponse)
async def campaign_check(request: Request, viewer: Marketer) -> HTMLResponse:
    """The spec's problems at their lines, as it is typed (no audience count: that is the
    preview's, which reads the base)."""
    form = await form_of(request, viewer)
    settings = settings_of(request)

    def check() -> list[dict[str, Any]]:
        rules = rules_for_journeys(settings)
        templates = Templates(settings.templates_dir, settings.default_locale)
        try:
            campaign_spec.loads(form.get("spec", ""), "spec.yaml", rules, templates)
        except SpecError as exc:
            return _problems(exc)
        return []

    problems = await asyncio.to_thread(check)
    return page(viewer, "_spec_problems.html", problems=problems, checked=True)


@router.post("/preview", response_class=HTMLResponse)
async def campaign_preview(request: Request, viewer: Marketer) -> HTMLResponse:
    form = await form_of(request, viewer)
    settings = settings_of(request)
    body = campaign_runs.SpecIn.model_construct(spec=form.get("spec", ""))
    result, problem = await call(campaign_runs.preview_campaign(settings, body))
    if problem is not None:
        return page(viewer, "_spec_problems.html", problems=_lines(problem), checked=True)
    return page(viewer, "_preview.html", preview=result)


def _lines(problem: Problem) -> list[dict[str, Any]]:
    if problem.items:
        return [
            {"line": i.get("line"), "column": i.get("column"), "msg": i.get("msg", "")}
            for i in problem.items
        ]
    return [{"line": None, "column": None, "msg": problem.message}]


@router.post("", response_class=HTMLResponse)
async def campaign_create(request: Request, viewer: Marketer) -> Response:
    form = await form_of(request, viewer)
    settings = settings_of(request)
    source = form.get("spec", "")
    body = campaign_runs.SpecIn.model_construct(spec=source)
    if not source.strip():
        return page(
            viewer,
            "campaign_new.html",
            code=422,
            spec=source,
            preview=None,
            problems=[{"line": 1, "column": 1, "msg": viewer._("The spec is empty.")}],
        )
    result, problem = await call(campaign_runs.create_campaign(settings, body, request))
    if problem is not None:
        return page(
            viewer,
            "campaign_new.html",
            code=problem.status,
            spec=source,
            problems=_lines(problem),
            preview=None,
        )
    return RedirectResponse(f"/console/campaigns/{result['id']}", status_code=303)


async def _state(request: Request, cid: str) -> tuple[dict[str, Any] | None, Problem | None]:
    settings = settings_of(request)
    return await call(campaign_runs.campaign_status(settings, cid, request))


def _record(session: Session, cid: str) -> dict[str, Any] | None:
    row = session.get(Campaign, cid)
    if row is None:
        return None
    return {
        "id": row.id,
        "name": row.name,
        "objective": row.objective,
        "stage": row.stage,
        "created_at": row.created_at,
        "source": row.spec.get("source", ""),
        "preview": row.spec.get("preview") or {},
        "trail": [audit.as_dict(e) for e in audit.recent(session, subject=f"campaign:{cid}")],
    }


@router.get("/{cid}", response_class=HTMLResponse)
async def campaign_page(request: Request, cid: Slug, viewer: Reader) -> HTMLResponse:
    return await _campaign_page(request, viewer, cid)


async def _campaign_page(
    request: Request, viewer: Viewer, cid: str, refused: Problem | None = None
) -> HTMLResponse:
    """The campaign's page; after a refused action, with the refusal and its status."""
    settings = settings_of(request)
    record = await in_thread(settings, _record, cid)
    if record is None:
        raise Refused(404, viewer._("There is no campaign %(id)s.", id=cid))
    status, problem = await _state(request, cid)
    return page(
        viewer,
        "campaign.html",
        code=refused.status if refused else 200,
        c=record,
        status=status,
        problem=refused or problem,
        **_abilities(viewer, status),
    )


def _abilities(viewer: Viewer, status: dict[str, Any] | None) -> dict[str, Any]:
    stage = (status or {}).get("stage", "")
    return {
        "can_decide": viewer.can(*APPROVERS) and stage in ("awaiting_approval", "pilot_review"),
        "can_control": viewer.can(*MARKETERS) and stage not in FINAL and bool(stage),
        "final": stage in FINAL,
        "said": said(status.get("counts") or {}) if status else "",
        "progress": _progress(status),
    }


def _progress(status: dict[str, Any] | None) -> dict[str, int]:
    if not status:
        return {"done": 0, "total": 0, "percent": 0}
    counts = status.get("counts") or {}
    total = sum(counts.values()) or status.get("treated", 0)
    done = sum(n for s, n in counts.items() if s in ("sent", "delivered", "failed", "suppressed"))
    return {"done": done, "total": total, "percent": round(100 * done / total) if total else 0}


@router.get("/{cid}/status", response_class=HTMLResponse)
async def campaign_status_part(request: Request, cid: Slug, viewer: Reader) -> HTMLResponse:
    """The live part of the campaign page (htmx asks for it every few seconds)."""
    status, problem = await _state(request, cid)
    abilities = _abilities(viewer, status)
    # 286 tells htmx to stop asking once the campaign is over.
    return page(
        viewer,
        "_campaign_status.html",
        code=286 if abilities["final"] else 200,
        cid=cid,
        status=status,
        problem=problem,
        **abilities,
    )


@router.post("/{cid}/decide/{verdict}", response_class=HTMLResponse)
async def campaign_decide(
    request: Request, cid: Slug, verdict: Literal["approve", "reject", "go"], viewer: Approver
) -> Response:
    form = await form_of(request, viewer)
    settings = settings_of(request)
    body = campaign_runs.DecisionIn.model_construct(by=None, reason=form.get("reason", "")[:1000])
    _, problem = await call(campaign_runs.decide_campaign(settings, cid, verdict, body, request))
    return await _after(request, viewer, cid, problem)


@router.post("/{cid}/control/{action}", response_class=HTMLResponse)
async def campaign_control(
    request: Request,
    cid: Slug,
    action: Literal["pause", "resume", "cancel", "close"],
    viewer: Marketer,
) -> Response:
    await form_of(request, viewer)
    settings = settings_of(request)
    _, problem = await call(campaign_runs.control_campaign(settings, cid, action, request))
    return await _after(request, viewer, cid, problem)


async def _after(request: Request, viewer: Viewer, cid: str, problem: Problem | None) -> Response:
    if problem is None:
        return RedirectResponse(f"/console/campaigns/{cid}", status_code=303)
    return await _campaign_page(request, viewer, cid, problem)


@router.get("/{cid}/report", response_class=HTMLResponse)
async def campaign_report(request: Request, cid: Slug, viewer: Reader) -> HTMLResponse:
    settings = settings_of(request)
    data, problem = await call(report_data(settings, cid))
    if problem is not None:
        raise Refused(problem.status, problem.message)
    return HTMLResponse(
        report_html.render(data, back=f"/console/campaigns/{cid}", back_label=viewer._("Back"))
    )


@router.get("/{cid}/report.csv")
async def campaign_report_csv(request: Request, cid: Slug, viewer: Reader) -> Response:
    settings = settings_of(request)
    data, problem = await call(report_data(settings, cid))
    if problem is not None:
        raise Refused(problem.status, problem.message)
    return PlainTextResponse(
        reports.to_csv(data),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{cid}-report.csv"'},
    )
