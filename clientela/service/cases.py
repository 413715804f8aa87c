"""Complaint cases: opened by a complaint event, answered and resolved by the service team,
rated by the customer. The database holds each case; the ``ComplaintCase`` workflow keeps its
clock (acknowledgement, reminders, escalation, the satisfaction survey).

Every change here is written first and the workflow told afterwards, so a case whose
workflow cannot be reached loses nothing: the workflow reads the case again before each
reminder or escalation, and an answer recorded in the meantime stops it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from clientela.customers.records import get_customer, record_interaction
from clientela.db import session_scope
from clientela.people import audit
from clientela.timeutil import as_utc, utcnow
from models import Complaint, ComplaintState, Customer, Direction
from rules.model import ServiceLevel

#: Steps of a case, in the order they can happen; each is recorded once on the case.
ACKNOWLEDGED = "acknowledged"
REMINDED_RESPONSE = "reminded:response"
ESCALATED_RESPONSE = "escalated:response"
REMINDED_RESOLUTION = "reminded:resolution"
ESCALATED_RESOLUTION = "escalated:resolution"
SURVEYED = "surveyed"
CLOSED = "closed"


class UnknownComplaint(LookupError):
    pass


class CaseConflict(ValueError):
    """The case is not in a state that allows this (e.g. a score before the resolution)."""


def workflow_id(complaint_id: int, uid: str) -> str:
    return f"complaint-{complaint_id}-{uid}"


def open_case(
    session: Session, customer: Customer, *, code: str, description: str, channel: str
) -> Complaint:
    """A new case, open; ``set_level`` gives it its responsible and due times."""
    assert customer.id is not None
    row = Complaint(customer_id=customer.id, code=code, description=description, channel=channel)
    session.add(row)
    session.flush()
    return row


def set_level(
    row: Complaint, tier: str | None, level: ServiceLevel | None, time_scale: float = 1.0
) -> None:
    """The tier's service level (none before any rules run: no due times then).

    ``time_scale`` (``CLIENTELA_JOURNEY_TIME_SCALE``) shrinks its hours for demos and tests."""
    row.tier = tier
    if level is None:
        return
    hour = timedelta(hours=1) * time_scale
    row.responsible = level.responsible
    row.responsible_email = level.responsible_email or ""
    row.escalate_to = level.escalate_to or ""
    row.due_at = row.opened_at + hour * level.complaint_response_hours
    if level.complaint_resolution_hours is not None:
        row.resolution_due_at = row.opened_at + hour * level.complaint_resolution_hours
    row.remind_before_s = (hour * level.remind_before).total_seconds()


def get_case(session: Session, complaint_id: int, *, lock: bool = False) -> Complaint:
    row = session.get(Complaint, complaint_id, with_for_update=lock)
    if row is None:
        raise UnknownComplaint(f"no complaint with id {complaint_id}")
    return row


def respond(session: Session, complaint_id: int, *, by: str, note: str = "") -> Complaint:
    """The first answer to the customer; a later one changes nothing (the first counts)."""
    row = get_case(session, complaint_id, lock=True)
    if row.responded_at is None:
        row.responded_at, row.responded_by, row.response = utcnow(), by, note
        if row.state == ComplaintState.open:
            row.state = ComplaintState.responded
        session.add(row)
        _log(session, row, "responded", {"by": by})
    return row


def resolve(session: Session, complaint_id: int, *, by: str, resolution: str = "") -> Complaint:
    """Resolve the case (it counts as answered too, if it was not); once."""
    row = get_case(session, complaint_id, lock=True)
    if row.resolved_at is not None:
        return row
    now = utcnow()
    if row.responded_at is None:
        row.responded_at, row.responded_by, row.response = now, by, resolution
    row.resolved_at, row.resolved_by, row.resolution = now, by, resolution
    row.state = ComplaintState.resolved
    session.add(row)
    _log(session, row, "resolved", {"by": by})
    return row


def rate(session: Session, complaint_id: int, *, score: int, comment: str = "") -> Complaint:
    """The customer's satisfaction, 1 (very unhappy) to 5 (very happy): once, after the
    resolution."""
    if not 1 <= score <= 5:
        raise CaseConflict(f"score must be 1 to 5, not {score}")
    row = get_case(session, complaint_id, lock=True)
    if row.resolved_at is None:
        raise CaseConflict(f"complaint {complaint_id} is not resolved yet; rate it afterwards")
    if row.satisfaction is not None:
        raise CaseConflict(f"complaint {complaint_id} was rated already ({row.satisfaction})")
    row.satisfaction, row.satisfaction_comment, row.rated_at = score, comment, utcnow()
    session.add(row)
    _log(session, row, "rated", {"score": score})
    return row


def mark(session: Session, complaint_id: int, step: str, detail: dict[str, Any]) -> Complaint:
    """Record a step the case workflow took (once: the first record stays)."""
    row = get_case(session, complaint_id, lock=True)
    if step in row.steps:
        return row
    now = utcnow()
    row.steps = {**row.steps, step: {"at": now.isoformat(), **detail}}
    if step == ACKNOWLEDGED:
        row.acknowledged_at = now
    elif step in (ESCALATED_RESPONSE, ESCALATED_RESOLUTION) and row.escalated_at is None:
        row.escalated_at = now
    elif step == CLOSED:
        row.closed_at, row.state = now, ComplaintState.closed
    session.add(row)
    _log(session, row, step.replace(":", " "), detail)
    return row


def _log(session: Session, row: Complaint, outcome: str, detail: dict[str, Any]) -> None:
    record_interaction(
        session=session,
        customer_id=row.customer_id,
        channel="service",
        direction=Direction.outbound if outcome != "rated" else Direction.inbound,
        kind="complaint",
        outcome=outcome[:64],
        detail={"complaint": row.id, "code": row.code, **detail},
    )


def view(row: Complaint, customer_id: str, now: datetime | None = None) -> dict[str, Any]:
    """A case as plain data (API, CLI), with its breaches as of ``now``."""
    now = now or utcnow()
    return {
        "id": row.id,
        "customer_id": customer_id,
        "code": row.code,
        "description": row.description,
        "channel": row.channel,
        "tier": row.tier,
        "state": row.state,
        "responsible": row.responsible,
        "opened_at": iso(row.opened_at),
        "due_at": iso(row.due_at),
        "resolution_due_at": iso(row.resolution_due_at),
        "acknowledged_at": iso(row.acknowledged_at),
        "responded_at": iso(row.responded_at),
        "responded_by": row.responded_by or None,
        "resolved_at": iso(row.resolved_at),
        "resolved_by": row.resolved_by or None,
        "resolution": row.resolution or None,
        "escalated_at": iso(row.escalated_at),
        "breached": breaches(row, now),
        "satisfaction": row.satisfaction,
        "closed_at": iso(row.closed_at),
        "steps": row.steps,
        "workflow_id": workflow_id(row.id or 0, row.uid),
    }


def breaches(row: Complaint, now: datetime) -> list[str]:
    """Which service levels the case broke (or is breaking now): response, resolution."""
    out = []
    due, answered = as_utc(row.due_at), as_utc(row.responded_at)
    if due is not None and (answered or now) > due:
        out.append("response")
    due, resolved = as_utc(row.resolution_due_at), as_utc(row.resolved_at)
    if due is not None and (resolved or now) > due:
        out.append("resolution")
    return out


def list_cases(
    session: Session,
    *,
    state: str | None = None,
    customer_id: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Cases as plain data, newest first; ``state`` ``unresolved`` is open and answered ones.
    An unknown ``customer_id`` raises ``UnknownCustomer``."""
    query = select(Complaint, Customer.external_id).join(
        Customer, col(Customer.id) == col(Complaint.customer_id)
    )
    if state == "unresolved":
        query = query.where(col(Complaint.resolved_at).is_(None))
    elif state:
        query = query.where(Complaint.state == state)
    if customer_id is not None:
        customer = get_customer(session=session, external_id=customer_id)
        query = query.where(Complaint.customer_id == customer.id)
    rows = session.exec(query.order_by(col(Complaint.id).desc()).limit(limit)).all()
    return [view(row, external_id) for row, external_id in rows]


