"""The features a model sees: those the rules derive (income, tenure, RFM, responsiveness,
channel; ``docs/rules.md``) and every free attribute as ``attr.<name>``, at a given time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from models import Customer
from rules.data import consents_of, histories_of, profile_of
from rules.features import compute

#: Eligibility, not behaviour: consent can change because of a campaign (an unsubscription),
#: so a model that saw it would learn the campaign's effect backwards. The time zone is an
#: identifier more than a trait.
LEFT_OUT = frozenset({"email_consent", "sms_consent", "timezone"})


def features_at(
    session: Session, customers: list[Customer], at: datetime
) -> dict[int, dict[str, Any]]:
    ids = [c.id for c in customers if c.id is not None]
    consents = consents_of(session, ids)
    histories = histories_of(session, ids, at.date(), until=at)
    out: dict[int, dict[str, Any]] = {}
    for customer in customers:
        assert customer.id is not None
        values = compute(
            profile_of(customer), consents.get(customer.id, {}), histories[customer.id], at.date()
        )
        row = {k: v for k, v in values.items() if k not in LEFT_OUT}
        for name, value in (customer.attributes or {}).items():
            if isinstance(value, bool | int | float) or (
                isinstance(value, str) and len(value) <= 64
            ):
                row[f"attr.{name}"] = value
        out[customer.id] = row
    return out
