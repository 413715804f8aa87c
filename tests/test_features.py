"""Features and what they are computed from (``rules.features.SOURCES``)."""

from __future__ import annotations

import itertools
from datetime import date
from typing import Any

import pytest

from rules.features import FEATURES, SOURCES, History, compute, sources_of

TODAY = date(2026, 11, 22)

PROFILES: list[dict[str, Any]] = [
    {"email": "a@example.com", "signup_date": date(2024, 1, 5), "attributes": {},
     "locale": "es", "timezone": "Europe/Madrid", "preferred_channel": "sms"},
    {"phone": "+34600000000", "signup_date": date(2026, 6, 1), "birthday": date(1980, 2, 3),
     "attributes": {"basic_charge": 20}},  # usage from the purchases alone
    {"email": "c@example.com", "attributes": {"basic_charge": 30, "monthly_income": 45}},
    {"attributes": {"basic_charge": 25, "usage": 40, "monthly_income": 10}},
]  # fmt: skip
HISTORIES = [
    History(),
    History(purchases_12m=4, spend_12m=300.0, last_purchase=date(2026, 10, 1)),
    History(messages_12m=5),
    History(messages_12m=3, responses_12m=4, responses_by_channel={"email": 3, "sms": 1}),
    History(
        purchases_12m=1, spend_12m=80.0, last_purchase=date(2026, 1, 2), messages_12m=2,
        responses_12m=1, responses_by_channel={"sms": 1}, complaints_open=2,
    ),
]  # fmt: skip
CONSENTS = [{}, {"email": True, "sms": False}]


def restricted(history: History, consent: dict[str, bool], parts: frozenset[str]) -> tuple:
    """The history and consents as read when only ``parts`` are asked for."""
    kept = History()
    if "purchases" in parts:
        kept.purchases_12m, kept.spend_12m = history.purchases_12m, history.spend_12m
        kept.last_purchase = history.last_purchase
    if "messages" in parts:
        kept.messages_12m = history.messages_12m
    if "responses" in parts:
        kept.responses_12m = history.responses_12m
        kept.responses_by_channel = dict(history.responses_by_channel)
    if "complaints" in parts:
        kept.complaints_open = history.complaints_open
    return kept, (consent if "consents" in parts else {})


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_each_feature_comes_out_the_same_from_what_it_is_said_to_need(name: str) -> None:
    """Reading only a feature's ``SOURCES`` gives it the value the whole history gives: the
    ranking pass of ``rules apply`` reads only what its rankings use."""
    seen = 0
    for profile, history, consent in itertools.product(PROFILES, HISTORIES, CONSENTS):
        whole = compute(profile, consent, history, TODAY)
        history_part, consent_part = restricted(history, consent, sources_of({name}))
        lean = compute(profile, consent_part, history_part, TODAY)
        assert lean.get(name) == whole.get(name), (name, profile, history, consent)
        seen += name in whole
    assert seen, f"no case computes {name}: add one"


def test_sources_name_only_known_features_and_parts() -> None:
    assert set(SOURCES) <= set(FEATURES)
    assert set().union(*SOURCES.values()) == {
        "consents", "purchases", "messages", "responses", "complaints",
    }  # fmt: skip
