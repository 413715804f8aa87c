"""Reading customers and their history in bulk, for the rules."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, true
from sqlmodel import Session, col, select

from clientela.timeutil import as_utc
from models import Complaint, Consent, Customer, Direction, Interaction, Transaction
from models.history import RESPONSE_KINDS
from rules.features import ALL_SOURCES, History


def customer_page(
    session: Session, *, after_id: int, limit: int, until_id: int | None = None
) -> list[Any]:
    """The next customers by primary key: a cursor that survives restarts. ``until_id``
    ends a slice of the base (inclusive).

    Rows, not ORM objects: a page is read to be decided and written back in bulk
    (``rules.service.record``), and building a million tracked objects costs more than
    deciding them (``bench.rules_apply``). A row reads like a ``Customer``."""
    table = Customer.__table__  # type: ignore[attr-defined]
    # Internal records (proof list, stakeholders) are not customers: no tier.
    query = select(table).where(table.c.id > after_id, table.c.internal.is_(False))
    if until_id is not None:
        query = query.where(table.c.id <= until_id)
    return list(session.execute(query.order_by(table.c.id).limit(limit)).all())


def slice_bounds(session: Session, slices: int) -> list[int]:
    """Ids that cut the base into ``slices`` runs of about equal size: slice ``i`` is the
    customers with ``bounds[i] < id <= bounds[i + 1]``, the last one open-ended."""
    total = session.exec(
        select(func.count()).select_from(Customer).where(col(Customer.internal).is_(False))
    ).one()
    bounds = [0]
    for i in range(1, slices):
        at = session.exec(
            select(Customer.id)
            .where(col(Customer.internal).is_(False))
            .order_by(col(Customer.id))
            .offset(total * i // slices)
            .limit(1)
        ).first()
        if at is not None and at > bounds[-1]:
            bounds.append(at)
    return bounds


def profile_of(customer: Customer) -> dict[str, Any]:
    return {
        "locale": customer.locale,
        "timezone": customer.timezone,
        "preferred_channel": customer.preferred_channel,
        "email": customer.email,
        "phone": customer.phone,
        "birthday": customer.birthday,
        "signup_date": customer.signup_date,
        "created_at": as_utc(customer.created_at),
        "attributes": customer.attributes or {},
    }


def of_ids(column: Any, ids: list[int]) -> Any:
    """``column`` among ``ids``: as a range when the ids are dense (a page of the base), else
    as a list. A range binds two values where a list binds one per id, and PostgreSQL's
    driver parses a statement with a thousand parameters again each time (about 6% of a
    ``rules apply`` page there); the caller drops the rows of ids it did not ask for."""
    if len(ids) > 50:
        low, high = min(ids), max(ids)
        if high - low < 2 * len(ids):
            return column.between(low, high)
    return column.in_(ids)


def consents_of(session: Session, ids: list[int]) -> dict[int, dict[str, bool]]:
    out: dict[int, dict[str, bool]] = defaultdict(dict)
    wanted = set(ids)
    rows = session.exec(
        select(Consent.customer_id, Consent.channel, Consent.granted).where(
            of_ids(col(Consent.customer_id), ids)
        )
    ).all()
    for customer_id, channel, granted in rows:
        if customer_id in wanted:
            out[customer_id][channel] = bool(granted)
    return out


def histories_of(
    session: Session,
    ids: list[int],
    today: date,
    until: datetime | None = None,
    parts: frozenset[str] = ALL_SOURCES,
) -> dict[int, History]:
    """Purchases, contacts and complaints of many customers in four grouped queries.

    ``until``: the history as it stood then (what happened before it only), so that a model
    learns from the features a customer had when a campaign chose them, not from its effects.
    ``parts``: which of them to read (``rules.features.SOURCES``); the others stay empty.
    """
    since = datetime.combine(today - timedelta(days=365), datetime.min.time())
    out: dict[int, History] = defaultdict(History)
    wanted = set(ids)
    recent = col(Transaction.occurred_at) >= since
    before_t = col(Transaction.occurred_at) < until if until is not None else true()
    before_i = col(Interaction.occurred_at) < until if until is not None else true()
    for customer_id, count, spend, last in _rows(
        session,
        "purchases" in parts,
        select(
            Transaction.customer_id,
            func.sum(case((recent, 1), else_=0)),
            func.sum(case((recent, Transaction.amount), else_=0)),
            func.max(Transaction.occurred_at),
        )
        .where(of_ids(col(Transaction.customer_id), ids), before_t)
        .group_by(col(Transaction.customer_id)),
        wanted,
    ):
        h = out[customer_id]
        h.purchases_12m, h.spend_12m = int(count or 0), float(spend or 0)
        last_at = as_utc(last) if isinstance(last, datetime) else None
        h.last_purchase = last_at.date() if last_at else None
    window = col(Interaction.occurred_at) >= since
    for customer_id, count in _rows(
        session,
        "messages" in parts,
        select(Interaction.customer_id, func.count())
        .where(
            of_ids(col(Interaction.customer_id), ids),
            window,
            before_i,
            Interaction.direction == Direction.outbound,
            Interaction.kind == "message",
            Interaction.outcome != "failed",
        )
        .group_by(col(Interaction.customer_id)),
        wanted,
    ):
        out[customer_id].messages_12m = int(count)
    for customer_id, channel, count in _rows(
        session,
        "responses" in parts,
        select(Interaction.customer_id, Interaction.channel, func.count())
        .where(
            of_ids(col(Interaction.customer_id), ids),
            window,
            before_i,
            Interaction.direction == Direction.inbound,
            col(Interaction.kind).in_(RESPONSE_KINDS),
        )
        .group_by(col(Interaction.customer_id), col(Interaction.channel)),
        wanted,
    ):
        h = out[customer_id]
        h.responses_12m += int(count)
        h.responses_by_channel[channel] = int(count)
    for customer_id, count in _rows(
        session,
        "complaints" in parts,
        select(Complaint.customer_id, func.count())
        .where(
            of_ids(col(Complaint.customer_id), ids),
            col(Complaint.resolved_at).is_(None)
            if until is None
            else and_(
                col(Complaint.opened_at) < until,
                or_(col(Complaint.resolved_at).is_(None), col(Complaint.resolved_at) >= until),
            ),
        )
        .group_by(col(Complaint.customer_id)),
        wanted,
    ):
        out[customer_id].complaints_open = int(count)
    return out


def _rows(session: Session, wanted_part: bool, query: Any, ids: set[int]) -> list[Any]:
    """The query's rows for the customers asked for (none when that part is not wanted)."""
    if not wanted_part:
        return []
    return [row for row in session.exec(query).all() if row[0] in ids]
