"""Fields a rule condition can use: the customer's own and those derived from its history.

Every feature is documented here, with its kind; ``docs/rules.md`` is generated from this
table. A feature is *unknown* (missing) when the data to compute it is absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from rules.language import Kind, Value, wire_number


@dataclass(frozen=True)
class Feature:
    kind: Kind
    doc: str


FEATURES: dict[str, Feature] = {
    "locale": Feature("string", "the customer's language: 'en', 'es'"),
    "timezone": Feature("string", "IANA time zone, e.g. 'Europe/Madrid'"),
    "preferred_channel": Feature("string", "the channel the customer chose: 'email', 'sms'"),
    "has_email": Feature("bool", "an email address is on file"),
    "has_phone": Feature("bool", "a mobile number is on file"),
    "email_consent": Feature("bool", "consents to email"),
    "sms_consent": Feature("bool", "consents to SMS"),
    "age_years": Feature("number", "whole years since the birthday"),
    "tenure_months": Feature("number", "whole months since sign-up (or since the record exists)"),
    "newbie": Feature("bool", "signed up less than 12 months ago"),
    "purchases_12m": Feature("number", "purchases in the last 12 months (frequency, the F of RFM)"),
    "spend_12m": Feature("number", "amount spent in the last 12 months (monetary, the M of RFM)"),
    "recency_days": Feature(
        "number", "days since the last purchase (the R of RFM); unknown if none"
    ),
    "avg_order_value": Feature("number", "spend_12m / purchases_12m; unknown without purchases"),
    "monthly_income": Feature(
        "number",
        "gross income from the customer per month: the billed attribute monthly_income (if "
        "imported) plus spend_12m over the months of tenure in that year (at most 12)",
    ),
    "basic_charge": Feature("number", "the plan's basic monthly charge (attribute basic_charge)"),
    "usage": Feature(
        "number",
        "monthly usage billed (attribute usage; else the billed monthly_income; else "
        "monthly_income)",
    ),
    "excess_amount": Feature("number", "usage - basic_charge: what the customer pays above it"),
    "excess_ratio": Feature(
        "number", "usage / basic_charge - 1: the excess in proportion; unknown if no charge"
    ),
    "messages_12m": Feature("number", "messages sent to the customer in the last 12 months"),
    "responses_12m": Feature(
        "number", "opens, clicks, visits, replies and conversions in the last 12 months"
    ),
    "response_rate": Feature(
        "number", "responses_12m / messages_12m; unknown when nothing was sent"
    ),
    "responsive_channel": Feature(
        "string", "the channel with the most responses; unknown when none"
    ),
    "never_responds": Feature(
        "bool", "3 or more messages in the last 12 months and no response; unknown under 3"
    ),
    "always_responds": Feature(
        "bool",
        "3 or more messages in the last 12 months and at least as many responses; unknown under 3",
    ),
    "complaints_open": Feature("number", "complaints not yet resolved"),
}


#: What each feature is computed from, beyond the customer's own record: ``consents``, and
#: the parts of ``History`` (``rules.data.histories_of`` reads only the parts asked for).
#: A feature missing here needs none of them. Checked against ``compute`` by the tests.
SOURCES: dict[str, frozenset[str]] = {
    "email_consent": frozenset({"consents"}),
    "sms_consent": frozenset({"consents"}),
    **{
        name: frozenset({"purchases"})
        for name in (
            "purchases_12m",
            "spend_12m",
            "recency_days",
            "avg_order_value",
            "monthly_income",  # billed, plus what was bought
            "usage",  # else the monthly income
            "excess_amount",
            "excess_ratio",
        )
    },
    "messages_12m": frozenset({"messages"}),
    "responses_12m": frozenset({"responses"}),
    "responsive_channel": frozenset({"responses"}),
    "response_rate": frozenset({"messages", "responses"}),
    "never_responds": frozenset({"messages", "responses"}),
    "always_responds": frozenset({"messages", "responses"}),
    "complaints_open": frozenset({"complaints"}),
}
ALL_SOURCES = frozenset().union(*SOURCES.values())


def sources_of(fields: set[str]) -> frozenset[str]:
    """What must be read to compute these fields."""
    return frozenset().union(*(SOURCES.get(f, frozenset()) for f in fields))


@dataclass
class History:
    """Aggregates of one customer's history, read in bulk (see ``rules.data``)."""

    purchases_12m: int = 0
    spend_12m: float = 0.0
    last_purchase: date | None = None
    messages_12m: int = 0
    responses_12m: int = 0
    responses_by_channel: dict[str, int] = field(default_factory=dict)
    complaints_open: int = 0


