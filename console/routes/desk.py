"""The service desk: complaint cases by due time, a case with its answer and resolution,
and the service report."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session, col, select

from api.routes.complaints import case_change
from clientela.people import audit
from clientela.service import cases
from clientela.service import report as service_report
from console.web import DESK, Refused, Viewer, call, form_of, in_thread, page, role, settings_of
from models import Complaint, Customer

router = APIRouter(prefix="/desk")

Desk = Annotated[Viewer, role(*DESK)]
CaseId = Annotated[int, Path(ge=1, le=2**63 - 1)]
PER_PAGE = 50


def _queue(session: Session, show: str, page_no: int) -> tuple[list[dict[str, Any]], bool]:
    query = select(Complaint, Customer.external_id).join(
        Customer, col(Customer.id) == col(Complaint.customer_id)
    )
    if show == "open":
        query = query.where(col(Complaint.resolved_at).is_(None)).order_by(
            col(Complaint.due_at), col(Complaint.id)
        )
    else:
        query = query.order_by(col(Complaint.id).desc())
    rows = session.exec(query.offset((page_no - 1) * PER_PAGE).limit(PER_PAGE + 1)).all()
    now = datetime.now(UTC)
    return [cases.view(c, ext, now) for c, ext in rows[:PER_PAGE]], len(rows) > PER_PAGE


@router.get("", response_class=HTMLResponse)
async def desk(
    viewer: Desk,
    show: Literal["open", "all"] = "open",
    page_no: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    settings = settings_of(viewer.request)  # type: ignore[arg-type]
    rows, more = await in_thread(settings, _queue, show, page_no)
    return page(viewer, "desk.html", rows=rows, show=show, page_no=page_no, more=more)


@router.get("/report", response_class=HTMLResponse)
async def report(viewer: Desk) -> HTMLResponse:
    settings = settings_of(viewer.request)  # type: ignore[arg-type]
    data = await in_thread(settings, lambda s: service_report.build(s))
    return page(viewer, "desk_report.html", body=service_report.render_text(data), data=data)


@router.get("/{case_id}", response_class=HTMLResponse)
async def case_page(viewer: Desk, case_id: CaseId) -> HTMLResponse:
    settings = settings_of(viewer.request)  # type: ignore[arg-type]
    case, problem = await call(case_change(settings, case_id, None))
    if problem is not None:
        raise Refused(problem.status, problem.message)
    return page(viewer, "case.html", case=case, trail=await _trail(settings, case_id))


async def _trail(settings: Any, case_id: int) -> list[dict[str, Any]]:
    """Who did what on the case, oldest first."""
    events = await in_thread(settings, lambda s: audit.recent(s, subject=f"complaint:{case_id}"))
    return [audit.as_dict(e) for e in reversed(events)]


@router.post("/{case_id}/{step}", response_class=HTMLResponse)
async def case_step(
    request: Request, viewer: Desk, case_id: CaseId, step: Literal["response", "resolution"]
) -> Response:
    form = await form_of(request, viewer)
    settings = settings_of(request)
    assert viewer.user is not None
    by = viewer.user.username
    text = form.get("text", "").strip()[:2000]
    if step == "response":
        change = partial(cases.respond, complaint_id=case_id, by=by, note=text)
        action = "complaint.responded"
    else:
        change = partial(cases.resolve, complaint_id=case_id, by=by, resolution=text)
        action = "complaint.resolved"
    _, problem = await call(case_change(settings, case_id, change, request, action, {"by": by}))
    if problem is not None:
        case, _p = await call(case_change(settings, case_id, None))
        if case is None:
            raise Refused(problem.status, problem.message)
        return page(
            viewer,
            "case.html",
            code=problem.status,
            case=case,
            error=problem.message,
            trail=await _trail(settings, case_id),
        )
    return RedirectResponse(f"/console/desk/{case_id}", status_code=303)
