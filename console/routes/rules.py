"""Rules in the console: the file in force, a check as it is edited, apply (admins) with
its progress, the tier mix, and why a customer is in their tier."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session, func, select

from api.routes import rules as api_rules
from console.web import ADMINS, Refused, Viewer, call, form_of, in_thread, page, role, settings_of
from models import Customer

router = APIRouter(prefix="/rules")

Reader = Annotated[Viewer, role("marketer", "approver", "admin")]
Admin = Annotated[Viewer, role(*ADMINS)]


def tier_mix(session: Session) -> dict[str, int]:
    rows = session.exec(select(Customer.tier, func.count()).group_by(Customer.tier)).all()
    return {tier or "—": n for tier, n in sorted(rows, key=lambda r: r[0] or "~")}


@router.get("", response_class=HTMLResponse)
async def rules_page(request: Request, viewer: Reader) -> HTMLResponse:
    settings = settings_of(request)
    in_force = await api_rules.rules_in_force(settings)
    mix = await in_thread(settings, tier_mix)
    return page(
        viewer,
        "rules.html",
        rules=in_force,
        mix=mix,
        total=sum(mix.values()),
        can_apply=viewer.can(*ADMINS),
        problems=None,
    )


@router.post("/check", response_class=HTMLResponse)
async def rules_check(request: Request, viewer: Reader) -> HTMLResponse:
    form = await form_of(request, viewer)
    body = api_rules.RulesIn.model_construct(source=form.get("source", ""))
    result = await api_rules.rules_check(body)
    return page(viewer, "_rules_check.html", check=result)


@router.post("/apply", response_class=HTMLResponse)
async def rules_apply(request: Request, viewer: Admin) -> Response:
    form = await form_of(request, viewer)
    settings = settings_of(request)
    source = form.get("source", "")
    if not source.strip():
        raise Refused(422, viewer._("The rule file is empty."))
    body = api_rules.RulesIn.model_construct(source=source)
    result, problem = await call(api_rules.rules_apply(settings, body, request))
    if problem is not None:
        if problem.items:
            check = {
                "ok": False,
                "problems": [
                    {
                        "line": i.get("line"),
                        "column": i.get("column"),
                        "severity": i.get("severity", "error"),
                        "message": i.get("msg"),
                    }
                    for i in problem.items
                ],
            }
            in_force = {"source": source, "ruleset": "", "version": "", "applied_at": None}
            mix = await in_thread(settings, tier_mix)
            return page(
                viewer,
                "rules.html",
                code=422,
                rules=in_force,
                mix=mix,
                total=sum(mix.values()),
                can_apply=True,
                problems=check,
            )
        raise Refused(problem.status, problem.message)
    return RedirectResponse(f"/console/rules/progress/{result['ruleset']}", status_code=303)


@router.get("/progress/{ruleset}", response_class=HTMLResponse)
async def rules_progress(
    request: Request, viewer: Reader, ruleset: Annotated[str, Path(max_length=64)]
) -> HTMLResponse:
    progress, problem = await call(api_rules.rules_status(ruleset, request))
    part = request.headers.get("hx-request") is not None
    done = bool(progress and progress.get("finished")) or problem is not None
    # 286 tells htmx to stop asking once the apply is over.
    return page(
        viewer,
        "_rules_progress.html" if part else "rules_progress.html",
        code=286 if part and done else 200,
        ruleset=ruleset,
        progress=progress,
        problem=problem,
        percent=_percent(progress),
    )


def _percent(progress: dict[str, Any] | None) -> int:
    if not progress or not progress.get("total"):
        return 100 if progress and progress.get("finished") else 0
    return round(100 * progress["processed"] / progress["total"])
