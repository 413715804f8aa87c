"""Campaign specs: validated with file, line and field; the preview's audience, split and cost."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import col, select

from clientela.campaigns import audience, spec
from clientela.db import session_scope
from clientela.messaging.templating import Templates
from clientela.settings import Settings
from clientela.yamlfile import SpecError
from models import Campaign, CampaignMember, Customer
from rules.model import load
from tests.factories import make_customer
from tests.test_rules_apply import apply_directly

ROOT = Path(__file__).resolve().parent.parent
RULES = load(ROOT / "rules" / "crm.yaml")
TEMPLATES = Templates(ROOT / "templates")

BASE = """\
id: t1
name: Test
owner: me
target_kpi: {metric: conversion_rate, uplift: 1}
budget: 10
cost_per_message: {email: 0.01, sms: 0.05}
template: welcome
"""


def errors(text: str) -> list[str]:
    with pytest.raises(SpecError) as err:
        spec.loads(text, "c.yaml", RULES, TEMPLATES)
    return [str(p) for p in err.value.problems]


def test_the_example_spec_is_valid() -> None:
    loaded = spec.load(ROOT / "campaigns" / "spring-loyalty.yaml", RULES, TEMPLATES)
    assert [a.name for a in loaded.spec.arms] == ["model", "marketing"]
    assert loaded.spec.response_window.days == 14
    demo = spec.load(ROOT / "campaigns" / "demo-offer.yaml", RULES, TEMPLATES)
    assert [v.name for v in demo.spec.variants] == ["offer", "short"]
    assert demo.spec.pilot is not None and demo.spec.proof.emails
    # Both variants are offers to existing customers (neither is a sign-up's reminder).
    assert {v.template for v in demo.spec.variants} == {"spring_offer", "spring_offer_short"}


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("audiense: {}\n", "c.yaml:8:1: error: audiense: unknown key 'audiense'"),
        ("audience: {tiers: [Z]}\n", "c.yaml:8:20: error: audience.tiers.0: no tier 'Z'"),
        ("audience: {segments: [vip]}\n", "error: audience.segments.0: no segment 'vip'"),
        (
            "audience: {when: 'monthly_income > x'}\n",
            "c.yaml:8:36: error: audience.when: unknown field 'x'",
        ),
        ("offer: free_lunch\n", "error: offer: no offer 'free_lunch'"),
        (
            "variants: [{name: a, template: nosuch}]\n",
            "error: variants.0.template: template 'nosuch' has no body.html",
        ),
        ("arms: [{name: a}, {name: a}]\n", "arm names must be unique: a"),
        ("arms: [{name: a}, {name: b}]\n", "only one arm may go without `when`"),
        ("channel: fax\n", "error: channel: Input should be 'preferred', 'email' or 'sms'"),
        ("proof: {emails: [nope]}\n", "error: proof.emails: 'nope' is not a usable email address"),
        ("control: {share: 1.5}\n", "error: control.share: Input should be less than 1"),
        ("start: 2027-03-01T09:00\n", "error: start: Input should have timezone info"),
    ],
)
def test_spec_errors_are_placed(extra: str, expected: str) -> None:
    found = errors(BASE + extra)
    assert any(expected in e for e in found), found


def test_a_channel_needs_its_cost() -> None:
    found = errors(
        BASE.replace(
            "cost_per_message: {email: 0.01, sms: 0.05}", "cost_per_message: {email: 0.01}"
        )
    )
    assert any("no cost per message for sms" in e for e in found), found


def load_spec(text: str) -> spec.Spec:
    return spec.loads(text, "c.yaml", RULES, TEMPLATES)


def listed(db: str, campaign: spec.Spec) -> list[tuple[str, str, str, str, bool]]:
    """Build the campaign's lead list; (customer, tier, group, variant, pilot) per member."""
    with session_scope(db) as session:
        if session.get(Campaign, campaign.spec.id) is None:
            session.add(Campaign(id=campaign.spec.id, name=campaign.spec.name))
            session.flush()
        audience.build(session, campaign.spec.id, campaign)
        rows = session.exec(
            select(Customer.external_id, CampaignMember)
            .join(CampaignMember, col(CampaignMember.customer_id) == col(Customer.id))
            .where(CampaignMember.campaign_id == campaign.spec.id)
            .order_by(col(Customer.external_id))
        ).all()
        return [(cid, m.tier, m.group, m.variant, m.pilot) for cid, m in rows]


