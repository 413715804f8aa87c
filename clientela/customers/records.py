"""Customer data functions: create or update, import files, the single customer view."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func
from sqlmodel import Session, col, select

from clientela.customers import tombstones
from clientela.tables import RowError, read_rows, validated
from clientela.timeutil import as_utc, utcnow
from models import (
    Channel,
    Complaint,
    Consent,
    ConsentRecord,
    Customer,
    CustomerDecision,
    Direction,
    Interaction,
    Message,
    RuleVersion,
    Suppression,
    TopicPreference,
    Transaction,
)
from models.schemas import CustomerIn
from rules.service import tier_history

PROFILE_FIELDS = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "locale",
    "timezone",
    "birthday",
    "signup_date",
    "preferred_channel",
)
ATTRIBUTE_PREFIX = "attr_"


class UnknownCustomer(LookupError):
    def __init__(self, external_id: str) -> None:
        super().__init__(f"no customer with id {external_id!r}")
        self.external_id = external_id


def get_customer(*, session: Session, external_id: str) -> Customer:
    customer = session.exec(select(Customer).where(Customer.external_id == external_id)).first()
    if customer is None:
        raise UnknownCustomer(external_id)
    return customer


def upsert_customer(*, session: Session, data: CustomerIn) -> tuple[Customer, bool]:
    """Create the customer or update the fields given; returns (customer, created)."""
    customer = session.exec(
        select(Customer).where(Customer.external_id == data.external_id)
    ).first()
    created = customer is None
    if customer is None:
        customer = Customer(external_id=data.external_id)
    given = data.model_fields_set
    for name in PROFILE_FIELDS:
        if created or name in given:
            setattr(customer, name, getattr(data, name))
    if data.attributes:
        customer.attributes = {**customer.attributes, **data.attributes}
    customer.updated_at = utcnow()
    session.add(customer)
    session.flush()
    assert customer.id is not None
    for channel, flag in ((Channel.email, "email_consent"), (Channel.sms, "sms_consent")):
        if created or flag in given:
            set_consent(
                session=session,
                customer_id=customer.id,
                channel=channel,
                granted=getattr(data, flag),
                source=data.consent_source,
            )
    return customer, created


def set_consent(
    *,
    session: Session,
    customer_id: int,
    channel: str,
    granted: bool,
    source: str,
    wording: str = "",
) -> bool:
    """Record consent for a channel; returns True when it changed. Every change, the first
    answer included, is appended to the consent log (``ConsentRecord``) with its source and
    the version of the wording the customer saw; ``Consent`` holds where it stands now.

    A grant for an address erased earlier (a tombstone) is refused, and logged so, unless
    the person gave it by their own act (``tombstones.FRESH``), which lifts the tombstone."""
    if granted:
        owner = session.get(Customer, customer_id)
        address = (owner.email if channel == Channel.email else owner.phone) if owner else None
        if address and tombstones.buried(session, [(channel, address)]):
            if tombstones.fresh(source):
                tombstones.lift(session, channel, address)
            else:
                granted, source = False, f"{source}; {tombstones.REFUSED}"
    source = source[:128]
    row = session.exec(
        select(Consent).where(Consent.customer_id == customer_id, Consent.channel == channel)
    ).first()
    if row is not None and row.granted == granted:
        return False
    first = row is None
    if row is None:
        row = Consent(customer_id=customer_id, channel=channel, granted=granted, source=source)
    else:
        row.granted, row.source, row.recorded_at = granted, source, utcnow()
    session.add(row)
    session.add(
        ConsentRecord(
            customer_id=customer_id,
            channel=channel,
            granted=granted,
            source=source[:128],
            wording=wording[:64],
            recorded_at=row.recorded_at,
        )
    )
    if first and not granted:
        return True  # never asked is not a withdrawal: nothing for the timeline
    session.add(
        Interaction(
            customer_id=customer_id,
            channel=channel,
            direction=Direction.inbound,
            kind="consent",
            outcome="granted" if granted else "withdrawn",
            detail={"source": source},
        )
    )
    return True


def set_topic(
    *,
    session: Session,
    customer_id: int,
    topic: str,
    subscribed: bool,
    source: str,
    wording: str = "",
) -> bool:
    """Subscribe or unsubscribe the customer from a topic (every channel); True when it
    changed. Logged as consent is (``ConsentRecord`` with the topic)."""
    row = session.exec(
        select(TopicPreference).where(
            TopicPreference.customer_id == customer_id, TopicPreference.topic == topic
        )
    ).first()
    if (row.subscribed if row is not None else True) == subscribed:
        return False
    now = utcnow()
    if row is None:
        row = TopicPreference(customer_id=customer_id, topic=topic, subscribed=subscribed,
                              source=source[:128], updated_at=now)  # fmt: skip
    else:
        row.subscribed, row.source, row.updated_at = subscribed, source[:128], now
    session.add(row)
    session.add(
        ConsentRecord(
            customer_id=customer_id,
            topic=topic,
            granted=subscribed,
            source=source[:128],
            wording=wording[:64],
            recorded_at=now,
        )
    )
    session.add(
        Interaction(
            customer_id=customer_id,
            channel="",
            direction=Direction.inbound,
            kind="topic",
            outcome="subscribed" if subscribed else "unsubscribed",
            detail={"source": source, "topic": topic},
        )
    )
    return True


def topics_off(*, session: Session, customer_id: int) -> set[str]:
    """The topics the customer unsubscribed from."""
    return set(
        session.exec(
            select(TopicPreference.topic).where(
                TopicPreference.customer_id == customer_id,
                col(TopicPreference.subscribed).is_(False),
            )
        ).all()
    )


def consent_log(*, session: Session, customer_id: int) -> list[dict[str, Any]]:
    """The customer's consent log, oldest first."""
    rows = session.exec(
        select(ConsentRecord)
        .where(ConsentRecord.customer_id == customer_id)
        .order_by(col(ConsentRecord.id))
    ).all()
    return [
        {
            "at": _plain(r.recorded_at),
            "channel": r.channel,
            "topic": r.topic,
            "granted": r.granted,
            "source": r.source,
            "wording": r.wording,
        }
        for r in rows
    ]


