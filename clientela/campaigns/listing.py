"""The lead list as set-based SQL: one statement for any size of base.

``clientela.campaigns.audience`` builds the list; when the spec chooses its customers by
tier, segment and arms that need no customer's features (an arm that takes the rest, or a
random share of the audience), it does it here, in the database:

one ``SELECT`` (``members``) gives every member as ``audience.build`` would write it:

1. each customer an arm takes, with the same stable draws as ``audience.stable_hash``
   (sha256 in the database: PostgreSQL's own ``sha256``, and on SQLite the same Python
   function registered on every connection, ``clientela.db``), and its channel and
   address, or the reason it is excluded, by the rules of
   ``clientela.messaging.eligibility.Facts.choose_channel`` (topics, tier channels,
   consent, address, suppression, contact caps), each written as a SQL expression (a
   member's reachability does not depend on its group, so the control group has it too);
2. the control group: in each arm and tier, the highest draw held out (a window over the
   draws), and every member at or below it;
3. duplicates: each channel and address several members share, with its first customer
   (grouped), and every other member on it.

The members of step 1 are computed once (a materialized common table expression) and
read three times; nothing is sorted but the draws and the shared addresses.

The workflow writes it with one ``INSERT ... SELECT`` (``list_audience``); a preview
counts it with one grouped ``SELECT`` (``counts``) and writes nothing.

An audience condition, an arm with ``when`` or an arm ranked by a model or a count needs a
customer's features or a ranking and goes through the Python path, page by page. The
tests build the same lists both ways and compare them member by member, on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Float,
    Text,
    and_,
    case,
    cast,
    false,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    true,
    tuple_,
)
from sqlalchemy.dialects.postgresql import BIT
from sqlmodel import Session

from clientela.campaigns.spec import Spec
from clientela.messaging.eligibility import CAP_WINDOWS
from models import (
    CampaignMember,
    Consent,
    Customer,
    CustomerDecision,
    Message,
    RuleVersion,
    Suppression,
    TopicPreference,
)
from models.ledger import MessageState
from rules.model import TierPolicy
from rules.service import rules_of

HASH_FUNCTION = "clientela_hash"
DUPLICATE = "duplicate address: another customer in the audience shares it"
#: The columns of a member, as ``members`` gives them and ``list_audience`` writes them.
COLUMNS = ["campaign_id", "customer_id", "arm", "variant", "group", "tier"]
COLUMNS += ["segments", "draw", "pilot", "channel", "address", "excluded"]
TWO_63 = float(2**63)


def hash_text(text: str) -> int:
    """63 bits of sha256 over ``text``: ``audience.stable_hash`` of its parts joined."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


def in_sql(spec: Spec, wanted: bool | None = None) -> bool:
    """Whether the list is written in SQL: when the spec allows it, unless ``wanted`` is
    False (the tests compare both paths)."""
    return can_list(spec) if wanted is None else wanted and can_list(spec)


def can_list(spec: Spec) -> bool:
    """Whether the list can be written in SQL (no feature of any customer is needed)."""
    s = spec.spec
    if spec.conditions.get("audience") is not None:
        return False
    for arm in s.arms:
        if arm.ranked or arm.when is not None or arm.model is not None:
            return False
        if arm.random is not None and arm.random.share is None:
            return False
    return True


def _tables() -> tuple[Any, Any, Any]:
    return (
        CampaignMember.__table__,  # type: ignore[attr-defined]
        Customer.__table__,  # type: ignore[attr-defined]
        CustomerDecision.__table__,  # type: ignore[attr-defined]
    )


def _hash(session: Session, text: ColumnElement[str]) -> ColumnElement[int]:
    if session.get_bind().dialect.name == "postgresql":
        hexed = func.encode(func.sha256(func.convert_to(text, literal("UTF8"))), literal("hex"))
        bits = cast(literal("x") + func.left(hexed, 16), BIT(64)).op(">>")(1)
        return cast(bits, BigInteger)
    return getattr(func, HASH_FUNCTION)(text, type_=BigInteger)


def _below(draw: ColumnElement[int], share: float) -> ColumnElement[bool]:
    """``audience.unit(...) < share``: the draw over 2**63, compared as Python does (a float
    of the draw, scaled by a power of two: exact)."""
    return cast(draw, Float) < share * TWO_63