def _months_between(start: date, end: date) -> int:
    months = (end.year - start.year) * 12 + end.month - start.month
    return months - (1 if end.day < start.day else 0)


def _num(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return wire_number(value)


def compute(
    profile: Mapping[str, Any],
    consent: Mapping[str, bool],
    history: History,
    today: date,
) -> dict[str, Value]:
    """Every feature of one customer; unknown ones are left out."""
    attrs: Mapping[str, Any] = profile.get("attributes") or {}
    out: dict[str, Value] = {
        "locale": profile.get("locale"),
        "timezone": profile.get("timezone"),
        "preferred_channel": profile.get("preferred_channel"),
        "has_email": bool(profile.get("email")),
        "has_phone": bool(profile.get("phone")),
        "email_consent": bool(consent.get("email", False)),
        "sms_consent": bool(consent.get("sms", False)),
        "purchases_12m": history.purchases_12m,
        "spend_12m": _num(history.spend_12m),
        "messages_12m": history.messages_12m,
        "responses_12m": history.responses_12m,
        "complaints_open": history.complaints_open,
    }
    birthday = profile.get("birthday")
    if isinstance(birthday, date):
        out["age_years"] = _months_between(birthday, today) // 12
    start = profile.get("signup_date") or profile.get("created_at")
    if isinstance(start, datetime):
        start = start.date()
    tenure: int | None = None
    if isinstance(start, date):
        tenure = max(0, _months_between(start, today))
        out["tenure_months"] = tenure
        out["newbie"] = tenure < 12
    if history.last_purchase is not None:
        out["recency_days"] = (today - history.last_purchase).days
    # Income has two sources that add up: what the customer is billed each month (the
    # imported attribute monthly_income, e.g. a subscription) and what they buy (purchases
    # of the last 12 months, spread over the months of tenure in that year). A purchase
    # adds to the bill; it never replaces it.
    billed = _num(attrs.get("monthly_income"))
    bought: float | None = None
    if history.purchases_12m:
        out["avg_order_value"] = _num(history.spend_12m / history.purchases_12m)
        months = min(12, max(1, (tenure if tenure is not None else 12)))
        bought = history.spend_12m / months
    if billed is not None or bought is not None:
        out["monthly_income"] = _num((billed or 0.0) + (bought or 0.0))
    basic = _num(attrs.get("basic_charge"))
    usage = _num(attrs.get("usage"))
    if usage is None:  # the billed figure is the usage billed; purchases are not usage
        usage = billed if billed is not None else out.get("monthly_income")  # type: ignore[assignment]
    if basic is not None:
        out["basic_charge"] = basic
    if usage is not None:
        out["usage"] = usage
    if basic is not None and usage is not None:
        out["excess_amount"] = _num(usage - basic)
        if basic:
            out["excess_ratio"] = _num(usage / basic - 1)
    if history.messages_12m:
        out["response_rate"] = _num(history.responses_12m / history.messages_12m)
    if history.messages_12m >= 3:
        out["never_responds"] = history.responses_12m == 0
        out["always_responds"] = history.responses_12m >= history.messages_12m
    if history.responses_by_channel:
        best = max(sorted(history.responses_by_channel), key=history.responses_by_channel.get)  # type: ignore[arg-type]
        out["responsive_channel"] = best
    return {k: v for k, v in out.items() if v is not None}


def with_attributes(
    features: dict[str, Value], attributes: Mapping[str, Any], declared: Mapping[str, Kind]
) -> dict[str, Value]:
    """Add the declared free attributes, dropping values of the wrong kind (unknown)."""
    out = dict(features)
    for name, kind in declared.items():
        value = attributes.get(name)
        if kind == "number":
            value = _num(value)
        elif kind == "string":
            value = value if isinstance(value, str) else None
        elif kind == "bool":
            value = value if isinstance(value, bool) else None
        if value is not None:
            out[f"attr.{name}"] = value
    return out
