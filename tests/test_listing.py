"""The lead list in set-based SQL gives, member by member, the list the Python path gives:
arms, variants, pilot, control, tier, segments, channel, address and every exclusion."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert
from sqlmodel import col, select

from clientela.campaigns import audience, listing, spec
from clientela.db import session_scope
from clientela.messaging.templating import Templates
from clientela.timeutil import utcnow
from models import (
    Campaign,
    CampaignMember,
    Customer,
    CustomerDecision,
    Message,
    Suppression,
    TopicPreference,
)
from rules import service
from rules.model import load
from tests.factories import make_customer, make_staff

ROOT = Path(__file__).resolve().parent.parent
RULES = load(ROOT / "rules" / "crm.yaml")
TEMPLATES = Templates(ROOT / "templates")
SEGMENTS = [[], ["X_responsive"], ["Y_new", "Z_dormant"], ["Z_dormant"]]


def varied_base(db_url: str, n: int = 90) -> None:
    """Customers in every situation the list tells apart: tiers and segments, consent or
    not on each channel, no phone, a preferred channel, a shared address, a suppressed
    address, an unsubscribed topic, contact caps reached, an internal recipient."""
    for i in range(n):
        make_customer(
            db_url,
            external_id=f"L{i:03d}",
            email=f"shared{i % 3}@example.com" if i % 11 == 0 else f"l{i}@example.com",
            phone=None if i % 9 == 0 else f"+3461000{i:04d}",
            email_consent=i % 5 != 1,
            sms_consent=i % 4 != 2,
            preferred_channel=[None, "email", "sms"][i % 3],
        )
    make_staff(db_url)
    now = utcnow()
    with session_scope(db_url) as session:
        version = service.register(session, RULES)
        customers = session.exec(
            select(Customer).where(col(Customer.internal).is_(False)).order_by(col(Customer.id))
        ).all()
        decisions, messages, extra = [], [], []
        for i, c in enumerate(customers):
            decisions.append(
                {
                    "customer_id": c.id,
                    "rule_version_id": version.id,
                    "tier": "ABC"[i % 3],
                    "tier_rule": "test",
                    "segments": SEGMENTS[i % 4],
                    "offers": [],
                    "features": {},
                    "decided_at": now,
                }
            )
            # Recent messages: caps of a day, a week or a month reached on some channel.
            for k in range([0, 1, 2, 3, 5][i % 5]):
                sent = now - timedelta(hours=[2, 30, 24 * 10][k % 3])
                messages.append(
                    {
                        "key": f"m-{c.id}-{k}",
                        "customer_id": c.id,
                        "channel": "email" if i % 2 else "sms",
                        "template": "t",
                        "state": ["sent", "delivered", "claimed"][k % 3],
                        "sent_at": None if k % 3 == 2 else sent,
                        "claimed_at": sent,
                        "created_at": sent,
                        "updated_at": sent,
                    }
                )
            if i % 8 == 3:
                extra.append(Suppression(channel="email", address=c.email, reason="bounced"))
            if i % 10 == 4 and c.phone:
                extra.append(Suppression(channel="sms", address=c.phone, reason="STOP"))
            if i % 6 == 1:
                extra.append(
                    TopicPreference(customer_id=c.id, topic="offers", subscribed=False, source="t")
                )
        session.execute(insert(CustomerDecision), decisions)
        session.execute(insert(Message), messages)
        session.add_all(extra)


SPECS = {
    "email, arms, variants, pilot": """\
id: listing
name: Listing
owner: me
target_kpi: {metric: conversion_rate, uplift: 1}
budget: 1000
cost_per_message: {email: 0.01, sms: 0.05}
channel: email
template: spring_offer
variants:
  - {name: a, template: spring_offer}
  - {name: b, template: spring_offer}
control: {share: 0.2}
pilot: {share: 0.4}
arms:
  - {name: early, random: {share: 0.3}}
  - {name: rest}
response_window: 1h
""",
    "preferred channel, topic, tiers and segments": """\
