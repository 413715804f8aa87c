"""Things that happen to a customer and re-decide its tier at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlmodel import Session

from clientela.customers.records import get_customer, record_interaction, upsert_customer
from clientela.service import cases as complaints
from clientela.timeutil import utcnow
from models import Campaign, Customer, Direction, Order, Transaction
from models.schemas import CustomerIn
from rules import service


@dataclass
class Outcome:
    customer_id: str
    tier: str | None
    changed: bool
    detail: dict[str, Any]
    previous_tier: str | None = None
    entered_segments: list[str] = field(default_factory=list)
    key: str = ""  # names what happened (a transaction, an interaction), for journeys
    case: tuple[int, str] | None = None  # a complaint case opened: (id, uid)

    def as_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "tier": self.tier,
            "tier_changed": self.changed,
            **self.detail,
        }

    def direction(self, levels: list[str]) -> str:
        """up (towards the first level), down, or '' when the tier did not change."""
        if not self.changed or self.tier not in levels:
            return ""
        if self.previous_tier not in levels:
            return "up"
        return "up" if levels.index(self.tier) < levels.index(self.previous_tier) else "down"


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


def _decided(
    session: Session,
    customer: Customer,
    trigger: str,
    today: date,
    detail: dict[str, Any],
    key: str = "",
) -> Outcome:
    """Decide again, and say what changed: the tier (from, to) and the segments entered."""
    before_tier, before_segments = customer.tier, set(customer.segments)
    tier, changed = redecide(session, customer, trigger, today)
    entered = sorted(set(customer.segments) - before_segments)
    return Outcome(customer.external_id, tier, changed, detail, before_tier, entered, key)


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
    transaction = Transaction(
        customer_id=customer.id,
        amount=amount,
        currency=currency,
        product=product,
        occurred_at=at or utcnow(),
    )
    session.add(transaction)
    session.flush()
    return _decided(session, customer, "purchase", today, {}, f"t{transaction.id}")


def complaint(
    session: Session,
    *,
    customer_id: str,
    code: str,
    description: str,
    channel: str = "",
    today: date,
    time_scale: float = 1.0,
) -> Outcome:
    """Open a coded complaint case; its responsible and due times come from the tier's
    service level (``complaints.open_case``)."""
    customer = get_customer(session=session, external_id=customer_id)
    assert customer.id is not None
    record_interaction(
        session=session,
        customer_id=customer.id,
        channel=channel or "service",
        direction=Direction.inbound,
        kind="complaint",
        outcome="opened",
        detail={"code": code},
    )
    row = complaints.open_case(
        session, customer, code=code, description=description, channel=channel
    )
    decided = _decided(session, customer, "complaint", today, {}, f"c{row.id}")
    latest = service.latest_run(session)
    level = None
    if latest is not None and decided.tier is not None:
        policy = service.rules_of(latest[1]).spec.policies.get(decided.tier)
        level = policy.service_level if policy else None
    complaints.set_level(row, decided.tier, level, time_scale)
    session.add(row)
    assert row.id is not None
    decided.detail = {
        "complaint": {
            "id": row.id,
            "code": code,
            "responsible": row.responsible or None,
            "due_at": row.due_at.isoformat() if row.due_at else None,
            "resolution_due_at": (
                row.resolution_due_at.isoformat() if row.resolution_due_at else None
            ),
            "workflow_id": complaints.workflow_id(row.id, row.uid),
        }
    }
    decided.case = (row.id, row.uid)
    return decided


def profile(session: Session, *, data: CustomerIn, today: date) -> Outcome:
    customer, created = upsert_customer(session=session, data=data)
    session.flush()
    return _decided(session, customer, "profile change", today, {"created": created})


class UnknownCampaign(LookupError):
    pass


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
    message_key: str | None = None,
    detail: dict[str, Any] | None = None,
) -> tuple[Outcome, Order | None]:
    """A response in the customer's history; a conversion with a value places an order.

    What the customer did feeds back at once: the tier and segments are decided again (the
    responsiveness fields, e.g. ``response_rate`` and ``responsive_channel``, come from this
    history). Returns the outcome and the order placed, if any.
    """
    customer = get_customer(session=session, external_id=customer_id)
    assert customer.id is not None
    if campaign is not None and session.get(Campaign, campaign) is None:
        raise UnknownCampaign(
            f"no campaign {campaign!r}; `clientela campaign list` shows them (leave campaign "
            "out for a response to no campaign)"
        )
    interaction = record_interaction(
        session=session,
        customer_id=customer.id,
        channel=channel,
        direction=Direction.inbound,
        kind=kind,
        outcome="responded",
        journey=journey,
        campaign=campaign,
        message_key=message_key,
        detail={**(detail or {}), **({} if value is None else {"value": float(value)})},
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
    outcome = _decided(
        session,
        customer,
        f"response ({kind})",
        today,
        {"order": order.id if order else None},
        f"i{interaction.id}",
    )
    return outcome, order