def _in_segments(session: Session, segments: ColumnElement[Any], wanted: list[str]) -> Any:
    postgres = session.get_bind().dialect.name == "postgresql"
    name = "json_array_elements_text" if postgres else "json_each"
    items = getattr(func, name)(segments).table_valued("value")
    return select(literal(1)).select_from(items).where(items.c.value.in_(wanted)).exists()


def list_audience(
    session: Session,
    campaign_id: str,
    spec: Spec,
    hash_id: str,
    now: datetime,
) -> None:
    """Write the lead list as ``audience.build`` would: one statement."""
    m, _, _ = _tables()
    listed = members(session, campaign_id, spec, hash_id, now)
    session.execute(insert(m).from_select(COLUMNS, listed))


def summary_keys(member: Any) -> list[Any]:
    """What a lead list is counted by (``audience.summarise``), of a table or ``SELECT`` of
    members: segments last, grouped by their text (a list per member)."""
    keys = [member.c[name] for name in ("arm", "group", "excluded", "tier", "channel")]
    keys += [member.c.variant, member.c.pilot, cast(member.c.segments, Text)]
    return keys


def counts(session: Session, spec: Spec, hash_id: str, now: datetime) -> list[Any]:
    """The lead list ``list_audience`` would write, counted as ``audience.summarise`` counts
    a written one (``summary_keys``, then the count), writing nothing."""
    keys = summary_keys(members(session, "", spec, hash_id, now).subquery("members"))
    return list(session.execute(select(*keys, func.count()).group_by(*keys)).all())


def members(
    session: Session,
    campaign_id: str,
    spec: Spec,
    hash_id: str,
    now: datetime,
) -> Any:
    """Every member of the lead list as a ``SELECT`` (``COLUMNS``): each customer an arm
    takes, the channel and address it would be contacted on or why it is excluded, the
    control group held out and duplicates excluded."""
    s = spec.spec
    _, c, d = _tables()

    def draw(salt: str = "") -> ColumnElement[int]:
        text = literal(f"{hash_id}:") + c.c.external_id
        if salt:
            text = text + literal(f":{salt}")
        return _hash(session, text)

    arms: list[tuple[Any, Any]] = []
    for arm in s.arms:
        if arm.random is not None and arm.random.share is not None:
            arms.append((_below(draw(f"arm:{arm.name}"), arm.random.share), literal(arm.name)))
        else:  # takes the rest
            arms.append((true(), literal(arm.name)))
            break
    arm_of = case(*arms, else_=null())
    variants = [v.name for v in s.variants]
    variant: Any = literal("")
    if variants:
        variant = case(
            *((draw("variant") % len(variants) == i, literal(v)) for i, v in enumerate(variants))
        )
    pilot_share = s.pilot.share if s.pilot else 0.0
    pilot = _below(draw("pilot"), pilot_share) if pilot_share > 0 else false()
    where = [c.c.internal.is_(False)]
    if s.audience.tiers:
        where.append(d.c.tier.in_(list(s.audience.tiers)))
    if s.audience.segments:
        where.append(_in_segments(session, d.c.segments, list(s.audience.segments)))
    channel = None if s.channel == "preferred" else s.channel
    channels = [channel] if channel else ["email", "sms"]
    policies = _policies(session)
    columns: list[Any] = [
        c.c.id.label("customer_id"),
        arm_of.label("arm"),
        variant.label("variant"),
        d.c.tier.label("tier"),
        d.c.segments.label("segments"),
        draw().label("draw"),
        pilot.label("pilot"),
        c.c.email,
        c.c.phone,
        (c.c.preferred_channel == "sms").label("sms_first"),
    ]
    columns += [_why_not(ch, policies, now).label(f"why_{ch}") for ch in channels]
    if s.topic:
        preference = TopicPreference.__table__  # type: ignore[attr-defined]
        off = (
            select(literal(1))
            .where(
                preference.c.customer_id == c.c.id,
                preference.c.topic == s.topic,
                preference.c.subscribed.is_(False),
            )
            .exists()
        )
        columns.append(off.label("off"))
    found = (
        select(*columns)
        .select_from(c.join(d, d.c.customer_id == c.c.id))
        .where(*where)
        # Each reason computed once per customer, not once per use below.
        .cte("found")
        .prefix_with("MATERIALIZED")
    )
    chosen, address, reason = _reach(found, channel, s.topic)
    listed = (
        select(
            found.c.customer_id,
            found.c.arm,
            found.c.variant,
            found.c.tier,
            found.c.segments,
            found.c.draw,
            found.c.pilot,
            chosen.label("channel"),
            address.label("address"),
            func.substr(reason, 1, 255).label("excluded"),
        )
        .where(found.c.arm.is_not(None))
        .cte("listed")
        .prefix_with("MATERIALIZED")
    )
    m = listed.c
    source: Any = listed
    control: Any = false()
    if s.control.share > 0:
        last = _last_held_out(listed, s.control.share)
        source = source.outerjoin(last, and_(last.c.arm == m.arm, last.c.tier == m.tier))
        control = and_(last.c.draw.is_not(None), m.draw <= last.c.draw)
    dupes = _duplicates(listed)
    source = source.outerjoin(
        dupes,
        and_(m.excluded == "", dupes.c.channel == m.channel, dupes.c.address == m.address),
    )
    duplicate = and_(dupes.c.keeper.is_not(None), dupes.c.keeper != m.customer_id)
    return select(
        literal(campaign_id).label("campaign_id"),
        m.customer_id,
        m.arm,
        case((control, literal("")), else_=m.variant).label("variant"),
        case((control, literal("control")), else_=literal("treated")).label("group"),
        m.tier,
        m.segments,
        m.draw,
        case((control, false()), else_=m.pilot).label("pilot"),
        case((duplicate, literal("")), else_=m.channel).label("channel"),
        case((duplicate, literal("")), else_=m.address).label("address"),
        case((duplicate, literal(DUPLICATE)), else_=m.excluded).label("excluded"),
    ).select_from(source)