def consents(*, session: Session, customer_id: int) -> dict[str, Consent]:
    rows = session.exec(select(Consent).where(Consent.customer_id == customer_id)).all()
    return {row.channel: row for row in rows}


def suppress(*, session: Session, channel: str, address: str, reason: str) -> None:
    exists = session.exec(
        select(Suppression).where(Suppression.channel == channel, Suppression.address == address)
    ).first()
    if exists is None:
        session.add(Suppression(channel=channel, address=address, reason=reason))


def is_suppressed(*, session: Session, channel: str, address: str) -> Suppression | None:
    return session.exec(
        select(Suppression).where(Suppression.channel == channel, Suppression.address == address)
    ).first()


def record_interaction(
    *,
    session: Session,
    customer_id: int,
    channel: str,
    direction: Direction,
    kind: str,
    outcome: str = "",
    journey: str | None = None,
    campaign: str | None = None,
    message_key: str | None = None,
    detail: dict[str, Any] | None = None,
) -> Interaction:
    row = Interaction(
        customer_id=customer_id,
        channel=channel,
        direction=direction,
        kind=kind,
        outcome=outcome,
        journey=journey,
        campaign=campaign,
        message_key=message_key,
        detail=detail or {},
    )
    session.add(row)
    return row


# --- the single customer view --------------------------------------------------------------


