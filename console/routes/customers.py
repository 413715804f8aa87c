"""Customers in the console: search, the single customer view with the rules' explanation
and a timeline of everything sent and received, and an export of one customer's data."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.deps import audited, client_of
from api.routes.customers import _view
from clientela.customers.records import UnknownCustomer, get_customer, search_customers
from clientela.db import session_scope
from clientela.journeys.runs import journey_list
from console.web import (
    CUSTOMER_READERS,
    Refused,
    Viewer,
    call,
    form_of,
    in_thread,
    page,
    role,
    settings_of,
)
from models.schemas import EXTERNAL_ID_PATTERN

router = APIRouter(prefix="/customers")

Reader = Annotated[Viewer, role(*CUSTOMER_READERS)]
CustomerId = Annotated[str, Path(pattern=EXTERNAL_ID_PATTERN)]


@router.get("", response_class=HTMLResponse)
async def customer_search(
    viewer: Reader,
    q: Annotated[str, Query(max_length=128)] = "",
    erased: Annotated[str, Query(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}$")] = "",
) -> HTMLResponse:
    settings = settings_of(viewer.request)  # type: ignore[arg-type]
    q = "".join(ch for ch in q if ch.isprintable()).strip()
    hits = await in_thread(settings, search_customers, q, 50) if q else []
    return page(viewer, "customers.html", q=q, hits=hits, erased=erased)


def _timeline(view: dict[str, Any]) -> list[dict[str, Any]]:
    """Messages, responses, purchases and complaints, newest first."""
    items: list[dict[str, Any]] = []
    for m in view["messages"]:
        items.append(
            {
                "at": m["sent_at"] or "",
                "kind": "message",
                "channel": m["channel"],
                "what": m["template"],
                "outcome": m["state"],
                "reason": m["reason"],
                "source": m["campaign"] or m["journey"] or "",
            }
        )
    for h in view["history"]:
        if h["direction"] == "inbound":
            detail = h.get("detail") or {}
            items.append(
                {
                    "at": h["at"] or "",
                    "kind": "email_open" if h["kind"] == "open" else h["kind"],
                    "channel": h["channel"],
                    # which link, the machine rule, the bounce's status, the reply's words
                    "what": " ".join(
                        str(detail[k])
                        for k in ("topic", "url", "status", "diagnostic", "text", "source")
                        if detail.get(k)
                    )[:200],
                    "outcome": h["outcome"] or "",
                    "reason": str(detail.get("machine", "")),
                    "source": h["campaign"] or h["journey"] or "",
                }
            )
    for t in view["transactions"]:
        items.append(
            {
                "at": t["at"] or "",
                "kind": "purchase",
                "channel": "",
                "what": f"{t['amount']} {t['currency']}",
                "outcome": t["product"] or "",
                "reason": "",
                "source": "",
            }
        )
    for k in view["complaints"]:
        items.append(
            {
                "at": k["opened_at"] or "",
                "kind": "complaint",
                "channel": "",
                "what": f"#{k['id']} {k['code']}",
                "outcome": k["state"],
                "reason": "",
                "source": "",
            }
        )
    return sorted(items, key=lambda i: i["at"], reverse=True)


@router.get("/{customer_id}", response_class=HTMLResponse)
async def customer_page(request: Request, viewer: Reader, customer_id: CustomerId) -> HTMLResponse:
    from rules.service import explain_customer

    settings = settings_of(request)
    try:
        view = await in_thread(settings, lambda s: _view(settings, customer_id))
        explanation = await in_thread(
            settings,
            lambda s: explain_customer(s, get_customer(session=s, external_id=customer_id)),
        )
    except UnknownCustomer:
        raise Refused(404, viewer._("There is no customer %(id)s.", id=customer_id)) from None
    try:
        client = await client_of(request.app)
        journeys = await journey_list(client, customer_id, None, limit=50)
    except Exception:  # Temporal down: the page shows the rest and says so
        journeys = None
    return page(
        viewer,
        "customer.html",
        c=view,
        explanation=explanation,
        journeys=journeys,
        timeline=_timeline(view),
    )


@router.get("/{customer_id}/export")
async def customer_export(request: Request, viewer: Reader, customer_id: CustomerId) -> Response:
    """Everything held on the customer, as JSON (a data subject's access request)."""
    from clientela.customers.export import export_customer

    settings = settings_of(request)

    def read(s: Any) -> dict[str, Any]:
        with session_scope(settings.db_url) as session:
            return export_customer(session, customer_id)

    try:
        view = await in_thread(settings, read)
    except UnknownCustomer:
        raise Refused(404, viewer._("There is no customer %(id)s.", id=customer_id)) from None
    await audited(request, "customer.exported", f"customer:{customer_id}")
    return Response(
        json.dumps(view, indent=2, ensure_ascii=False, default=str),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="customer-{customer_id}.json"'},
    )


@router.post("/{customer_id}/erase", response_class=HTMLResponse)
async def customer_erase(
    request: Request, viewer: Annotated[Viewer, role("admin")], customer_id: CustomerId
) -> Response:
    """Erase the customer (admins; the page asks for a confirmation first)."""
    from api.routes.customers import customer_erase as erase

    await form_of(request, viewer)
    settings = settings_of(request)
    _done, problem = await call(erase(settings, customer_id, request))
    if problem is not None:
        raise Refused(problem.status, problem.message)
    return RedirectResponse(f"/console/customers?erased={customer_id}", status_code=303)
