"""The audit trail: every change of state, with who, when and what changed."""

from __future__ import annotations

import getpass
from typing import Any

from sqlmodel import Session, col, select

from clientela.db import session_scope
from models.people import AuditEvent


def cli_actor() -> str:
    """Who a command run on the server is, until commands sign in: the system account."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    subject: str,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    event = AuditEvent(actor=actor[:128], action=action, subject=subject[:255], detail=detail or {})
    session.add(event)
    return event


def record_now(
    db_url: str,
    *,
    actor: str,
    action: str,
    subject: str,
    detail: dict[str, Any] | None = None,
) -> None:
    """``record`` in a transaction of its own (after a change made outside the database)."""
    with session_scope(db_url) as session:
        record(session, actor=actor, action=action, subject=subject, detail=detail)


def recent(
    session: Session, *, limit: int = 100, subject: str | None = None, actor: str | None = None
) -> list[AuditEvent]:
    """Newest first; ``subject`` may end in ``*`` to match a prefix (``campaign:*``)."""
    query = select(AuditEvent)
    if subject:
        if subject.endswith("*"):
            query = query.where(col(AuditEvent.subject).startswith(subject[:-1]))
        else:
            query = query.where(AuditEvent.subject == subject)
    if actor:
        query = query.where(AuditEvent.actor == actor)
    return list(session.exec(query.order_by(col(AuditEvent.id).desc()).limit(limit)))


def as_dict(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "at": event.at.isoformat(),
        "actor": event.actor,
        "action": event.action,
        "subject": event.subject,
        "detail": event.detail,
    }