def customer_view(*, session: Session, external_id: str, history: int = 50) -> dict[str, Any]:
    """Everything known about one customer, as plain data (for the CLI and the API)."""
    c = get_customer(session=session, external_id=external_id)
    assert c.id is not None
    interactions = session.exec(
        select(Interaction)
        .where(Interaction.customer_id == c.id)
        .order_by(col(Interaction.occurred_at).desc(), col(Interaction.id).desc())
        .limit(history)
    ).all()
    messages = session.exec(
        select(Message).where(Message.customer_id == c.id).order_by(col(Message.id))
    ).all()
    transactions = session.exec(
        select(Transaction)
        .where(Transaction.customer_id == c.id)
        .order_by(col(Transaction.occurred_at).desc())
    ).all()
    complaints = session.exec(select(Complaint).where(Complaint.customer_id == c.id)).all()
    decision = session.get(CustomerDecision, c.id)
    return {
        "profile": {
            "id": c.external_id,
            **{name: _plain(getattr(c, name)) for name in PROFILE_FIELDS},
            "tier": c.tier,
            "segments": c.segments,
            "attributes": c.attributes,
            "created_at": _plain(c.created_at),
            "updated_at": _plain(c.updated_at),
        },
        "decision": None
        if decision is None
        else {
            "tier": decision.tier,
            "tier_rule": decision.tier_rule,
            "segments": decision.segments,
            "offers": decision.offers,
            "rule_version": _version_of(session, decision.rule_version_id),
            "decided_at": _plain(decision.decided_at),
        },
        "tier_history": tier_history(session, c.id),
        "consent": {
            ch: {"granted": row.granted, "source": row.source, "at": _plain(row.recorded_at)}
            for ch, row in consents(session=session, customer_id=c.id).items()
        },
        "messages": [
            {
                "key": m.key,
                "channel": m.channel,
                "template": m.template,
                "journey": m.journey,
                "campaign": m.campaign,
                "state": m.state,
                "reason": m.reason,
                "provider_id": m.provider_id,
                "sent_at": _plain(m.sent_at),
            }
            for m in messages
        ],
        "history": [
            {
                "at": _plain(i.occurred_at),
                "channel": i.channel,
                "direction": i.direction,
                "kind": i.kind,
                "outcome": i.outcome,
                "journey": i.journey,
                "campaign": i.campaign,
                "detail": i.detail or {},
            }
            for i in interactions
        ],
        "transactions": [
            {
                "at": _plain(t.occurred_at),
                "amount": str(t.amount),
                "currency": t.currency,
                "product": t.product,
            }
            for t in transactions
        ],
        "complaints": [
            {
                "id": k.id,
                "code": k.code,
                "state": k.state,
                "responsible": k.responsible,
                "opened_at": _plain(k.opened_at),
                "due_at": _plain(k.due_at),
                "resolved_at": _plain(k.resolved_at),
                "satisfaction": k.satisfaction,
            }
            for k in complaints
        ],
    }


def _version_of(session: Session, version_id: int) -> str | None:
    version = session.get(RuleVersion, version_id)
    return version.digest[:12] if version else None


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return as_utc(value).isoformat()  # type: ignore[union-attr]
    return value.isoformat() if hasattr(value, "isoformat") else value


# --- import files --------------------------------------------------------------------------


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def imported(self) -> int:
        return self.created + self.updated


KNOWN_COLUMNS = set(CustomerIn.model_fields)


def read_customer_file(path: Path) -> Iterator[tuple[int, CustomerIn | RowError]]:
    """Each row of a CSV or JSON Lines file, validated, with its line number."""
    rows = read_rows(path, columns=KNOWN_COLUMNS, required={"external_id"}, prefix=ATTRIBUTE_PREFIX)
    return validated(path, rows, CustomerIn)


def import_customers(*, session: Session, path: Path, batch_size: int = 1000) -> ImportResult:
    """Import good rows, report every bad one; a row is written whole or not at all.

    Rows are streamed and written in batches (one transaction each), so a file of any size
    imports in constant memory.
    """
    result = ImportResult()
    seen: dict[str, int] = {}
    batch: list[CustomerIn] = []
    for line, item in read_customer_file(path):
        if isinstance(item, RowError):
            result.errors.append(item)
            continue
        if item.external_id in seen:
            result.errors.append(
                RowError(
                    str(path),
                    line,
                    "external_id",
                    f"{item.external_id!r} already appears on line {seen[item.external_id]}",
                )
            )
            continue
        seen[item.external_id] = line
        batch.append(item)
        if len(batch) >= batch_size:
            _write_batch(session, batch, result)
            batch = []
    if batch:
        _write_batch(session, batch, result)
    return result