def test_preview_splits_stably_and_stratified_by_tier(settings: Settings) -> None:
    db = settings.db_url
    for _ in range(40):
        make_customer(db, attributes={"monthly_income": 150})  # tier A
    for _ in range(25):
        make_customer(db)  # tier C
    apply_directly(db)
    campaign = load_spec(BASE + "channel: email\ncontrol: {share: 0.1}\n")
    members = listed(db, campaign)
    assert members == listed(db, campaign)  # a rebuild assigns the same way
    per_tier = Counter(tier for _, tier, _, _, _ in members)
    control = Counter(tier for _, tier, group, _, _ in members if group == "control")
    assert per_tier == {"A": 40, "C": 25}
    assert control == {"A": 4, "C": 3}  # ceil(10%) of each tier
    other = load_spec(BASE.replace("id: t1", "id: t2") + "channel: email\ncontrol: {share: 0.1}\n")
    split = {cid for cid, _, group, _, _ in listed(db, other) if group == "control"}
    assert split != {cid for cid, _, group, _, _ in members if group == "control"}
    with session_scope(db) as session:  # the preview draws exactly as the campaign will
        preview = audience.preview(session, campaign)
        assert session.exec(select(func.count(col(CampaignMember.id)))).one() == 2 * 65
    assert dict(preview.by_arm["main"]) == {"treated": 58, "control": 7}


def test_variants_and_pilot_split_the_treated_stably(settings: Settings) -> None:
    db = settings.db_url
    for _ in range(200):
        make_customer(db, preferred_channel="email")
    apply_directly(db)
    campaign = load_spec(
        BASE
        + "channel: email\ncontrol: {share: 0.2}\npilot: {share: 0.25}\n"
        + "variants: [{name: a, template: welcome}, {name: b, template: welcome_reminder}]\n"
    )
    members = listed(db, campaign)
    treated = [m for m in members if m[2] == "treated"]
    control = [m for m in members if m[2] == "control"]
    assert len(control) == 40 and all(v == "" and not p for _, _, _, v, p in control)
    by_variant = Counter(v for _, _, _, v, _ in treated)
    assert set(by_variant) == {"a", "b"} and min(by_variant.values()) > 50
    pilots = sum(1 for m in treated if m[4])
    assert 20 < pilots < 60  # a quarter of 160, by a stable draw
    assert members == listed(db, campaign)


def test_preview_counts_exclusions_with_their_reasons(settings: Settings) -> None:
    db = settings.db_url
    for _ in range(3):
        make_customer(db, preferred_channel="email")
    make_customer(db, email_consent=False, sms_consent=False)
    make_customer(db, email="shared@example.com", preferred_channel="email")
    make_customer(db, email="shared@example.com", preferred_channel="email")
    apply_directly(db)
    campaign = load_spec(BASE + "channel: email\ncontrol: {share: 0}\n")
    with session_scope(db) as session:
        result = audience.preview(session, campaign)
    assert result.audience == 6
    assert result.excluded == {
        "email: no consent": 1,
        "duplicate address: another customer in the audience shares it": 1,
    }
    assert result.by_channel == {"email": 4}
    assert result.cost == pytest.approx(0.04) and not result.over_budget


def test_every_member_is_counted_once(settings: Settings) -> None:
    """To contact + held out + excluded = the audience, with exclusions in either group."""
    db = settings.db_url
    for i in range(40):
        reachable = i % 4 != 0  # a quarter cannot be reached
        make_customer(db, preferred_channel="email", email_consent=reachable, sms_consent=reachable)
    apply_directly(db)
    campaign = load_spec(BASE + "channel: email\ncontrol: {share: 0.3}\n")
    with session_scope(db) as session:
        result = audience.preview(session, campaign)
    assert result.audience == 40 and result.excluded_total == 10
    assert result.treated + result.control + result.excluded_total == result.audience
    [groups] = result.by_arm.values()
    assert sum(groups.values()) == result.audience
    assert groups["treated"] == result.treated and groups["control"] == result.control
    assert groups["excluded"] == result.excluded_total