def _last_held_out(listed: Any, share: float) -> Any:
    """The highest draw held out in each arm and tier: the ``share`` of members with the
    lowest draws, rounded up (``audience._hold_out``). Members at or below it are the
    control group. (A window over the few columns it needs, then a join: SQLite sorts
    narrow rows much faster than whole members.)"""
    m = listed.c
    stratum = {"partition_by": (m.arm, m.tier), "order_by": m.draw}
    ranked = select(
        m.arm,
        m.tier,
        m.draw,
        func.row_number().over(**stratum).label("place"),
        func.count().over(**stratum, rows=(None, None)).label("size"),  # the same sort
    ).subquery("ranked")
    r = ranked.c
    # place <= ceil(share * n) is place - 1 < share * n for whole places; share * n in
    # double precision, as Python computes it.
    return (
        select(r.arm, r.tier, func.max(r.draw).label("draw"))
        .where((r.place - 1) < cast(literal(share), Float) * r.size)
        .group_by(r.arm, r.tier)
        .cte("last_held_out")
        .prefix_with("MATERIALIZED")
    )


def _duplicates(listed: Any) -> Any:
    """Each channel and address that several members (not excluded) share, with the first
    customer by id, who keeps it; the others are excluded as duplicates
    (``audience._deduplicate``)."""
    m = listed.c
    return (
        select(m.channel, m.address, func.min(m.customer_id).label("keeper"))
        .where(m.excluded == "")
        .group_by(m.channel, m.address)
        .having(func.count() > 1)
        .cte("duplicates")
        .prefix_with("MATERIALIZED")
    )


def _reach(found: Any, channel: str | None, topic: str | None) -> tuple[Any, Any, Any]:
    """(channel, address, reason excluded) of a member from the reasons each channel cannot
    reach it: the first channel in the customer's order that can, as ``choose_channel``."""
    if channel:
        why = found.c[f"why_{channel}"]
        chosen: Any = case((why.is_(None), literal(channel)), else_=literal(""))
        reason: Any = func.coalesce(why, literal(""))
    else:
        email, sms = found.c.why_email, found.c.why_sms
        email_first = case(
            (email.is_(None), literal("email")), (sms.is_(None), literal("sms")), else_=literal("")
        )
        sms_first = case(
            (sms.is_(None), literal("sms")), (email.is_(None), literal("email")), else_=literal("")
        )
        chosen = case((found.c.sms_first.is_(True), sms_first), else_=email_first)
        reason = case(
            (or_(email.is_(None), sms.is_(None)), literal("")),
            (found.c.sms_first.is_(True), sms + literal("; ") + email),
            else_=email + literal("; ") + sms,
        )
    if topic:
        chosen = case((found.c.off.is_(True), literal("")), else_=chosen)
        reason = case((found.c.off.is_(True), literal(f"unsubscribed from {topic}")), else_=reason)
    address = case(
        (chosen == "email", func.lower(found.c.email)),
        (chosen == "sms", found.c.phone),
        else_=literal(""),
    )
    return chosen, address, reason


