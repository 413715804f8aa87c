"""The audit trail: who changed what, when."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import SettingsDep, for_roles
from api.models import AuditEntry, errors
from clientela.db import session_scope
from clientela.people import audit

router = APIRouter(tags=["audit"])


@router.get(
    "/audit",
    dependencies=for_roles("admin", "approver"),
    response_model=list[AuditEntry],
    responses=errors(401, 403),
)
async def audit_trail(
    settings: SettingsDep,
    subject: Annotated[
        str | None,
        Query(max_length=255, description="e.g. campaign:spring-2027, or campaign:* for all"),
    ] = None,
    actor: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Changes of state, newest first."""

    def read() -> list[dict[str, Any]]:
        with session_scope(settings.db_url) as session:
            events = audit.recent(session, limit=limit, subject=subject, actor=actor)
            return [audit.as_dict(e) for e in events]

    return await asyncio.to_thread(read)
