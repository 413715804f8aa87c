"""Who a campaign reaches: the audience, its arms, the held-out control, and who is excluded.

The lead list is built in the ``campaign_member`` table, in one SQL statement when the spec
needs no customer's features (``clientela.campaigns.listing``, which a preview only counts),
else page by page, so its size does not depend on memory:

1. Every customer the audience and an arm select becomes a member, with tier and segments
   as they are now, a content variant and a pilot flag (each from its own stable hash).
2. The control group is drawn per arm and tier (stratified) by a stable hash of (campaign,
   customer): within each stratum the members with the lowest hashes, ``share`` of them
   rounded up, are held out. The same audience always gives the same split.
3. Every member gets the channel and address they would be contacted on, or is excluded
   with the reason (consent, suppression, tier channels, contact caps). Exclusions apply to
   the control group too, so that treated and control stay comparable.
4. Several members sharing an address keep one: the others are excluded as duplicates.

A preview of a list written page by page builds it inside a transaction that is rolled
back.
"""

from __future__ import annotations

import json
import math
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, insert, tuple_, update
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from clientela.campaigns import listing
from clientela.campaigns.listing import hash_text
from clientela.campaigns.spec import Arm, Spec
from clientela.campaigns.uplift import detectable
from clientela.messaging.eligibility import Facts
from clientela.timeutil import utcnow
from models import Campaign, CampaignMember, Customer, CustomerDecision, Interaction
from rules.language import holds

PAGE = 1000
DUPLICATE = listing.DUPLICATE


def stable_hash(campaign_id: str, customer_id: str, salt: str = "") -> int:
    """63 bits (it fits a signed BIGINT) of sha256 over the campaign and the customer."""
    return hash_text(f"{campaign_id}:{customer_id}" + (f":{salt}" if salt else ""))


def unit(campaign_id: str, customer_id: str, salt: str) -> float:
    """A stable uniform draw in [0, 1)."""
    return stable_hash(campaign_id, customer_id, salt) / 2**63


@dataclass
class Preview:
    audience: int = 0
    excluded: Counter[str] = field(default_factory=Counter)
    by_tier: Counter[str] = field(default_factory=Counter)
    by_segment: Counter[str] = field(default_factory=Counter)
    by_channel: Counter[str] = field(default_factory=Counter)
    by_arm: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    by_variant: Counter[str] = field(default_factory=Counter)
    pilot: int = 0
    cost: float = 0.0
    budget: float = 0.0
    #: What the split can measure: the smallest conversion uplift each arm detects, against
    #: the spec's target, with a warning when it cannot detect the target.
    power: dict[str, Any] = field(default_factory=dict)
    #: The model version that chose each model arm.
    models: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def over_budget(self) -> bool:
        return self.cost > self.budget

    @property
    def treated(self) -> int:
        return sum(self.by_channel.values())

    @property
    def control(self) -> int:
        """Held out and reachable: the control group the report compares with."""
        return sum(groups.get("control", 0) for groups in self.by_arm.values())

    @property
    def excluded_total(self) -> int:
        return sum(self.excluded.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "audience": self.audience,
            "excluded": dict(self.excluded),
            "by_tier": dict(sorted(self.by_tier.items())),
            "by_segment": dict(sorted(self.by_segment.items())),
            "by_channel": dict(sorted(self.by_channel.items())),
            "by_arm": {arm: dict(groups) for arm, groups in self.by_arm.items()},
            "by_variant": dict(sorted(self.by_variant.items())),
            "pilot": self.pilot,
            "estimated_cost": round(self.cost, 2),
            "budget": self.budget,
            "over_budget": self.over_budget,
            "power": self.power or None,
            "models": self.models or None,
        }


def build(
    session: Session,
    campaign_id: str,
    spec: Spec,
    hash_id: str | None = None,
    in_sql: bool | None = None,
) -> Preview:
    """Write the campaign's lead list (replacing any earlier one) and summarise it.

    ``hash_id`` is the campaign id the draws hash with (a preview lists under a scratch id).
    ``in_sql``: list and check reachability in set-based SQL (``listing``; the default when
    the spec allows it) or page by page in Python (the tests compare the two).
    """
    hash_id = hash_id or campaign_id
    in_sql = listing.in_sql(spec, in_sql)
    session.execute(delete(CampaignMember).where(col(CampaignMember.campaign_id) == campaign_id))
    models: dict[str, dict[str, Any]] = {}
    if in_sql:  # the whole list in one statement: control group and duplicates included
        listing.list_audience(session, campaign_id, spec, hash_id, utcnow())
    else:
        models = _list_audience(session, campaign_id, spec, hash_id)
    campaign = session.get(Campaign, campaign_id)
    if campaign is not None and (models or "models" in campaign.spec):
        # The campaign records which model version chose each arm (the report names it).
        campaign.spec = {**campaign.spec, "models": models}
        session.add(campaign)
    if not in_sql:
        _hold_out(session, campaign_id, spec.spec.control.share)
        channel = None if spec.spec.channel == "preferred" else spec.spec.channel
        _reachability(session, campaign_id, channel, spec.spec.topic)
        _deduplicate(session, campaign_id)
    out = summarise(session, campaign_id, spec)
    out.models = models
    return out


