"""Users (admins) and the audit trail (admins and approvers)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from clientela.people import audit, users
from console.web import (
    ADMINS,
    AUDIT_READERS,
    Refused,
    Viewer,
    form_of,
    in_thread,
    page,
    role,
    settings_of,
)
from models.people import ROLES

router = APIRouter()

Admin = Annotated[Viewer, role(*ADMINS)]
AuditReader = Annotated[Viewer, role(*AUDIT_READERS)]
Username = Annotated[str, Path(pattern=r"^[a-z][a-z0-9._-]{1,63}$")]


def _users(session: Any) -> list[dict[str, Any]]:
    return [
        {
            "username": u.username,
            "name": u.name,
            "email": u.email,
            "roles": u.roles,
            "active": u.active,
            "created_at": u.created_at,
        }
        for u in users.all_users(session)
    ]


@router.get("/users", response_class=HTMLResponse)
async def user_list(viewer: Admin) -> HTMLResponse:
    settings = settings_of(viewer.request)  # type: ignore[arg-type]
    return page(
        viewer,
        "users.html",
        rows=await in_thread(settings, _users),
        roles=ROLES,
        error=None,
        form={},
    )


@router.post("/users", response_class=HTMLResponse)
async def user_add(request: Request, viewer: Admin) -> Response:
    form = await form_of(request, viewer)
    settings = settings_of(request)
    roles = [r for r in ROLES if form.get(f"role_{r}")]
    actor = request.state.actor
    try:
        await in_thread(
            settings,
            lambda s: users.add_user(
                s,
                actor=actor,
                username=form.get("username", "").strip(),
                roles=roles,
                password=form.get("password", ""),
                name=form.get("name", "").strip()[:128],
                email=form.get("email", "").strip()[:320],
            ),
        )
    except users.PeopleError as exc:
        rows = await in_thread(settings, _users)
        return page(
            viewer,
            "users.html",
            code=422,
            rows=rows,
            roles=ROLES,
            error=str(exc),
            form={k: v for k, v in form.items() if k != "password"},
        )
    return RedirectResponse("/console/users", status_code=303)


@router.post("/users/{username}/{change}", response_class=HTMLResponse)
async def user_change(request: Request, viewer: Admin, username: Username, change: str) -> Response:
    form = await form_of(request, viewer)
    settings = settings_of(request)
    actor = request.state.actor
    assert viewer.user is not None
    try:
        if change == "roles":
            roles = [r for r in ROLES if form.get(f"role_{r}")]
            if username == viewer.user.username and "admin" not in roles:
                raise users.PeopleError(viewer._("You cannot take the admin role from yourself."))
            await in_thread(
                settings, lambda s: users.set_roles(s, actor=actor, username=username, roles=roles)
            )
        elif change == "disable":
            if username == viewer.user.username:
                raise users.PeopleError(viewer._("You cannot disable yourself."))
            await in_thread(settings, lambda s: users.disable(s, actor=actor, username=username))
        elif change == "password":
            await in_thread(
                settings,
                lambda s: users.set_password(
                    s, actor=actor, username=username, password=form.get("password", "")
                ),
            )
        else:
            raise Refused(404, viewer._("No such action."))
    except users.PeopleError as exc:
        rows = await in_thread(settings, _users)
        return page(viewer, "users.html", code=422, rows=rows, roles=ROLES, error=str(exc), form={})
    return RedirectResponse("/console/users", status_code=303)


@router.get("/audit", response_class=HTMLResponse)
async def audit_list(
    viewer: AuditReader,
    subject: Annotated[str, Query(max_length=255)] = "",
    actor: Annotated[str, Query(max_length=128)] = "",
) -> HTMLResponse:
    settings = settings_of(viewer.request)  # type: ignore[arg-type]
    events = await in_thread(
        settings,
        lambda s: [
            audit.as_dict(e)
            for e in audit.recent(
                s, limit=200, subject=subject.strip() or None, actor=actor.strip() or None
            )
        ],
    )
    return page(viewer, "audit.html", events=events, subject=subject, actor=actor)
