"""Who a campaign reaches: the audience, its arms, the held-out control, and who is excluded.

The control group is drawn per tier (stratified) by a stable hash of (campaign, customer):
within each tier the customers with the lowest hashes, ``share`` of them rounded up, are held
out. The same audience always gives the same split, whoever runs it and however often.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, col, select

from clientela.campaigns.spec import Spec
from clientela.sending import choose_channel
from models import Customer, CustomerDecision
from rules.language import holds

PAGE = 2000


def stable_hash(campaign_id: str, customer_id: str) -> int:
    return int.from_bytes(
        hashlib.sha256(f"{campaign_id}:{customer_id}".encode()).digest()[:8], "big"
    )


@dataclass
class Member:
    customer_pk: int
    customer_id: str
    tier: str
    segments: list[str]
    arm: str
    group: str = "treated"
    channel: str = ""
    address: str = ""
    excluded: str = ""


@dataclass
class Preview:
    audience: int = 0
    excluded: Counter[str] = field(default_factory=Counter)
    by_tier: Counter[str] = field(default_factory=Counter)
    by_segment: Counter[str] = field(default_factory=Counter)
    by_channel: Counter[str] = field(default_factory=Counter)
    by_arm: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    cost: float = 0.0
    budget: float = 0.0

    @property
    def over_budget(self) -> bool:
        return self.cost > self.budget

    def as_dict(self) -> dict[str, Any]:
        return {
            "audience": self.audience,
            "excluded": dict(self.excluded),
            "by_tier": dict(sorted(self.by_tier.items())),
            "by_segment": dict(sorted(self.by_segment.items())),
            "by_channel": dict(sorted(self.by_channel.items())),
            "by_arm": {arm: dict(groups) for arm, groups in self.by_arm.items()},
            "estimated_cost": round(self.cost, 2),
            "budget": self.budget,
            "over_budget": self.over_budget,
        }


def select_members(session: Session, spec: Spec) -> list[Member]:
    """The whole lead list: every audience customer with arm, group, channel or exclusion."""
    s = spec.spec
    members: list[Member] = []
    after = 0
    while True:
        rows = session.exec(
            select(Customer, CustomerDecision)
            .join(CustomerDecision, col(CustomerDecision.customer_id) == col(Customer.id))
            .where(col(Customer.id) > after)
            .order_by(col(Customer.id))
            .limit(PAGE)
        ).all()
        if not rows:
            break
        after = rows[-1][0].id or after
        for customer, decision in rows:
            if s.audience.tiers and decision.tier not in s.audience.tiers:
                continue
            if s.audience.segments and not set(s.audience.segments) & set(decision.segments):
                continue
            audience = spec.conditions.get("audience")
            if audience is not None and not holds(audience.tree, decision.features):
                continue
            arm = next(
                (
                    a.name
                    for a in s.arms
                    if a.when is None
                    or holds(spec.conditions[f"arm:{a.name}"].tree, decision.features)
                ),
                None,
            )
            if arm is None:
                continue  # no arm selects this customer
            assert customer.id is not None
            members.append(
                Member(
                    customer.id, customer.external_id, decision.tier, list(decision.segments), arm
                )
            )
    _hold_out(members, s.id, s.control.share)
    _reachability(session, members, None if s.channel == "preferred" else s.channel)
    return members


def _hold_out(members: list[Member], campaign_id: str, share: float) -> None:
    by_stratum: dict[tuple[str, str], list[Member]] = defaultdict(list)
    for m in members:
        by_stratum[(m.arm, m.tier)].append(m)
    for group in by_stratum.values():
        group.sort(key=lambda m: stable_hash(campaign_id, m.customer_id))
        for m in group[: math.ceil(share * len(group))]:
            m.group = "control"


def _reachability(session: Session, members: list[Member], channel: str | None) -> None:
    """Channel and address for the treated; exclusions with reasons; one message per address."""
    seen: set[tuple[str, str]] = set()
    for m in members:
        if m.group != "treated":
            continue
        customer = session.get(Customer, m.customer_pk)
        assert customer is not None
        chosen, address_or_reason = choose_channel(
            session=session, customer=customer, requested=channel
        )
        if chosen is None:
            m.excluded = address_or_reason
        elif (chosen, address_or_reason.lower()) in seen:
            m.excluded = "duplicate address: another customer in the audience shares it"
        else:
            seen.add((chosen, address_or_reason.lower()))
            m.channel, m.address = chosen, address_or_reason


def preview(session: Session, spec: Spec) -> Preview:
    members = select_members(session, spec)
    out = Preview(budget=spec.spec.budget)
    for m in members:
        out.audience += 1
        out.by_arm[m.arm][m.group] += 1
        if m.excluded:
            out.excluded[m.excluded] += 1
            continue
        out.by_tier[m.tier] += 1
        for segment in m.segments:
            out.by_segment[segment] += 1
        if m.group == "treated":
            out.by_channel[m.channel] += 1
            out.cost += spec.spec.cost_per_message.get(m.channel, 0.0)  # type: ignore[call-overload]
    return out
