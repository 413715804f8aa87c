"""Templates in the console: the list, an editor with a live preview for a chosen customer,
save (checked first), and a test send to the signed-in user's own address."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session, col, select

from api.deps import audited
from api.routes import templates as api_templates
from clientela.messaging.channels import SendAccepted, SendError
from clientela.messaging.channels.email import EmailTransport, build_email
from clientela.messaging.templating import ALL_PARTS, RenderedEmail
from clientela.people.users import get_user
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
from models import Customer

router = APIRouter(prefix="/templates")

Name = api_templates.TemplateName  # the API's rules for a template's name and locale
Locale = api_templates.Locale
Marketer = Annotated[Viewer, role(*MARKETERS)]


@router.get("", response_class=HTMLResponse)
async def template_list(viewer: Marketer) -> HTMLResponse:
    settings = settings_of(viewer.request)  # type: ignore[arg-type]
    rows = await api_templates.template_list(settings)
    return page(viewer, "templates.html", rows=rows)


def _sample_customer(session: Session, locale: str) -> str:
    """A customer to preview for: one who speaks the template's language, if any."""
    found = (
        session.exec(
            select(Customer.external_id).where(Customer.locale == locale).order_by(col(Customer.id))
        ).first()
        or session.exec(select(Customer.external_id).order_by(col(Customer.id))).first()
    )
    return found or ""


@router.get("/{name}/{locale}", response_class=HTMLResponse)
async def template_edit(
    viewer: Marketer,
    name: Name,
    locale: Locale,
    customer: Annotated[str, Query(max_length=128)] = "",
) -> HTMLResponse:
    settings = settings_of(viewer.request)  # type: ignore[arg-type]
    parts = api_templates._saved(settings, name, locale)
    customer = customer or await in_thread(settings, _sample_customer, locale)
    return page(
        viewer,
        "template_edit.html",
        name=name,
        locale=locale,
        parts=parts,
        all_parts=ALL_PARTS,
        customer=customer,
        new=not parts,
        saved=viewer.request.query_params.get("saved"),  # type: ignore[union-attr]
        sent=viewer.request.query_params.get("sent"),  # type: ignore[union-attr]
    )


def _parts(form: dict[str, str]) -> dict[Any, str]:
    """The template parts in a posted form, by part name (``subject.txt`` ...)."""
    return {p: form[p] for p in ALL_PARTS if p in form}


@router.post("/{name}/{locale}/preview", response_class=HTMLResponse)
async def template_preview(
    request: Request, viewer: Marketer, name: Name, locale: Locale
) -> HTMLResponse:
    """The drafts rendered for the customer, as they would be sent (htmx, as one types)."""
    form = await form_of(request, viewer)
    settings = settings_of(request)
    rendered, problem = await _render(settings, name, locale, form)
    return page(viewer, "_template_preview.html", rendered=rendered, problem=problem)


async def _render(settings: Any, name: str, locale: str, form: dict[str, str]) -> tuple[Any, Any]:
    customer = form.get("customer", "").strip()
    if not customer:
        return None, {"message": "", "items": [], "need_customer": True}
    try:
        body = api_templates.PreviewIn(customer_id=customer, parts=_parts(form))
    except ValueError:
        return None, {"message": "", "items": [], "need_customer": True}
    result, problem = await call(api_templates.template_preview(settings, name, locale, body))
    if problem is not None:
        return None, {"message": problem.message, "items": problem.items, "need_customer": False}
    return result["rendered"], None


@router.post("/{name}/{locale}", response_class=HTMLResponse)
async def template_save(request: Request, viewer: Marketer, name: Name, locale: Locale) -> Response:
    form = await form_of(request, viewer)
    settings = settings_of(request)
    parts = {p: t for p, t in _parts(form).items() if t.strip() or p in ("body.txt",)}
    if not parts:
        raise Refused(422, viewer._("Write at least one part of the template."))
    body = api_templates.PartsIn.model_construct(parts=parts)
    _, problem = await call(api_templates.template_write(settings, name, locale, body, request))
    if problem is not None:
        return page(
            viewer,
            "template_edit.html",
            code=422,
            name=name,
            locale=locale,
            parts=parts,
            all_parts=ALL_PARTS,
            customer=form.get("customer", ""),
            new=False,
            saved=None,
            sent=None,
            problem=problem,
        )
    customer = form.get("customer", "")
    return RedirectResponse(
        f"/console/templates/{name}/{locale}?saved=1&customer={customer}", status_code=303
    )


@router.post("/{name}/{locale}/test", response_class=HTMLResponse)
async def template_test(
    request: Request, viewer: Marketer, name: Name, locale: Locale
) -> HTMLResponse:
    """Send the drafts, rendered for the chosen customer, to the signed-in user's address."""
    form = await form_of(request, viewer)
    settings = settings_of(request)
    assert viewer.user is not None
    username = viewer.user.username
    address = await in_thread(settings, lambda s: get_user(s, username).email)
    _ = viewer._
    if not address:
        return page(
            viewer,
            "_notice.html",
            code=409,
            error=True,
            text=_(
                "Your user has no email address; an admin sets it with "
                "clientela users add or in Users."
            ),
        )
    rendered, problem = await _render(settings, name, locale, form)
    if problem is not None or not rendered:
        return page(
            viewer,
            "_template_preview.html",
            code=422,
            rendered=None,
            problem=problem
            or {"message": _("Nothing to send."), "items": [], "need_customer": False},
        )
    if "subject.txt" not in rendered or "body.html" not in rendered:
        return page(
            viewer,
            "_notice.html",
            code=422,
            error=True,
            text=_("A test email needs a subject and an HTML body."),
        )
    content = RenderedEmail(
        subject=f"[TEST] {rendered['subject.txt']}",
        html=rendered["body.html"],
        text=rendered.get("body.txt", ""),
    )
    email = build_email(
        key=f"test:{name}:{locale}:{uuid.uuid4().hex}",
        sender=settings.mail_from,
        to=address,
        content=content,
        headers={"X-Clientela-Test": "1"},
    )
    transport = EmailTransport(settings)
    try:
        accepted: SendAccepted = await transport.send(email)
    except SendError as exc:  # the relay's refusal, shown as is
        return page(
            viewer,
            "_notice.html",
            code=502,
            error=True,
            text=_("The test could not be sent: %(why)s", why=str(exc)),
        )
    finally:
        await transport.close()
    await audited(
        request,
        "template.test_sent",
        f"template:{name}/{locale}",
        to=address,
        customer=form.get("customer", ""),
        provider_id=accepted.provider_id,
    )
    return page(
        viewer,
        "_notice.html",
        error=False,
        text=_("A test was sent to %(address)s.", address=address),
    )
