"""Things that happen to a customer and re-decide its tier at once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlmodel import Session

from clientela.customers import get_customer, record_interaction, upsert_customer
from clientela.timeutil import utcnow
from models import Complaint, Customer, Direction, Order, Transaction
from models.schemas import CustomerIn
from rules import service


@dataclass
class Outcome:
    customer_id: str
    tier: str | None
    changed: bool
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "tier": self.tier,
            "tier_changed": self.changed,
            **self.detail,
        }


def redecide(
    session: Session, customer: Customer, trigger: str, today: date | None = None
) -> tuple[str | None, bool]:
    """Decide the customer's tier and segments again now; (tier, whether it changed)."""
    today = today or utcnow().date()
    result = service.reevaluate(session, customer, trigger=trigger, today=today)
    if result is None:
        return customer.tier, False
    decision, changed = result
    return decision.tier, changed


def purchase(
    session: Session,
    *,
    customer_id: str,
    amount: Decimal,
    currency: str,
    product: str,
    at: datetime | None,
    today: date,
) -> Outcome:
    customer = get_customer(session=session, external_id=customer_id)
    assert customer.id is not None
    session.add(
        Transaction(
            customer_id=customer.id,
            amount=amount,
            currency=currency,
            product=product,
            occurred_at=at or utcnow(),
        )
    )
    session.flush()
    tier, changed = redecide(session, customer, "purchase", today)
    return Outcome(customer_id, tier, changed, {})


def complaint(
    session: Session, *, customer_id: str, code: str, description: str, today: date
) -> Outcome:
    """Open a coded complaint; its due time comes from the tier's service level."""
    customer = get_customer(session=session, external_id=customer_id)
    assert customer.id is not None
    record_interaction(
        session=session,
        customer_id=customer.id,
        channel="service",
        direction=Direction.inbound,
        kind="complaint",
        outcome="opened",
        detail={"code": code},
    )
    row = Complaint(customer_id=customer.id, code=code, description=description)
    session.add(row)
    session.flush()
    tier, changed = redecide(session, customer, "complaint", today)
    latest = service.latest_run(session)
    if latest is not None and tier is not None:
        level = service.rules_of(latest[1]).spec.policies[tier].service_level
        row.responsible = level.responsible
        row.due_at = row.opened_at + timedelta(hours=level.complaint_response_hours)
        session.add(row)
    return Outcome(
        customer_id,
        tier,
        changed,
        {
            "complaint": {
                "code": code,
                "responsible": row.responsible or None,
                "due_at": row.due_at.isoformat() if row.due_at else None,
            }
        },
    )


def profile(session: Session, *, data: CustomerIn, today: date) -> Outcome:
    customer, created = upsert_customer(session=session, data=data)
    session.flush()
    tier, changed = redecide(session, customer, "profile change", today)
    return Outcome(data.external_id, tier, changed, {"created": created})


def response(
    session: Session,
    *,
    customer_id: str,
    kind: str,
    channel: str,
    journey: str | None,
    campaign: str | None,
    value: Decimal | None,
    today: date,
) -> tuple[Outcome, Order | None]:
    """A response in the customer's history; a conversion with a value places an order.

    What the customer did feeds back at once: the tier and segments are decided again (the
    responsiveness fields, e.g. ``response_rate`` and ``responsive_channel``, come from this
    history). Returns the outcome and the order placed, if any.
    """
    customer = get_customer(session=session, external_id=customer_id)
    assert customer.id is not None
    interaction = record_interaction(
        session=session,
        customer_id=customer.id,
        channel=channel,
        direction=Direction.inbound,
        kind=kind,
        outcome="responded",
        journey=journey,
        campaign=campaign,
        detail={} if value is None else {"value": float(value)},
    )
    session.flush()
    order = None
    if kind == "conversion" and value:
        order = Order(
            key=f"interaction:{interaction.id}",
            customer_id=customer.id,
            campaign=campaign,
            value=value,
        )
        session.add(order)
        session.flush()
    tier, changed = redecide(session, customer, f"response ({kind})", today)
    return Outcome(customer_id, tier, changed, {"order": order.id if order else None}), order