def _policies(session: Session) -> dict[tuple[int, str], TierPolicy | None]:
    """The tier policy of every (rule version, tier) a customer's decision names."""
    _, _, d = _tables()
    pairs = session.execute(select(d.c.rule_version_id, d.c.tier).distinct()).all()
    out: dict[tuple[int, str], TierPolicy | None] = {}
    for vid, tier in pairs:
        version = session.get(RuleVersion, vid)
        out[(vid, tier)] = rules_of(version).spec.policies.get(tier) if version else None
    return out


def _why_not(
    channel: str,
    policies: dict[tuple[int, str], TierPolicy | None],
    now: datetime,
) -> ColumnElement[Any]:
    """Why ``channel`` cannot reach a member (NULL: it can), as ``choose_channel`` says it."""
    _, c, d = _tables()
    address = c.c.email if channel == "email" else c.c.phone
    pair = tuple_(d.c.rule_version_id, d.c.tier)
    whens: list[tuple[Any, Any]] = []
    not_allowed = [k for k, p in policies.items() if p is not None and channel not in p.channels]
    if not_allowed:
        says = literal(f"{channel}: not a channel of tier ") + d.c.tier
        whens.append((pair.in_(not_allowed), says))
    consent = Consent.__table__  # type: ignore[attr-defined]
    granted = (
        select(literal(1))
        .where(
            consent.c.customer_id == c.c.id,
            consent.c.channel == channel,
            consent.c.granted.is_(True),
        )
        .exists()
    )
    whens.append((~granted, literal(f"{channel}: no consent")))
    whens.append((or_(address.is_(None), address == ""), literal(f"{channel}: no address")))
    suppression = Suppression.__table__  # type: ignore[attr-defined]
    reason = (
        select(suppression.c.reason)
        .where(suppression.c.channel == channel, suppression.c.address == address)
        .limit(1)
        .scalar_subquery()
    )
    whens.append(
        (reason.is_not(None), literal(f"{channel}: address suppressed (") + reason + literal(")"))
    )
    for (vid, tier), policy in policies.items():
        caps = policy.caps.get(channel) if policy else None  # type: ignore[call-overload]
        if caps is None:
            continue
        for window, span in CAP_WINDOWS.items():
            limit = getattr(caps, window)
            if limit is not None:
                whens.append(
                    (
                        and_(pair == (vid, tier), _recent(channel, now, span) >= limit),
                        literal(f"{channel}: contact cap of tier {tier}: {limit} per {window}"),
                    )
                )
    return case(*whens, else_=null())


def _recent(channel: str, now: datetime, span: timedelta) -> Any:
    """Messages on ``channel`` handed to a provider, or being handed over, within ``span``:
    what ``Facts`` counts against the caps."""
    _, c, _ = _tables()
    msg = Message.__table__  # type: ignore[attr-defined]
    since = now - max(CAP_WINDOWS.values())
    after = now - span
    return (
        select(func.count())
        .select_from(msg)
        .where(
            msg.c.customer_id == c.c.id,
            msg.c.channel == channel,
            msg.c.service.is_(False),
            or_(
                and_(
                    msg.c.state.in_([MessageState.sent, MessageState.delivered]),
                    msg.c.sent_at >= since,
                ),
                and_(
                    msg.c.state.in_([MessageState.claimed, MessageState.sending]),
                    msg.c.claimed_at >= since,
                ),
            ),
            or_(
                and_(msg.c.sent_at.is_not(None), msg.c.sent_at > after),
                and_(msg.c.sent_at.is_(None), msg.c.claimed_at > after),
            ),
        )
        .scalar_subquery()
    )