def preview(session: Session, spec: Spec, in_sql: bool | None = None) -> Preview:
    """What ``build`` would write, without writing it."""
    if listing.in_sql(spec, in_sql):
        rows = listing.counts(session, spec, spec.spec.id, utcnow())
        return _summary(session, rows, spec)
    scratch = f"~preview-{uuid.uuid4().hex[:12]}"
    nested = session.begin_nested()
    try:
        session.add(Campaign(id=scratch, name="preview", stage="preview"))
        session.flush()
        return build(session, scratch, spec, hash_id=spec.spec.id, in_sql=in_sql)
    finally:
        nested.rollback()


def _audience_pages(
    session: Session, spec: Spec, with_customers: bool = False
) -> Iterator[list[tuple[int, str, CustomerDecision, Customer | None]]]:
    """The customers the audience selects, page by page in the order of their ids."""
    s = spec.spec
    audience = spec.conditions.get("audience")
    after = 0
    while True:
        query = (
            select(Customer.id, Customer.external_id, CustomerDecision, Customer)
            if with_customers
            else select(Customer.id, Customer.external_id, CustomerDecision)
        )
        rows: Sequence[Any] = session.exec(
            query.join(CustomerDecision, col(CustomerDecision.customer_id) == col(Customer.id))
            .where(col(Customer.id) > after, col(Customer.internal).is_(False))
            .order_by(col(Customer.id))
            .limit(PAGE)
        ).all()
        if not rows:
            return
        after = rows[-1][0] or after
        page: list[tuple[int, str, CustomerDecision, Customer | None]] = []
        for row in rows:
            pk, external_id, decision = row[0], row[1], row[2]
            if s.audience.tiers and decision.tier not in s.audience.tiers:
                continue
            if s.audience.segments and not set(s.audience.segments) & set(decision.segments):
                continue
            if audience is not None and not holds(audience.tree, decision.features):
                continue
            page.append((pk, external_id, decision, row[3] if with_customers else None))
        yield page


def _selects(spec: Spec, arm: Arm, hash_id: str, external_id: str, decision: Any) -> bool:
    """Whether an arm that decides customer by customer (a rule, a random share) takes one."""
    if arm.random is not None and arm.random.share is not None:
        return unit(hash_id, external_id, f"arm:{arm.name}") < arm.random.share
    return arm.when is None or holds(spec.conditions[f"arm:{arm.name}"].tree, decision.features)


def _ranked_arms(
    session: Session, spec: Spec, hash_id: str
) -> tuple[dict[int, int], dict[str, dict[str, Any]]]:
    """Arms by a model's score or a number drawn at random: every audience customer is
    looked at first (their id, and per arm whether it selects them or their rank key), then
    the arms take their customers in order, each from those the arms above left.

    Returns each placed customer's arm (its index) and the model version each model arm used.
    """
    from clientela.predictive.features import features_at
    from clientela.predictive.training import ModelMissing, fitted_of, latest

    arms = spec.spec.arms
    models: dict[str, dict[str, Any]] = {}
    scorers: dict[int, Any] = {}
    for i, arm in enumerate(arms):
        if arm.model is not None:
            try:
                row = latest(session, arm.model.name, arm.model.version)
                scorers[i] = fitted_of(row)
            except ModelMissing as exc:
                raise spec.problem(("arms", i, "model", "name"), str(exc)) from None
            models[arm.name] = {"name": row.name, "version": row.version, "kind": row.kind}
    ids: list[int] = []
    keys: list[list[float]] = [[] for _ in arms]  # per arm: a key to sort by (lowest first)
    fits: list[list[bool]] = [[] for _ in arms]  # per arm: whether it would take them
    now = utcnow()
    for page in _audience_pages(session, spec, with_customers=bool(scorers)):
        if not page:
            continue
        features = (
            features_at(session, [c for _, _, _, c in page if c is not None], now)
            if scorers
            else {}
        )
        for i, arm in enumerate(arms):
            if i in scorers:
                scores = scorers[i].score([features[pk] for pk, _, _, _ in page])
                keys[i].extend((-scores).tolist())
                fits[i].extend([True] * len(page))
            elif arm.random is not None and arm.random.count is not None:
                keys[i].extend(unit(hash_id, x, f"arm:{arm.name}") for _, x, _, _ in page)
                fits[i].extend([True] * len(page))
            else:
                fits[i].extend(_selects(spec, arm, hash_id, x, d) for _, x, d, _ in page)
        ids.extend(pk for pk, _, _, _ in page)
    placed: dict[int, int] = {}
    for i, arm in enumerate(arms):
        free = [j for j in range(len(ids)) if ids[j] not in placed and fits[i][j]]
        if arm.ranked:
            size = arm.model or arm.random
            assert size is not None
            n = size.count if size.count is not None else math.ceil((size.share or 0) * len(free))
            # Ties keep the order of ids: the same audience always gives the same arm.
            free = sorted(free, key=lambda j, k=keys[i]: k[j])[:n]  # type: ignore[misc]
        for j in free:
            placed[ids[j]] = i
    return placed, models