def _write_batch(session: Session, batch: list[CustomerIn], result: ImportResult) -> None:
    ids = [d.external_id for d in batch]
    existing = set(
        session.exec(select(Customer.external_id).where(col(Customer.external_id).in_(ids))).all()
    )
    fresh: list[CustomerIn] = []
    for data in batch:
        if data.external_id in existing:
            upsert_customer(session=session, data=data)
            result.updated += 1
        else:
            fresh.append(data)
    # New customers in bulk, as plain rows (building ORM objects costs more than the writes).
    if fresh:
        now = utcnow()
        session.connection().execute(
            Customer.__table__.insert(),  # type: ignore[attr-defined]
            [
                {
                    "external_id": d.external_id,
                    "attributes": dict(d.attributes),
                    "tier": None,
                    "internal": False,
                    "segments": [],
                    "created_at": now,
                    "updated_at": now,
                    **{name: getattr(d, name) for name in PROFILE_FIELDS},
                }
                for d in fresh
            ],
        )
        pks: dict[str, int | None] = dict(
            session.exec(
                select(Customer.external_id, Customer.id).where(
                    col(Customer.external_id).in_([d.external_id for d in fresh])
                )
            ).all()
        )
        consents, contacts = [], []
        erased = tombstones.buried(
            session,
            [("email", d.email or "") for d in fresh] + [("sms", d.phone or "") for d in fresh],
        )
        for data in fresh:
            pk = pks[data.external_id]
            for channel, flag in ((Channel.email, "email_consent"), (Channel.sms, "sms_consent")):
                granted = bool(getattr(data, flag))
                source = data.consent_source
                address = data.email if channel == Channel.email else data.phone
                if granted and (channel.value, address or "") in erased:
                    if tombstones.fresh(source):
                        tombstones.lift(session, channel.value, address or "")
                    else:
                        granted, source = False, f"{source}; {tombstones.REFUSED}"[:128]
                consents.append(
                    {
                        "customer_id": pk,
                        "channel": channel.value,
                        "granted": granted,
                        "source": source,
                        "recorded_at": now,
                    }
                )
                if granted:
                    contacts.append(
                        {
                            "customer_id": pk,
                            "channel": channel.value,
                            "direction": Direction.inbound.value,
                            "kind": "consent",
                            "outcome": "granted",
                            "journey": None,
                            "campaign": None,
                            "message_key": None,
                            "detail": {"source": source},
                            "occurred_at": now,
                        }
                    )
        session.connection().execute(Consent.__table__.insert(), consents)  # type: ignore[attr-defined]
        session.connection().execute(
            ConsentRecord.__table__.insert(),  # type: ignore[attr-defined]
            [{**c, "topic": "", "wording": ""} for c in consents],
        )
        if contacts:
            session.connection().execute(Interaction.__table__.insert(), contacts)  # type: ignore[attr-defined]
    result.created += len(fresh)
    session.commit()


def internal_recipient(
    session: Session,
    *,
    external_id: str,
    channel: str,
    address: str,
    locale: str,
    name: str,
) -> str:
    """A customer record standing for an internal address (proof list, stakeholders).

    Internal records are in no audience; the ledger treats their messages like any other,
    so a proof or a report is sent once however often its step is retried.
    """
    customer = session.exec(select(Customer).where(Customer.external_id == external_id)).first()
    if customer is None:
        customer = Customer(external_id=external_id, first_name=name, locale=locale, internal=True)
        session.add(customer)
        session.flush()
    if channel == Channel.email:
        customer.email = address
    else:
        customer.phone = address
    session.add(customer)
    assert customer.id is not None
    consent = session.exec(
        select(Consent).where(Consent.customer_id == customer.id, Consent.channel == channel)
    ).first()
    if consent is None:
        set_consent(
            session=session,
            customer_id=customer.id,
            channel=channel,
            granted=True,
            source="internal list",
        )
    session.flush()
    return external_id


def _starts(column: Any, prefix: str) -> Any:
    """``column`` starts with ``prefix``, as a range an index can serve."""
    last = ord(prefix[-1])
    if last >= 0x10FFFF:  # nothing follows the last code point: only the lower bound
        return column >= prefix
    return and_(column >= prefix, column < prefix[:-1] + chr(last + 1))


def search_customers(session: Session, query: str, limit: int = 20) -> list[dict[str, Any]]:
    """Customers by id, email or phone (exact, or the start of an id) or by the start of a
    first or last name (any case); exact matches first. Each is an index lookup."""
    q = query.strip()
    if not q:
        return []
    found: dict[int, Customer] = {}

    def take(where: Any) -> None:
        for c in session.exec(select(Customer).where(where).limit(limit)).all():
            if c.id is not None and len(found) < limit:
                found.setdefault(c.id, c)

    take(Customer.external_id == q)
    if "@" in q:
        take(Customer.email == q.lower())
    compact = re.sub(r"[\s\-().]", "", q)
    if re.fullmatch(r"\+?\d{6,15}", compact):
        take(Customer.phone == (compact if compact.startswith("+") else f"+{compact}"))
    # Prefixes as ranges (``>= "ort" and < "oru"``): both databases read those from the
    # indexes (on lower(name), and on the id), where SQLite's LIKE would scan the table.
    if len(found) < limit:
        if "@" not in q and not compact.lstrip("+").isdigit():
            take(_starts(func.lower(Customer.last_name), q.lower()))
            take(_starts(func.lower(Customer.first_name), q.lower()))
        take(_starts(col(Customer.external_id), q))
    return [
        {
            "id": c.external_id,
            "name": c.full_name,
            "email": c.email,
            "phone": c.phone,
            "tier": c.tier,
            "locale": c.locale,
        }
        for c in found.values()
    ]
