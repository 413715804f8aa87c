"""May this customer be contacted, on which channel, and now? Consent, suppression, tier policy.

Everything a decision needs is loaded once for a whole batch (``Facts``), so deciding for a
page of a campaign costs a handful of queries, not a handful per customer.

The rules, in order, for each channel the message may use (the requested one, or the
customer's preferred channel first and then the others):

1. the customer's tier policy lists the channel (``policies.<tier>.channels``);
2. the customer consented to it; 3. there is an address for it; 4. the address is not on the
   suppression list;
5. the tier's contact caps for the channel are not reached. Caps count messages handed to a
   provider (sent or delivered) or being handed over (claimed) over rolling windows: a day
   is the last 24 hours, a week the last 7 days, a month the last 30 days. Every campaign
   and journey counts.

A *service* message (an order confirmation, a complaint's acknowledgement and survey: the
answer to the customer's own request) skips 1, 2 and 5 and does not count against caps.

The first channel that passes is chosen. Quiet hours come after the choice: an SMS is only
sent between ``sms_hours`` (default 08:00-21:00) in the customer's own time zone; outside
them the message waits (``Deferral``) rather than moving to another channel.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import and_, or_
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from clientela.timeutil import QuietHours, as_utc, zone_of
from models import (
    Channel,
    Consent,
    CustomerDecision,
    Message,
    RuleVersion,
    Suppression,
    TopicPreference,
)
from models.customer import CustomerFields
from models.ledger import MessageState
from rules.model import Caps, TierPolicy
from rules.service import rules_of

# The tables read for a batch, queried as rows (they are only read): through the ORM, a
# batch's consents and decisions were the larger part of loading its facts (bench.campaign).
_CONSENT = Consent.__table__  # type: ignore[attr-defined]
_DECISION = CustomerDecision.__table__  # type: ignore[attr-defined]
_SUPPRESSION = Suppression.__table__  # type: ignore[attr-defined]
CAP_WINDOWS = {"day": timedelta(days=1), "week": timedelta(days=7), "month": timedelta(days=30)}
CHUNK = 500  # ids per IN (...) query

T = TypeVar("T")


def chunked(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass
class Deferral:
    """Not now: the message may go at ``until`` (UTC)."""

    until: datetime
    reason: str
    channel: str = Channel.sms  # the channel it waits to go on


class Facts:
    """Consents, topics, suppressions, tier policies and recent contacts of a batch of
    customers."""

    def unsubscribed(self, customer: CustomerFields, topic: str | None) -> str | None:
        """Why the customer may not get a message of ``topic`` (None: they may)."""
        if topic and customer.id is not None and topic in self.topics_off.get(customer.id, ()):
            return f"unsubscribed from {topic}"
        return None

    def __init__(
        self,
        session: Session,
        customers: Iterable[CustomerFields],
        now: datetime,
        deciding: Iterable[str] = (),
    ) -> None:
        """``deciding``: keys of the messages being decided, which do not count against
        their own caps (a retried message's earlier claim is the same message)."""
        self.now = now
        deciding_keys = set(deciding)
        batch = [c for c in customers if c.id is not None]
        ids = sorted({c.id for c in batch if c.id is not None})
        internal = {c.id for c in batch if c.internal}
        self.consents: dict[int, dict[str, bool]] = defaultdict(dict)  # granted, by channel
        self.policies: dict[int, tuple[str, TierPolicy | None]] = {}
        self.recent: dict[tuple[int, str], list[datetime]] = defaultdict(list)
        self.suppressed: dict[tuple[str, str], str] = {}
        self.offers: dict[int, list[str]] = {}  # next best offers, best first
        self.topics_off: dict[int, set[str]] = defaultdict(set)  # topics unsubscribed from
        versions: dict[int, RuleVersion | None] = {}
        since = now - max(CAP_WINDOWS.values())
        for part in chunked(ids):
            consent = _CONSENT.c
            for customer_id, channel, granted in session.execute(
                sa_select(consent.customer_id, consent.channel, consent.granted).where(
                    consent.customer_id.in_(part)
                )
            ).all():
                self.consents[customer_id][channel] = granted
            for customer_id, topic in session.exec(
                select(TopicPreference.customer_id, TopicPreference.topic).where(
                    col(TopicPreference.customer_id).in_(part),
                    col(TopicPreference.subscribed).is_(False),
                )
            ).all():
                self.topics_off[customer_id].add(topic)
            decision = _DECISION.c
            for customer_id, vid, tier, offers in session.execute(
                sa_select(
                    decision.customer_id, decision.rule_version_id, decision.tier, decision.offers
                ).where(decision.customer_id.in_(part))
            ).all():
                self.offers[customer_id] = list(offers)
                if customer_id in internal:
                    continue  # proof list, stakeholders: no tier, no caps
                if vid not in versions:
                    versions[vid] = session.get(RuleVersion, vid)
                version = versions[vid]
                policy = rules_of(version).spec.policies.get(tier) if version else None
                self.policies[customer_id] = (tier, policy)
            # Handed to a provider, or claimed to be (another batch may be sending it now).
            for key, customer_id, channel, sent_at, claimed_at in session.execute(
                sa_select(
                    col(Message.key),
                    col(Message.customer_id),
                    col(Message.channel),
                    col(Message.sent_at),
                    col(Message.claimed_at),
                ).where(
                    col(Message.customer_id).in_(part),
                    col(Message.service).is_(False),
                    or_(
                        and_(
                            col(Message.state).in_([MessageState.sent, MessageState.delivered]),
                            col(Message.sent_at) >= since,
                        ),
                        and_(
                            col(Message.state).in_([MessageState.claimed, MessageState.sending]),
                            col(Message.claimed_at) >= since,
                        ),
                    ),
                )
            ).all():
                at = as_utc(sent_at or claimed_at)
                if at is not None and key not in deciding_keys:
                    self.recent[(customer_id, channel)].append(at)
        addresses = sorted({a for c in batch for a in (c.email, c.phone) if a})
        for some in chunked(addresses):
            suppression = _SUPPRESSION.c
            for channel, address, reason in session.execute(
                sa_select(suppression.channel, suppression.address, suppression.reason).where(
                    suppression.address.in_(some)
                )
            ).all():
                self.suppressed[(channel, address)] = reason

    def tier_channels(self, customer: CustomerFields) -> tuple[str, list[str]] | None:
        """(tier, channels) its tier's policy allows; None before the rules decided a tier."""
        assert customer.id is not None
        tier, policy = self.policies.get(customer.id, ("", None))
        return (tier, list(policy.channels)) if policy else None

    def cap_reached(self, customer: CustomerFields, channel: str) -> str | None:
        """Which cap of the customer's tier stops another message on ``channel``, if any."""
        assert customer.id is not None
        tier, policy = self.policies.get(customer.id, ("", None))
        caps: Caps | None = policy.caps.get(channel) if policy else None  # type: ignore[call-overload]
        if caps is None:
            return None
        sent = self.recent.get((customer.id, channel), [])
        for window, span in CAP_WINDOWS.items():
            limit = getattr(caps, window)
            if limit is not None and sum(1 for t in sent if t > self.now - span) >= limit:
                return f"contact cap of tier {tier}: {limit} per {window}"
        return None

    def count_contact(self, customer: CustomerFields, channel: str) -> None:
        """A message claimed in this batch counts against the caps of the next ones."""
        assert customer.id is not None
        self.recent[(customer.id, channel)].append(self.now)

    def choose_channel(
        self, customer: CustomerFields, requested: str | None, service: bool = False
    ) -> tuple[str, str] | tuple[None, str]:
        """(channel, address) allowed for this customer, or (None, why not).

        A service message (``service``) answers the customer's own request: only an
        address and the suppression list decide."""
        assert customer.id is not None
        granted = self.consents.get(customer.id, {})
        if requested and not service:
            order = [requested]
        else:  # a service message reaches the customer on whichever channel it can
            preferred = requested or customer.preferred_channel or Channel.email
            order = [preferred] + [c.value for c in Channel if c.value != preferred]
        allowed = self.tier_channels(customer)
        reasons = []
        for channel in order:
            address = customer.email if channel == Channel.email else customer.phone
            consent = granted.get(channel)  # None: never asked
            if not service and allowed is not None and channel not in allowed[1]:
                reasons.append(f"{channel}: not a channel of tier {allowed[0]}")
            elif not service and not consent:
                reasons.append(f"{channel}: no consent")
            elif not address:
                reasons.append(f"{channel}: no address")
            elif (hit := self.suppressed.get((channel, address))) is not None:
                reasons.append(f"{channel}: address suppressed ({hit})")
            elif not service and (cap := self.cap_reached(customer, channel)) is not None:
                reasons.append(f"{channel}: {cap}")
            else:
                return channel, address
        return None, "; ".join(reasons)

    def quiet(self, customer: CustomerFields, channel: str, hours: QuietHours) -> Deferral | None:
        """A deferral if an SMS would reach the customer outside ``hours`` of their time zone."""
        if channel != Channel.sms:
            return None
        zone = zone_of(customer.timezone)
        opening = hours.next_opening(self.now, zone)
        if opening is None:
            return None
        local = opening.astimezone(zone)
        return Deferral(
            opening,
            f"quiet hours: SMS waits until {local:%H:%M} {zone.key} ({opening:%Y-%m-%dT%H:%MZ})",
        )