def apply(
    db_url: str,
    complaint_id: int,
    change: Callable[[Session], Complaint] | None = None,
    *,
    actor: str = "",
    action: str = "",
    detail: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], str]:
    """Apply ``change(session)`` to a case in one transaction (or only read it): the case as
    plain data, and its uid (to wake its workflow with ``journeys.tell_case``). A change is
    recorded in the audit trail as ``action`` by ``actor``, in the same transaction."""
    with session_scope(db_url) as session:
        row = change(session) if change else get_case(session, complaint_id)
        if change is not None and action:
            audit.record(
                session,
                actor=actor or "unknown",
                action=action,
                subject=f"complaint:{complaint_id}",
                detail=detail,
            )
        customer = session.get(Customer, row.customer_id)
        assert customer is not None
        return view(row, customer.external_id), row.uid


def unstarted(session: Session, older_than: timedelta) -> list[tuple[int, str]]:
    """Cases never acknowledged, opened ``older_than`` ago or more: their workflow may not
    have started (the API stopped between the commit and the start)."""
    cutoff = utcnow() - older_than
    return [
        (complaint_id, uid)
        for complaint_id, uid in session.exec(
            select(Complaint.id, Complaint.uid).where(
                col(Complaint.acknowledged_at).is_(None),
                col(Complaint.closed_at).is_(None),
                col(Complaint.opened_at) < cutoff,
            )
        ).all()
        if complaint_id is not None
    ]


def iso(value: datetime | None) -> str | None:
    value = as_utc(value)
    return value.isoformat() if value is not None else None
