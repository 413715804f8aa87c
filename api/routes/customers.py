"""The single customer view."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request

from api.deps import SettingsDep, client_of, for_roles
from api.models import CustomerErased, CustomerHit, CustomerView, TierExplanation, errors
from clientela.customers.records import (
    UnknownCustomer,
    customer_view,
    get_customer,
    search_customers,
)
from clientela.db import session_scope
from clientela.settings import Settings
from models.schemas import ExternalId

router = APIRouter(tags=["customers"])


@router.get(
    "/customers",
    dependencies=for_roles("desk", "marketer", "admin"),
    response_model=list[CustomerHit],
    responses=errors(401, 403),
)
async def customer_search(
    settings: SettingsDep,
    q: Annotated[
        str,
        Query(
            min_length=1,
            max_length=128,
            description="an id, an email, a phone number, or the start of a name",
        ),
    ],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> list[dict[str, Any]]:
    """Find customers: exact id, email or phone first, then names starting so."""

    def find() -> list[dict[str, Any]]:
        with session_scope(settings.db_url) as session:
            return search_customers(session, q, limit)

    return await asyncio.to_thread(find)


@router.get(
    "/customers/{customer_id}/explanation",
    dependencies=for_roles("desk", "marketer", "admin"),
    response_model=TierExplanation,
    responses=errors(401, 403, 404),
)
async def customer_explanation(settings: SettingsDep, customer_id: ExternalId) -> dict[str, Any]:
    """Why the customer is in its tier: the rule, its version, each condition and its values
    (as `clientela rules explain`)."""
    from rules.service import explain_customer

    def read() -> dict[str, Any] | None:
        with session_scope(settings.db_url) as session:
            return explain_customer(session, get_customer(session=session, external_id=customer_id))

    try:
        found = await asyncio.to_thread(read)
    except UnknownCustomer as exc:
        raise HTTPException(404, str(exc)) from None
    if found is None:
        raise HTTPException(404, f"no decision for {customer_id!r} yet: the rules have not run")
    return found


@router.get(
    "/customers/{customer_id}",
    dependencies=for_roles("desk", "marketer", "admin"),
    response_model=CustomerView,
    responses=errors(401, 403, 404),
)
async def customer(settings: SettingsDep, customer_id: ExternalId) -> dict[str, Any]:
    try:
        return await asyncio.to_thread(_view, settings, customer_id)
    except UnknownCustomer as exc:
        raise HTTPException(404, str(exc)) from None


def _view(settings: Settings, customer_id: str) -> dict[str, Any]:
    with session_scope(settings.db_url) as session:
        return customer_view(session=session, external_id=customer_id)


@router.get(
    "/customers/{customer_id}/export",
    dependencies=for_roles("desk", "admin"),
    response_model=dict[str, Any],
    responses=errors(401, 403, 404),
)
async def customer_export(
    settings: SettingsDep, customer_id: ExternalId, request: Request
) -> dict[str, Any]:
    """Everything held about the customer as one JSON document (a data subject's access
    request): every row of every table that refers to them. Audited."""
    from clientela.customers.export import export_customer
    from clientela.people import audit

    actor = getattr(request.state, "actor", "api")

    def read() -> dict[str, Any]:
        with session_scope(settings.db_url) as session:
            doc = export_customer(session, customer_id)
            audit.record(
                session, actor=actor, action="customer.exported", subject=f"customer:{customer_id}"
            )
            return doc

    try:
        return await asyncio.to_thread(read)
    except UnknownCustomer as exc:
        raise HTTPException(404, str(exc)) from None


@router.delete(
    "/customers/{customer_id}",
    dependencies=for_roles("admin"),
    response_model=CustomerErased,
    responses=errors(401, 403, 404, 503),
)
async def customer_erase(
    settings: SettingsDep, customer_id: ExternalId, request: Request
) -> dict[str, Any]:
    """Erase the customer (a data subject's request): their journeys and open cases stop,
    then their personal data goes from every table (the counts they were part of stay, on an
    anonymous record) and each address is kept as a salted hash against re-import without
    fresh consent; audited with counts only."""
    from clientela.customers.erasure import erase_customer

    client = await client_of(request.app)
    try:
        return await erase_customer(
            client, settings, customer_id, actor=getattr(request.state, "actor", "api")
        )
    except UnknownCustomer as exc:
        raise HTTPException(404, str(exc)) from None
