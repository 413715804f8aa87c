"""The single customer view."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException

from api.deps import SettingsDep, for_roles
from api.models import (
    CustomerView,
    errors,
)
from clientela.customers.records import (
    UnknownCustomer,
    customer_view,
)
from clientela.db import session_scope
from clientela.settings import Settings
from models.schemas import ExternalId

router = APIRouter(tags=["customers"])


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