def _list_audience(
    session: Session, campaign_id: str, spec: Spec, hash_id: str
) -> dict[str, dict[str, Any]]:
    """Write a member for every customer an arm takes; returns the model versions used."""
    s = spec.spec
    variants = [v.name for v in s.variants]
    pilot_share = s.pilot.share if s.pilot else 0.0
    placed: dict[int, int] | None = None
    models: dict[str, dict[str, Any]] = {}
    if any(a.ranked for a in s.arms):
        placed, models = _ranked_arms(session, spec, hash_id)
    for page in _audience_pages(session, spec):
        batch: list[dict[str, Any]] = []
        for pk, external_id, decision, _ in page:
            if placed is not None:
                index = placed.get(pk)
                arm = None if index is None else s.arms[index].name
            else:
                arm = next(
                    (a.name for a in s.arms if _selects(spec, a, hash_id, external_id, decision)),
                    None,
                )
            if arm is None:
                continue  # no arm selects this customer
            variant = ""
            if variants:
                variant = variants[stable_hash(hash_id, external_id, "variant") % len(variants)]
            batch.append(
                {
                    "campaign_id": campaign_id,
                    "customer_id": pk,
                    "arm": arm,
                    "variant": variant,
                    "group": "treated",
                    "tier": decision.tier,
                    "segments": list(decision.segments),
                    "draw": stable_hash(hash_id, external_id),
                    "pilot": pilot_share > 0 and unit(hash_id, external_id, "pilot") < pilot_share,
                }
            )
        if batch:
            session.execute(insert(CampaignMember), batch)
    return models


def _hold_out(session: Session, campaign_id: str, share: float) -> None:
    if share <= 0:
        return
    strata = session.exec(
        select(CampaignMember.arm, CampaignMember.tier, func.count())
        .where(CampaignMember.campaign_id == campaign_id)
        .group_by(col(CampaignMember.arm), col(CampaignMember.tier))
    ).all()
    for arm, tier, n in strata:
        lowest = (
            select(CampaignMember.id)
            .where(
                CampaignMember.campaign_id == campaign_id,
                CampaignMember.arm == arm,
                CampaignMember.tier == tier,
            )
            .order_by(col(CampaignMember.draw))
            .limit(math.ceil(share * n))
        )
        session.execute(
            update(CampaignMember)
            .where(col(CampaignMember.id).in_(lowest.scalar_subquery()))
            .values(group="control", variant="", pilot=False)
        )


def _reachability(
    session: Session, campaign_id: str, channel: str | None, topic: str | None = None
) -> None:
    """The channel and address each member would be contacted on, or why not (no consent,
    unsubscribed from the campaign's topic, no address, suppressed, caps)."""
    now = utcnow()
    after = 0
    while True:
        rows = session.exec(
            select(CampaignMember.id, Customer)
            .join(Customer, col(Customer.id) == col(CampaignMember.customer_id))
            .where(CampaignMember.campaign_id == campaign_id, col(CampaignMember.id) > after)
            .order_by(col(CampaignMember.id))
            .limit(PAGE)
        ).all()
        if not rows:
            break
        after = rows[-1][0] or after
        facts = Facts(session, [c for _, c in rows], now)
        changes = []
        for member_id, customer in rows:
            off = facts.unsubscribed(customer, topic)
            chosen, found = (None, off) if off else facts.choose_channel(customer, channel)
            if chosen is None:
                changes.append({"mid": member_id, "ch": "", "addr": "", "why": found[:255]})
            else:
                address = found.lower() if chosen == "email" else found
                changes.append({"mid": member_id, "ch": chosen, "addr": address, "why": ""})
        table = CampaignMember.__table__  # type: ignore[attr-defined]
        session.connection().execute(
            update(table)
            .where(table.c.id == bindparam("mid"))
            .values(channel=bindparam("ch"), address=bindparam("addr"), excluded=bindparam("why")),
            changes,
        )


