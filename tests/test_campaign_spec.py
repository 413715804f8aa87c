"""Campaign specs: validated with file, line and field; the preview's audience, split and cost."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from clientela.campaigns import audience, spec
from clientela.db import session_scope
from clientela.settings import Settings
from clientela.templating import Templates
from clientela.yamlfile import SpecError
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
        ("proof: {emails: [nope]}\n", "error: proof.emails: 'nope' is not an email address"),
        ("control: {share: 1.5}\n", "error: control.share: Input should be less than 1"),
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


def test_preview_splits_stably_and_stratified_by_tier(settings: Settings) -> None:
    db = settings.db_url
    for _ in range(40):
        make_customer(db, attributes={"monthly_income": 150})  # tier A
    for _ in range(25):
        make_customer(db)  # tier C
    apply_directly(db)
    campaign = load_spec(BASE + "channel: email\ncontrol: {share: 0.1}\n")
    with session_scope(db) as session:
        members = audience.select_members(session, campaign)
        again = audience.select_members(session, campaign)
    assert [(m.customer_id, m.group) for m in members] == [(m.customer_id, m.group) for m in again]
    per_tier = Counter(m.tier for m in members)
    control = Counter(m.tier for m in members if m.group == "control")
    assert per_tier == {"A": 40, "C": 25}
    assert control == {"A": 4, "C": 3}  # ceil(10%) of each tier
    other = load_spec(BASE.replace("id: t1", "id: t2") + "channel: email\ncontrol: {share: 0.1}\n")
    with session_scope(db) as session:
        split = {
            m.customer_id for m in audience.select_members(session, other) if m.group == "control"
        }
    assert split != {m.customer_id for m in members if m.group == "control"}  # per campaign


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
