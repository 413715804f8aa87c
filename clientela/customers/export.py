"""Everything held about one customer, as one JSON document (a data subject's access request).

Every table that refers to the customer contributes its rows, all their columns, so that
nothing held is left out of the document: the profile, consent as it stands and its whole
log, topic choices, tier decisions and their history, every message of the ledger with its
address, the whole contact history with its details, purchases, orders, complaint cases,
campaign memberships, pending journey triggers, and the suppressions of their addresses.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlmodel import Session, SQLModel, col, select

from clientela.customers.records import get_customer
from clientela.timeutil import as_utc, utcnow
from models import (
    CampaignMember,
    Complaint,
    Consent,
    ConsentRecord,
    CustomerDecision,
    Interaction,
    JourneyOutbox,
    Message,
    Order,
    Suppression,
    TierChange,
    TopicPreference,
    Transaction,
)

#: What each part of the document holds, and from which table (rows by customer).
PARTS: dict[str, type[SQLModel]] = {
    "consent": Consent,
    "consent_log": ConsentRecord,
    "topics": TopicPreference,
    "decision": CustomerDecision,
    "tier_history": TierChange,
    "messages": Message,
    "history": Interaction,
    "purchases": Transaction,
    "orders": Order,
    "complaints": Complaint,
    "campaigns": CampaignMember,
}


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        moment = as_utc(value)
        return moment.isoformat() if moment else None
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    return value


def _row(row: SQLModel) -> dict[str, Any]:
    return {
        name: _plain(getattr(row, name))
        for name in type(row).model_fields
        if name not in ("customer_id",)
    }


def export_customer(session: Session, external_id: str) -> dict[str, Any]:
    """The document (UnknownCustomer when there is no such customer)."""
    customer = get_customer(session=session, external_id=external_id)
    pk = customer.id
    doc: dict[str, Any] = {
        "exported_at": utcnow().isoformat(),
        "customer_id": external_id,
        "profile": {
            name: _plain(getattr(customer, name))
            for name in type(customer).model_fields
            if name not in ("id", "internal")
        },
    }
    for part, table in PARTS.items():
        key = col(table.customer_id)  # type: ignore[attr-defined]
        order = col(table.id) if "id" in table.model_fields else key  # type: ignore[attr-defined]
        doc[part] = [_row(r) for r in session.exec(select(table).where(key == pk).order_by(order))]
    doc["journey_triggers"] = [
        _row(r)
        for r in session.exec(select(JourneyOutbox).where(JourneyOutbox.customer_id == external_id))
    ]
    addresses = [a for a in (customer.email, customer.phone) if a]
    doc["suppressions"] = [
        _row(r)
        for r in session.exec(select(Suppression).where(col(Suppression.address).in_(addresses)))
    ]
    return doc