def _deduplicate(session: Session, campaign_id: str) -> None:
    """Of the members sharing a channel and address, the first customer (by id) keeps it."""
    m = CampaignMember.__table__  # type: ignore[attr-defined]
    mine = and_(m.c.campaign_id == campaign_id, m.c.excluded == "")
    shared = (
        select(m.c.channel, m.c.address)
        .where(mine)
        .group_by(m.c.channel, m.c.address)
        .having(func.count() > 1)
    )
    place = (
        select(
            m.c.id,
            func.row_number()
            .over(partition_by=(m.c.channel, m.c.address), order_by=m.c.customer_id)
            .label("place"),
        )
        .where(mine, tuple_(m.c.channel, m.c.address).in_(shared))
        .subquery()
    )
    later = select(place.c.id).where(place.c.place > 1)
    session.execute(
        update(m)
        .where(m.c.id.in_(later))
        .values(excluded=DUPLICATE, channel="", address="")
        .execution_options(synchronize_session=False)
    )


#: The base's conversion rate when it has none to go by.
ASSUMED_BASELINE = 0.02


def baseline(session: Session, days: int = 90) -> tuple[float, str]:
    """The base's conversion rate over the last ``days`` (customers who converted, of all),
    and where it comes from."""
    since = utcnow() - timedelta(days=days)
    converted = session.exec(
        select(func.count(func.distinct(Interaction.customer_id))).where(
            Interaction.kind == "conversion", col(Interaction.occurred_at) >= since
        )
    ).one()
    customers = session.exec(
        select(func.count()).select_from(Customer).where(col(Customer.internal).is_(False))
    ).one()
    if not converted or not customers:
        return ASSUMED_BASELINE, f"assumed {ASSUMED_BASELINE:.0%}: no conversion in {days} days"
    rate = min(max(converted / customers, 0.001), 0.5)
    return rate, f"the base's conversion rate over the last {days} days"


def _power(session: Session, out: Preview, s: Any) -> dict[str, Any]:
    base, source = baseline(session)
    shared = out.by_arm.get("", Counter()).get("control", 0)
    arms = {}
    for arm, groups in out.by_arm.items():
        if not arm or not groups.get("treated"):
            continue
        control = groups.get("control", 0) or shared
        mde = detectable(groups["treated"], control, base)
        arms[arm] = {
            "treated": groups["treated"],
            "control": control,
            "mde_pp": None if mde is None else round(mde * 100, 2),
        }
    target = s.target_kpi.uplift if s.target_kpi.metric != "revenue_per_customer" else None
    short = [
        a for a, v in arms.items()
        if target is not None and (v["mde_pp"] is None or v["mde_pp"] > target)
    ]  # fmt: skip
    warning = None
    if short:
        worst = ", ".join(
            f"{a} ({arms[a]['control']} held out: "
            + ("too few to measure" if arms[a]["mde_pp"] is None
               else f"detects +{arms[a]['mde_pp']:.2f} pp or more") + ")"
            for a in short
        )  # fmt: skip
        warning = (
            f"this split cannot detect the target of +{target:.2f} pp with 80% power: {worst}; "
            "hold out more customers (a larger control share) or widen the audience"
        )
    return {
        "baseline": round(base, 4),
        "baseline_from": source,
        "target_pp": target,
        "arms": arms,
        "warning": warning,
    }


def summarise(session: Session, campaign_id: str, spec: Spec) -> Preview:
    """Counts of a written lead list: by arm and group, exclusion, tier, channel, variant,
    segment; from one grouped scan of the list."""
    m = CampaignMember.__table__  # type: ignore[attr-defined]
    keys = listing.summary_keys(m)
    rows = session.execute(
        sa_select(*keys, func.count()).where(m.c.campaign_id == campaign_id).group_by(*keys)
    ).all()
    return _summary(session, rows, spec)


def _summary(session: Session, rows: Sequence[Any], spec: Spec) -> Preview:
    """A ``Preview`` from a lead list's counts by ``listing.summary_keys``."""
    s = spec.spec
    out = Preview(budget=s.budget)
    by_channel: Counter[str] = Counter()
    for arm, group, excluded, tier, channel, variant, pilot, segments, n in rows:
        # Each member is counted once: excluded (treated or control), else to contact
        # (treated), else held out (control). So to contact + held out + excluded =
        # audience, everywhere.
        out.audience += n
        if excluded:
            out.by_arm[arm]["excluded"] += n
            out.excluded[excluded] += n
            continue
        out.by_arm[arm][group] += n
        out.by_tier[tier] += n
        for segment in json.loads(segments or "[]"):
            out.by_segment[segment] += n
        if group == "treated":
            by_channel[channel] += n
            if s.variants:
                out.by_variant[variant] += n
            if pilot:
                out.pilot += n
    for channel, n in sorted(by_channel.items()):
        out.by_channel[channel] = n
        out.cost += n * s.cost_per_message.get(channel, 0.0)  # type: ignore[call-overload]
    out.power = _power(session, out, s)
    return out
