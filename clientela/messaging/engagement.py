"""Recording a tracked click or open (``clientela.messaging.tracking`` says which is whose)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete
from sqlmodel import Session, col, select

from clientela.customers import realtime
from clientela.customers.records import record_interaction
from clientela.journeys import router as journey_router
from clientela.messaging.tracking import machine, stripe
from clientela.settings import Settings
from clientela.timeutil import as_utc, utcnow
from models import Campaign, Customer, Direction, Interaction, Message

#: History kinds of tracked hits: a person's, and a machine's (never a response).
PERSON = ("open", "click")
MACHINE = ("machine_open", "machine_click")


@dataclass(frozen=True)
class Visit:
    """What the request says about who made it (nothing of it is stored)."""

    method: str = "GET"
    user_agent: str = ""
    client: str | None = None
    purpose: str = ""


@dataclass
class Hit:
    """What a hit did: ``person`` (a response, recorded), ``machine`` (counted apart),
    ``again`` (this link or open was recorded before) or ``unknown`` (no such message)."""

    recorded: str
    reason: str = ""
    customer_id: str = ""
    held: list[int] = field(default_factory=list)


def record(
    session: Session, settings: Settings, *, kind: str, key: str, url: str, visit: Visit
) -> Hit:
    """Record one hit in the caller's transaction (``kind``: open or click)."""
    with stripe(key):
        return _record(session, settings, kind=kind, key=key, url=url, visit=visit)


def _record(
    session: Session, settings: Settings, *, kind: str, key: str, url: str, visit: Visit
) -> Hit:
    message = session.exec(select(Message).where(Message.key == key)).first()
    if message is None:
        return Hit("unknown")  # erased since, or from another installation
    customer = session.get(Customer, message.customer_id)
    if customer is None or customer.id is None:
        return Hit("unknown")
    reason = machine(
        settings,
        kind=kind,
        method=visit.method,
        user_agent=visit.user_agent,
        client=visit.client,
        purpose=visit.purpose,
        sent_at=as_utc(message.sent_at) or as_utc(message.claimed_at),
        now=utcnow(),
    )
    history_kind = kind if reason is None else f"machine_{kind}"
    seen = session.exec(
        select(Interaction.kind, Interaction.detail).where(
            Interaction.message_key == key, Interaction.kind == history_kind
        )
    ).all()
    if any(kind == "open" or (detail or {}).get("url") == url for _, detail in seen):
        return Hit("again", reason or "", customer.external_id)
    detail: dict[str, str] = {"url": url} if url else {}
    if reason is not None:
        record_interaction(
            session=session,
            customer_id=customer.id,
            channel=message.channel,
            direction=Direction.inbound,
            kind=history_kind,
            outcome="machine",
            journey=message.journey,
            campaign=message.campaign,
            message_key=key,
            detail={**detail, "machine": reason},
        )
        return Hit("machine", reason, customer.external_id)
    # A campaign deleted since: the response still counts, on no campaign.
    campaign = message.campaign
    if campaign is not None and session.get(Campaign, campaign) is None:
        campaign = None
    outcome, _ = realtime.response(
        session,
        customer_id=customer.external_id,
        kind=kind,
        channel=message.channel,
        journey=message.journey,
        campaign=campaign,
        value=None,
        today=datetime.now(UTC).date(),
        message_key=key,
        detail=detail,
    )
    held = journey_router.hold_outcome(session, settings, outcome, kind)
    held += journey_router.hold_signal(session, customer.external_id, kind, message.channel)
    return Hit("person", "", customer.external_id, held)


def forget_old(session: Session, settings: Settings) -> int:
    """Delete tracked hits older than ``tracking_retention`` (none when it is 0)."""
    if not settings.tracking_retention:
        return 0
    cutoff = utcnow() - timedelta(days=settings.tracking_retention)
    done = session.execute(
        delete(Interaction).where(
            col(Interaction.kind).in_(PERSON + MACHINE),
            col(Interaction.message_key).is_not(None),
            col(Interaction.occurred_at) < cutoff,
        )
    )
    return int(done.rowcount or 0)  # type: ignore[attr-defined]
