"""Test data builders: each test makes the customers it needs."""

from __future__ import annotations

import itertools
from typing import Any

from clientela.customers.records import upsert_customer
from clientela.db import session_scope
from models.schemas import CustomerIn

_ids = itertools.count(1)


def customer_data(**overrides: Any) -> CustomerIn:
    n = next(_ids)
    data: dict[str, Any] = {
        "external_id": f"C{n:05d}",
        "first_name": f"Ana{n}",
        "last_name": "García",
        "email": f"ana{n}@example.com",
        "phone": f"+3460000{n:04d}",
        "locale": "es",
        "timezone": "Europe/Madrid",
        "email_consent": True,
        "sms_consent": True,
        "consent_source": "test",
    }
    data.update(overrides)
    return CustomerIn.model_validate(data)


def make_customer(db_url: str, **overrides: Any) -> str:
    data = customer_data(**overrides)
    with session_scope(db_url) as session:
        upsert_customer(session=session, data=data)
    return data.external_id


def make_staff(db_url: str, address: str = "lead@example.com") -> str:
    """An internal recipient (as a campaign's stakeholders are); its external id."""
    from clientela.customers.records import internal_recipient

    with session_scope(db_url) as session:
        return internal_recipient(
            session,
            external_id=f"staff:{address}",
            channel="email",
            address=address,
            locale="en",
            name="Team",
        )


def signed_in(db_url: str, **people: list[str]) -> dict[str, dict[str, str]]:
    """Users with these roles (``marta=["marketer"]``), each with a personal API token: the
    ``Authorization`` header of each, by name."""
    from clientela.people.users import add_user, issue_token

    headers = {}
    with session_scope(db_url) as session:
        for name, roles in people.items():
            add_user(session, actor="test", username=name, roles=roles, password="x" * 16)
            token = issue_token(session, actor="test", username=name, name="test")[1]
            headers[name] = {"Authorization": f"Bearer {token}"}
    return headers