def test_preview_filters_by_tier_and_condition_and_flags_over_budget(settings: Settings) -> None:
    db = settings.db_url
    for _ in range(5):
        make_customer(db, attributes={"monthly_income": 150})
    for _ in range(5):
        make_customer(db, attributes={"monthly_income": 500})
    make_customer(db)
    apply_directly(db)
    text = BASE.replace("budget: 10", "budget: 0.02") + (
        "channel: email\naudience: {tiers: [A], when: monthly_income > 200}\ncontrol: {share: 0}\n"
    )
    with session_scope(db) as session:
        result = audience.preview(session, load_spec(text))
    assert result.audience == 5 and result.by_tier == {"A": 5}
    assert result.cost == pytest.approx(0.05) and result.over_budget


def test_preview_warns_when_the_split_cannot_detect_the_target(settings: Settings) -> None:
    """65 customers with 7 held out cannot see +1 pp; the smallest uplift each arm can see is
    computed for the base's conversion rate (none here: an assumed 2%), as by hand."""
    import math

    db = settings.db_url
    for _ in range(65):
        make_customer(db)
    apply_directly(db)
    campaign = load_spec(BASE + "channel: email\ncontrol: {share: 0.1}\n")
    with session_scope(db) as session:
        power = audience.preview(session, campaign).power
    assert power["baseline"] == 0.02 and "assumed 2%" in power["baseline_from"]
    [(arm, measured)] = power["arms"].items()
    assert arm == "main" and (measured["treated"], measured["control"]) == (58, 7)
    # h solves (1.959964 + 0.841621) = h * sqrt(1 / (1/58 + 1/7)); the rate is sin^2 of
    # asin(sqrt(0.02)) + h / 2
    h = (1.959964 + 0.841621) * math.sqrt(1 / 58 + 1 / 7)
    rate = math.sin(math.asin(math.sqrt(0.02)) + h / 2) ** 2
    assert measured["mde_pp"] == pytest.approx(round((rate - 0.02) * 100, 2), abs=0.02)
    assert power["target_pp"] == 1.0
    assert power["warning"] and "cannot detect the target of +1.00 pp" in power["warning"]
    relaxed = load_spec(
        BASE.replace("uplift: 1}", "uplift: 60}") + "channel: email\ncontrol: {share: 0.1}\n"
    )
    with session_scope(db) as session:
        assert audience.preview(session, relaxed).power["warning"] is None


def test_an_arm_drawn_at_random_is_stable_and_keeps_its_own_control(settings: Settings) -> None:
    """A random arm takes its share of the audience by a stable hash of the campaign and the
    customer: the same customers on every rebuild and preview, others in another campaign,
    and a control of its own like any arm."""
    from clientela.campaigns.audience import unit

    db = settings.db_url
    for _ in range(300):
        make_customer(db)
    apply_directly(db)
    arms = (
        "channel: email\ncontrol: {share: 0.1}\n"
        "arms:\n  - {name: chance, random: {share: 0.3}}\n  - {name: rest}\n"
    )
    campaign = load_spec(BASE + arms)
    members = listed(db, campaign)
    assert members == listed(db, campaign)
    with session_scope(db) as session:
        ids = dict(session.exec(select(Customer.external_id, CampaignMember.arm)
                                .join(CampaignMember)).all())  # fmt: skip
    # Exactly those whose hash falls under the share, computed here by the same formula.
    expected = {cid for cid in ids if unit("t1", cid, "arm:chance") < 0.3}
    assert {cid for cid, arm in ids.items() if arm == "chance"} == expected
    assert 60 <= len(expected) <= 120  # 30% of 300, give or take chance
    chance = [m for m in members if ids[m[0]] == "chance"]
    assert {group for _, _, group, _, _ in chance} == {"treated", "control"}
    other = load_spec(BASE.replace("id: t1", "id: t9") + arms)
    with session_scope(db) as session:
        preview = audience.preview(session, other)
    assert set(preview.by_arm) == {"chance", "rest"}
    found = errors(BASE + "arms:\n  - {name: x, when: 'tenure_months > 1', random: {share: 0.5}}\n")
    assert any("not `when` and `random`" in e for e in found), found