id: listing
name: Listing
owner: me
target_kpi: {metric: conversion_rate, uplift: 1}
budget: 1000
cost_per_message: {email: 0.01, sms: 0.05}
channel: preferred
topic: offers
template: spring_offer
audience: {tiers: [A, B], segments: [Y_new, X_responsive]}
control: {share: 0.1}
response_window: 1h
""",
    "sms": """\
id: listing
name: Listing
owner: me
target_kpi: {metric: conversion_rate, uplift: 1}
budget: 1000
cost_per_message: {email: 0.01, sms: 0.05}
channel: sms
template: spring_offer
control: {share: 0.25}
response_window: 1h
""",
}


def members(session: Any, campaign_id: str) -> dict[int, tuple[Any, ...]]:
    return {
        m.customer_id: (
            m.arm,
            m.variant,
            m.group,
            m.tier,
            sorted(m.segments),
            m.draw,
            m.pilot,
            m.channel,
            m.address,
            m.excluded,
        )
        for m in session.exec(
            select(CampaignMember).where(CampaignMember.campaign_id == campaign_id)
        ).all()
    }


@pytest.mark.parametrize("name", list(SPECS))
def test_sql_and_python_build_the_same_list(db_url: str, name: str) -> None:
    varied_base(db_url)
    loaded = spec.loads(SPECS[name], "c.yaml", RULES, TEMPLATES)
    assert listing.can_list(loaded)
    with session_scope(db_url) as session:
        for cid in ("in-sql", "in-python"):
            session.add(Campaign(id=cid, name=cid, stage="draft"))
        session.flush()
        # (A preview draws with the spec's id, as the campaign it creates will.)
        hash_id = loaded.spec.id
        in_sql = audience.build(session, "in-sql", loaded, hash_id=hash_id, in_sql=True)
        in_python = audience.build(session, "in-python", loaded, hash_id=hash_id, in_sql=False)
        got, want = members(session, "in-sql"), members(session, "in-python")
        # The preview counts the list in one SELECT, writing nothing.
        before = session.exec(select(func.count()).select_from(CampaignMember)).one()
        previewed = audience.preview(session, loaded, in_sql=True)
        after = session.exec(select(func.count()).select_from(CampaignMember)).one()
    assert got == want
    assert in_sql.as_dict() == in_python.as_dict()
    assert previewed.as_dict() == in_python.as_dict()
    assert before == after == 2 * len(want)
    # The base really holds the cases compared: every kind of exclusion occurs.
    reasons = " | ".join(r[-1] for r in want.values())
    expected = {
        "email, arms, variants, pilot": ["no consent", "suppressed", "contact cap", "duplicate"],
        "preferred channel, topic, tiers and segments": [
            "unsubscribed from offers", "no consent", "no address", "; ",
        ],
        "sms": ["not a channel of tier C", "no address", "suppressed", "contact cap"],
    }[name]  # fmt: skip
    assert all(r in reasons for r in expected), reasons
    groups = {r[2] for r in want.values()}
    assert groups == {"treated", "control"} and len(want) > 20


def test_a_spec_needing_features_goes_through_python() -> None:
    conditional = SPECS["sms"].replace(
        "control:", "audience: {when: 'tenure_months > 3'}\ncontrol:"
    )
    ranked = SPECS["sms"].replace(
        "control:", "arms:\n  - {name: few, random: {count: 3}}\n  - {name: rest}\ncontrol:"
    )
    for text in (conditional, ranked):
        assert not listing.can_list(spec.loads(text, "c.yaml", RULES, TEMPLATES))


def test_the_draws_in_sql_are_the_python_draws(db_url: str) -> None:
    """sha256 in the database (PostgreSQL's, or the function registered on SQLite) gives
    ``stable_hash`` exactly, for any text."""
    from sqlalchemy import literal
    from sqlalchemy import select as sa_select

    texts = ["camp:C00001", "día:ñ:arm:x", "", "a" * 300, "emoji 🙂:pilot"]
    with session_scope(db_url) as session:
        got = [
            session.execute(sa_select(listing._hash(session, literal(t)))).scalar() for t in texts
        ]
    assert got == [listing.hash_text(t) for t in texts]
    assert audience.stable_hash("camp", "C00001") == listing.hash_text("camp:C00001")
