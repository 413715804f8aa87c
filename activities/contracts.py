"""Inputs and outputs of activities: plain dataclasses, safe to import from workflow code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class MessageRequest:
    """One intended message. ``key`` makes it idempotent: the same key is sent at most once."""

    key: str
    customer_id: str
    template: str
    channel: str | None = None  # None: the customer's preferred consented channel
    journey: str | None = None
    campaign: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    #: A service message (answer to the customer's own request: an order confirmation, a
    #: complaint's acknowledgement or survey): needs no marketing consent, is not bound by
    #: the tier's channels or caps and does not count against them. Suppression still holds.
    service: bool = False
    #: Track the email's clicks and opens (as settings allow): off for the team's own mail
    #: (proofs, reports) and for a campaign or journey that turns tracking off.
    tracking: bool = True
    #: The subscription topic of its campaign or journey: not sent to a customer who
    #: unsubscribed from it (service messages have none).
    topic: str | None = None


#: Outcome state of a message that may not go yet (quiet hours); its ledger row stays queued.
DEFERRED = "deferred"


@dataclass
class MessageOutcome:
    key: str
    state: str
    channel: str = ""
    reason: str = ""
    provider_id: str = ""
    #: state "deferred" (not now, e.g. quiet hours): when it may go, ISO 8601 UTC.
    retry_at: str = ""


@dataclass
class SendMessagesInput:
    messages: list[MessageRequest]
    #: Return each message's outcome (journeys) or only counts (large batches).
    detail: bool = True


@dataclass
class SendMessagesResult:
    counts: dict[str, int] = field(default_factory=dict)
    outcomes: list[MessageOutcome] = field(default_factory=list)


@dataclass
class LocalTimeInput:
    """A journey's ``wait_until``: the next such local time of the customer."""

    customer_id: str
    at: str  # HH:MM in the customer's time zone


@dataclass
class ConditionInput:
    """A journey's branch on a rule condition over the customer's fields."""

    customer_id: str
    condition: str
    #: The triggering event's declared property kinds and its properties (``event.<name>``).
    event: dict[str, str] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
