"""The campaign report: per arm, treated against control, with honest uplift.

JSON shape (``clientela campaign report ID --json``; documented in docs/campaigns.md): for
each arm, ``treated`` and ``control`` blocks with ``targeted``, ``excluded`` (by reason),
``sent``, ``delivered``, ``failed``, ``responded`` and ``response_rate`` (visited or
converted: outcomes a control group can show too; opens, clicks and replies are
``engagement``), ``visits``,
``visit_rate``, ``conversions``, ``conversion_rate``, ``revenue``,
``revenue_per_customer``, ``cost`` and ``roi``; and ``uplift`` per measure with ``uplift_pp``
(or ``diff`` for amounts), ``uplift_rel``, ``ci95`` [low, high], ``p_value`` and the
incremental conversions or revenue, or ``insufficient`` saying why there is no number.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, and_, cast
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from clientela.campaigns.uplift import Z95, Moments, Uplift, means, proportions
from clientela.messaging.bounces import describe
from clientela.timeutil import as_utc
from models import Campaign, CampaignMember, Direction, Interaction, Message, MessageState
from models.history import RESPONSE_KINDS

#: History kinds of machines' opens and clicks (counted apart, never a response).
MACHINE = ("machine_open", "machine_click")
#: Outcomes a control group can show as well: the only ones uplift is measured on. Opens,
#: clicks and replies need the message, so they are engagement: the treated's alone.
MEASURABLE = ("visit", "conversion")
FLAGS = ("responded", "visit", "conversion", "open", "click", "reply", *MACHINE)

SHARED = ""  # the arm of a control group shared by every arm


class UnknownCampaign(LookupError):
    def __init__(self, campaign_id: str) -> None:
        super().__init__(f"no campaign {campaign_id!r}; `clientela campaign list` shows them")


@dataclass
class Group:
    targeted: int = 0
    excluded: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    responded: int = 0
    opened: int = 0  # people (machines apart): engagement, which only the contacted can show
    clicked: int = 0
    replied: int = 0
    machine_opened: int = 0  # opened only by privacy proxies or scanners
    machine_clicked: int = 0
    bounced: int = 0
    bounces: Counter[str] = field(default_factory=Counter)
    visits: int = 0
    conversions: int = 0
    revenue: Moments = field(default_factory=Moments)
    paying: int = 0
    cost: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        n = self.targeted
        revenue = round(self.revenue.total, 2)
        return {
            "targeted": n,
            "excluded": dict(self.excluded),
            "sent": self.sent,
            "delivered": self.delivered,
            "failed": self.failed,
            "failure_reasons": dict(self.failures.most_common(10)),
            "bounced": self.bounced,
            "bounce_reasons": dict(self.bounces.most_common(10)),
            "responded": self.responded,
            "response_rate": _rate(self.responded, n),
            "engagement": {
                "opened": self.opened,
                "open_rate": _rate(self.opened, self.sent),
                "clicked": self.clicked,
                "click_rate": _rate(self.clicked, self.sent),
                "replied": self.replied,
                "machine_opened": self.machine_opened,
                "machine_clicked": self.machine_clicked,
            },
            "visits": self.visits,
            "visit_rate": _rate(self.visits, n),
            "conversions": self.conversions,
            "conversion_rate": _rate(self.conversions, n),
            "revenue": revenue,
            "revenue_per_customer": round(self.revenue.mean, 4) if n else None,
            "cost": round(self.cost, 2),
            "roi": round((revenue - self.cost) / self.cost, 4) if self.cost else None,
        }


def _rate(x: int, n: int) -> float | None:
    return round(x / n, 6) if n else None


def _uplift_rate(u: Uplift, treated_n: int) -> dict[str, Any]:
    if u.insufficient:
        return {"insufficient": u.insufficient}
    assert u.diff is not None and u.ci95 is not None
    return {
        "uplift_pp": round(u.diff * 100, 4),
        "uplift_rel": None if u.relative is None else round(u.relative, 4),
        "ci95": [round(u.ci95[0] * 100, 4), round(u.ci95[1] * 100, 4)],
        "p_value": u.p_value,
        "incremental": round(u.diff * treated_n, 1),
        "method": u.method,
    }


def _uplift_amount(u: Uplift, treated_n: int) -> dict[str, Any]:
    if u.insufficient:
        return {"insufficient": u.insufficient}
    assert u.diff is not None and u.ci95 is not None
    return {
        "diff": round(u.diff, 4),
        "uplift_rel": None if u.relative is None else round(u.relative, 4),
        "ci95": [round(u.ci95[0], 4), round(u.ci95[1], 4)],
        "p_value": u.p_value,
        "incremental_revenue": round(u.diff * treated_n, 2),
        "method": u.method,
    }


def compare_variants(groups: dict[str, Group], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The A/B variants of an arm against each other on conversion: each pair's difference
    with its interval and p-value, every p-value of the arm's variants (against each other
    and against the shared control) adjusted together by Holm's method (statsmodels), and a
    winner only when it beats every other variant after the adjustment."""
    from statsmodels.stats.multitest import multipletests

    names = sorted(groups)
    if len(names) < 2:
        return None
    pairs = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            ga, gb = groups[a], groups[b]
            u = proportions(ga.conversions, ga.targeted, gb.conversions, gb.targeted)
            pairs.append({"a": a, "b": b, **_uplift_rate(u, ga.targeted)})
    tests = [(pair, pair.get("p_value")) for pair in pairs] + [
        (row["uplift"]["conversion"], row["uplift"]["conversion"].get("p_value")) for row in rows
    ]
    known = [(where, p) for where, p in tests if p is not None]
    if known:
        adjusted = multipletests([p for _, p in known], method="holm")[1]
        for (where, _), q in zip(known, adjusted, strict=True):
            where["p_adjusted"] = float(q)
    winner = None
    for name in names:
        beats = [
            pair for pair in pairs
            if name in (pair["a"], pair["b"]) and pair.get("p_adjusted", 1.0) < 0.05
            and (pair["uplift_pp"] > 0) == (pair["a"] == name)
        ]  # fmt: skip
        if len(beats) == len(names) - 1:
            winner = name
    if winner:
        said = f"Variant {winner} converts better than every other (Holm-adjusted p < 0.05)."
    else:
        said = "No winner yet: no variant beats every other once the p-values are adjusted."
    return {
        "measure": "conversion",
        "adjustment": "Holm (every comparison of the arm's variants, with each other and "
        "against the control)",
        "pairs": pairs,
        "winner": winner,
        "said": said,
    }


def compare_arms(
    arms: dict[str, tuple[Group, Group, bool]], outcome: str = "conversions"
) -> dict[str, Any] | None:
    """Each pair of arms by the difference of their uplifts on ``outcome`` (conversions or
    visits: a model's choice against marketing's against chance, as the seed asks): the
    difference with a 95% Wald interval and a z-test, the arms' groups independent (when
    they share the control its rate cancels out, and so does its variance); p-values
    adjusted by Holm's method."""
    from statsmodels.stats.multitest import multipletests

    def rate(g: Group) -> tuple[float, float]:
        p = getattr(g, outcome) / g.targeted if g.targeted else 0.0
        return p, p * (1 - p) / g.targeted if g.targeted else 0.0

    names = sorted(arms)
    if len(names) < 2:
        return None
    pairs: list[dict[str, Any]] = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            (ta, ca, own_a), (tb, cb, own_b) = arms[a], arms[b]
            if not (ta.targeted and tb.targeted and ca.targeted and cb.targeted):
                pairs.append({"a": a, "b": b, "insufficient": "an arm or its control is empty"})
                continue
            (pta, vta), (pca, vca), (ptb, vtb), (pcb, vcb) = map(rate, (ta, ca, tb, cb))
            shared = not own_a and not own_b
            diff = (pta - pca) - (ptb - pcb)
            variance = vta + vtb + (0.0 if shared else vca + vcb)
            se = math.sqrt(variance)
            if se == 0:  # every group all or nothing (nobody converted yet): no spread at all
                pairs.append({"a": a, "b": b, "insufficient": f"no variation in {outcome} yet"})
                continue
            pairs.append(
                {
                    "a": a,
                    "b": b,
                    "diff_pp": round(diff * 100, 4),
                    "ci95": [round((diff - Z95 * se) * 100, 4), round((diff + Z95 * se) * 100, 4)],
                    "p_value": math.erfc(abs(diff / se) / math.sqrt(2)) if se else 1.0,
                }
            )
    known = [pair for pair in pairs if "p_value" in pair]
    if known:
        adjusted = multipletests([pair["p_value"] for pair in known], method="holm")[1]
        for pair, q in zip(known, adjusted, strict=True):
            pair["p_adjusted"] = float(q)
    return {
        "measure": f"{outcome.removesuffix('s')} uplift",
        "adjustment": "Holm",
        "pairs": pairs,
    }


#: A split this unlikely under the spec's shares means the assignment went wrong.
SRM_ALARM = 0.001


def _checks(spec: dict[str, Any], groups: dict[tuple[str, str], Group]) -> dict[str, Any]:
    """Whether the experiment can be trusted: the observed split of the lead list against
    the spec's control share (a chi-squared goodness-of-fit test; an alarm below p = 0.001,
    the usual threshold for a sample-ratio mismatch), and that no held-out customer was
    contacted."""
    from scipy.stats import chisquare

    def listed(group: str) -> int:
        return sum(g.targeted + sum(g.excluded.values()) for (_, x), g in groups.items()
                   if x == group)  # fmt: skip

    treated, control = listed("treated"), listed("control")
    contacted = sum(g.sent for (_, x), g in groups.items() if x == "control")
    out: dict[str, Any] = {"control_contacted": contacted, "sample_ratio": None}
    share = _control_share(spec)
    if share is not None and 0 < share < 1 and treated + control > 0:
        total = treated + control
        test = chisquare([treated, control], f_exp=[total * (1 - share), total * share])
        p = float(test.pvalue)
        out["sample_ratio"] = {
            "expected_control_share": share,
            "observed_control_share": round(control / total, 6),
            "p_value": p,
            "alarm": p < SRM_ALARM,
        }
    out["alarm"] = bool(contacted) or bool((out["sample_ratio"] or {}).get("alarm"))
    return out


def _control_share(spec: dict[str, Any]) -> float | None:
    control = spec.get("control") or {}
    try:
        return float(control.get("share", 0.1)) if spec else None
    except (AttributeError, TypeError, ValueError):
        return None


def kept_spec(campaign: Campaign) -> dict[str, Any]:
    """The spec the campaign was created from, as data ({} for one registered from
    elsewhere, or a source that no longer reads)."""
    import yaml

    source = (campaign.spec or {}).get("source")
    if not source:
        return {}
    try:
        spec = yaml.safe_load(source)
    except yaml.YAMLError:
        return {}
    return spec if isinstance(spec, dict) else {}


def selection(
    session: Session, spec: dict[str, Any], arm: str, model: dict[str, Any] | None
) -> dict[str, Any]:
    """How an arm chose its customers, in words, and for a model's arm the model version
    that chose (recorded when the list was built) with its held-out figures and Qini curve."""
    from clientela.predictive.training import describe
    from models import PredictiveModel

    found = next(
        (a for a in spec.get("arms") or [] if isinstance(a, dict) and a.get("name") == arm), {}
    )

    def size(pick: dict[str, Any]) -> str:
        if pick.get("count") is not None:
            return f"{pick['count']:,} customers"
        return f"{float(pick.get('share') or 0):.0%}"

    if model is not None or isinstance(found.get("model"), dict):
        pick = found.get("model") or {}
        out: dict[str, Any] = {
            "by": "model",
            "said": f"the top {size(pick)} by model {pick.get('name', '?')}",
        }
        if model is not None:
            row = session.exec(
                select(PredictiveModel).where(
                    PredictiveModel.name == model["name"],
                    PredictiveModel.version == model["version"],
                )
            ).first()
            out["said"] += f" (version {model['version']})"
            if row is not None:
                about = describe(row)
                out["model"] = {
                    k: about[k]
                    for k in (
                        "name",
                        "version",
                        "kind",
                        "method",
                        "outcome",
                        "trained_at",
                        "metrics",
                        "curve",
                        "rows",
                    )
                }
        return out
    if isinstance(found.get("random"), dict):
        return {"by": "random", "said": f"{size(found['random'])} at random (stable hash)"}
    if found.get("when"):
        return {"by": "rule", "said": f"rule: {found['when']}"}
    if found or spec.get("arms"):
        return {"by": "rest", "said": "everyone the arms above left"}
    return {"by": "audience", "said": "the whole audience"}


def incremental(revenue: dict[str, Any], treated: Group) -> dict[str, Any]:
    """Revenue the campaign added (the revenue per customer uplift times the treated) and
    the return on what it cost: (incremental revenue - cost) / cost, each with its 95%
    interval. Unlike ``roi``, it leaves out the sales the control shows would have happened
    anyway."""
    cost = round(treated.cost, 2)
    if "insufficient" in revenue:
        return {"cost": cost, "insufficient": revenue["insufficient"]}
    n = treated.targeted
    low, high = revenue["ci95"]
    added = revenue["diff"] * n
    out: dict[str, Any] = {
        "revenue": round(added, 2),
        "revenue_ci95": [round(low * n, 2), round(high * n, 2)],
        "cost": cost,
        "roi": None,
        "roi_ci95": None,
    }
    if treated.cost:
        out["roi"] = round((added - treated.cost) / treated.cost, 4)
        out["roi_ci95"] = [
            round((low * n - treated.cost) / treated.cost, 4),
            round((high * n - treated.cost) / treated.cost, 4),
        ]
    return out


#: The target KPI's metric and the uplift measure that answers it.
KPI_MEASURES = {
    "response_rate": ("response", "pp", "response rate"),
    "conversion_rate": ("conversion", "pp", "conversion rate"),
    "revenue_per_customer": ("revenue_per_customer", "", "revenue per customer"),
}
#: Stages after which no response counts any more: the report is final.
FINAL_STAGES = ("reporting", "done", "cancelled")


def target_kpi(spec: dict[str, Any]) -> dict[str, Any] | None:
    """The spec's ``target_kpi`` ({metric, uplift})."""
    kpi = spec.get("target_kpi")
    if not isinstance(kpi, dict) or kpi.get("metric") not in KPI_MEASURES:
        return None
    try:
        return {"metric": kpi["metric"], "uplift": float(kpi["uplift"])}
    except (KeyError, TypeError, ValueError):
        return None


def verdict(
    kpi: dict[str, Any] | None, uplift: dict[str, Any], final: bool
) -> dict[str, Any] | None:
    """Whether the arm met its target: ``met`` when the whole 95% interval is at or above the
    target, ``not met`` when it is all below, else ``cannot tell yet``; with the figure and
    its interval in words."""
    if kpi is None:
        return None
    key, unit, label = KPI_MEASURES[kpi["metric"]]
    target = kpi["uplift"]
    measured = uplift[key]
    out: dict[str, Any] = {"metric": kpi["metric"], "target": target, "unit": unit}
    shown = f"{target:+.2f}{' ' + unit if unit else ''}"
    if "insufficient" in measured:
        out["verdict"] = "cannot tell yet"
        out["said"] = f"{label.capitalize()}: no figure yet ({measured['insufficient']})."
        return out
    figure = measured["uplift_pp"] if unit == "pp" else measured["diff"]
    low, high = measured["ci95"]
    out.update(figure=figure, ci95=[low, high])
    if low >= target:
        out["verdict"] = "met"
    elif high < target:
        out["verdict"] = "not met"
    else:
        out["verdict"] = "cannot tell yet"
    said = (
        f"{label.capitalize()} uplift {figure:+.2f}{' ' + unit if unit else ''} "
        f"(95% interval {low:+.2f} to {high:+.2f}) against a target of {shown}: "
    )
    said += {
        "met": "met, the whole interval is at or above it.",
        "not met": "not met, the whole interval is below it.",
        "cannot tell yet": "cannot tell yet, the interval straddles it"
        + (" (more responses may settle it before the window closes)." if not final else "."),
    }[out["verdict"]]
    out["said"] = said
    return out


DIMENSIONS = ("tier", "segment", "channel")


def _uplifts(treated: Group, control: Group) -> dict[str, Any]:
    n1, n0 = treated.targeted, control.targeted
    return {
        "response": _uplift_rate(proportions(treated.responded, n1, control.responded, n0), n1),
        "visit": _uplift_rate(proportions(treated.visits, n1, control.visits, n0), n1),
        "conversion": _uplift_rate(
            proportions(treated.conversions, n1, control.conversions, n0), n1
        ),
        "revenue_per_customer": _uplift_amount(
            means(treated.revenue, control.revenue, treated.paying, control.paying), n1
        ),
    }


def build(session: Session, campaign_id: str) -> dict[str, Any]:
    """The whole report; members are read in a stream, so its memory is per response."""
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise UnknownCampaign(campaign_id)
    responses = _responses(session, campaign)
    groups: dict[tuple[str, str], Group] = defaultdict(Group)
    variants: dict[tuple[str, str], Group] = defaultdict(Group)
    breakdown: dict[tuple[str, str, str], Group] = defaultdict(Group)
    member_groups: dict[int, str] = {}  # for the timeline, read once here
    rows = session.execute(
        sa_select(
            col(CampaignMember.customer_id),
            col(CampaignMember.arm),
            col(CampaignMember.group),
            col(CampaignMember.variant),
            col(CampaignMember.tier),
            # As text: most members have no segment, and decoding "[]" for each of 20,000
            # members was a third of a report's time (bench/console.py).
            cast(col(CampaignMember.segments), String),
            col(CampaignMember.channel),
            col(CampaignMember.excluded),
            col(Message.state),
            col(Message.reason),
            col(Message.channel),
        )
        .select_from(CampaignMember)
        .outerjoin(
            Message,
            and_(
                col(Message.campaign) == campaign_id,
                col(Message.customer_id) == col(CampaignMember.customer_id),
                col(Message.key).like(f"campaign:{campaign_id}:%:message"),
            ),
        )
        .where(col(CampaignMember.campaign_id) == campaign_id)
        .execution_options(yield_per=5000)
    )
    for (
        customer_id, arm, group, variant, tier, segments, channel, excluded, state, reason,
        sent_on,
    ) in rows:  # fmt: skip
        member_groups[customer_id] = group
        message = (state, reason or "", sent_on or "") if state else None
        targets = [groups[(arm, group)]]
        if group == "treated" and variant:
            targets.append(variants[(arm, variant)])
        targets.append(breakdown[("tier", tier or "-", group)])
        targets.append(breakdown[("channel", channel or "-", group)])
        if segments and segments != "[]":
            targets.extend(breakdown[("segment", seg, group)] for seg in json.loads(segments))
        response = responses.get(customer_id)
        for g in targets:
            _count(g, campaign, excluded, message, response)
    arms = sorted({arm for arm, group in groups if group == "treated"})
    spec = kept_spec(campaign)
    kpi = target_kpi(spec)
    final = campaign.stage in FINAL_STAGES
    chosen = (campaign.spec or {}).get("models") or {}
    out_arms = []
    for arm in arms:
        treated = groups[(arm, "treated")]
        control = groups.get((arm, "control")) or groups.get((SHARED, "control")) or Group()
        uplift = _uplifts(treated, control)
        mine = {v: g for (a, v), g in sorted(variants.items()) if a == arm}
        variant_rows = [
            {"variant": v, "treated": g.as_dict(), "uplift": _uplifts(g, control)}
            for v, g in mine.items()
        ]
        out_arms.append(
            {
                "arm": arm,
                "control": "own" if (arm, "control") in groups else "shared",
                "selection": selection(session, spec, arm, chosen.get(arm)),
                "verdict": verdict(kpi, uplift, final),
                "incremental": incremental(uplift["revenue_per_customer"], treated),
                "treated": treated.as_dict(),
                "control_group": control.as_dict(),
                "uplift": uplift,
                "variants": variant_rows,
                "variant_comparison": compare_variants(mine, variant_rows),
            }
        )
    checks = _checks(spec, groups)
    arm_groups = {
        arm: (
            groups[(arm, "treated")],
            groups.get((arm, "control")) or groups.get((SHARED, "control")) or Group(),
            (arm, "control") in groups,
        )
        for arm in arms
    }
    out_breakdown: dict[str, list[dict[str, Any]]] = {d: [] for d in DIMENSIONS}
    for dimension, value in sorted({(d, v) for d, v, _ in breakdown}):
        treated = breakdown.get((dimension, value, "treated")) or Group()
        control = breakdown.get((dimension, value, "control")) or Group()
        out_breakdown[dimension].append(
            {
                "value": value,
                "treated": treated.as_dict(),
                "control_group": control.as_dict(),
                "uplift": _uplifts(treated, control),
            }
        )
    return {
        "campaign": {
            "id": campaign.id,
            "name": campaign.name,
            "objective": campaign.objective,
            "stage": campaign.stage,
            "window": [
                _iso(campaign.window_start),
                _iso(campaign.window_end),
            ],
            "target_kpi": kpi,
            # Intervals are fixed-horizon: valid for the figures at the window's close. Read
            # before it they are interim, and a verdict may still change.
            "interim": not final,
        },
        "checks": checks,
        "arms": out_arms,
        "arm_comparison": compare_arms(arm_groups),
        "breakdown": out_breakdown,
        "timeline": _timeline(session, campaign, member_groups),
    }


def _count(
    g: Group,
    campaign: Campaign,
    excluded: str,
    message: tuple[str, str, str] | None,
    response: dict[str, Any] | None,
) -> None:
    """One member's part in a group's figures."""
    if excluded:
        g.excluded[excluded] += 1
        return
    g.targeted += 1
    if message is not None:
        state, reason, channel = message
        if state in (MessageState.sent, MessageState.delivered):
            g.sent += 1
            g.cost += campaign.cost_per_message.get(channel, 0.0)
        if state == MessageState.delivered:
            g.delivered += 1
        if state == MessageState.bounced:
            g.sent += 1  # it went out, and came back
            g.cost += campaign.cost_per_message.get(channel, 0.0)
            g.bounced += 1
            status = reason.split(": ", 1)[-1].split(" ", 1)[0]
            g.bounces[describe(status) if status[:1] in "45" else "no reason given"] += 1
        if state == MessageState.failed:
            g.failed += 1
            g.failures[reason.split(":")[0][:80]] += 1
    value = response["revenue"] if response else 0.0
    g.revenue.add(value)
    if value:
        g.paying += 1
    if response:
        g.responded += int(response["responded"])
        g.visits += int(response["visit"])
        g.conversions += int(response["conversion"])
        g.opened += int(response["open"])
        g.clicked += int(response["click"])
        g.replied += int(response["reply"])
        g.machine_opened += int(response["machine_open"] and not response["open"])
        g.machine_clicked += int(response["machine_click"] and not response["click"])


BUCKETS = [
    ("1m", timedelta(minutes=1)),
    ("10m", timedelta(minutes=10)),
    ("1h", timedelta(hours=1)),
    ("6h", timedelta(hours=6)),
    ("1d", timedelta(days=1)),
    ("7d", timedelta(days=7)),
]


def _timeline(session: Session, campaign: Campaign, groups: dict[int, str]) -> dict[str, Any]:
    """Responses (visits and conversions) and conversions per time bucket and group
    (``groups``: each member's),
    inside the window; the bucket is the smallest of a minute, ten minutes, an hour, six
    hours, a day or a week that cuts the responses' span into at most 60."""
    seen: list[tuple[datetime, str, str]] = []
    for customer_id, kind, occurred_at in session.exec(
        _window(
            select(Interaction.customer_id, Interaction.kind, Interaction.occurred_at).where(
                Interaction.campaign == campaign.id,
                Interaction.direction == Direction.inbound,
                col(Interaction.kind).in_(MEASURABLE),
            ),
            campaign,
        )
    ):
        group = groups.get(customer_id)
        at = as_utc(occurred_at)
        if group is not None and at is not None:
            seen.append((at, group, "conversions" if kind == "conversion" else "responses"))
    if not seen:
        return {"bucket": None, "points": []}
    first, last = min(t for t, _, _ in seen), max(t for t, _, _ in seen)
    name, size = next(((n, d) for n, d in BUCKETS if (last - first) / d < 60), BUCKETS[-1])
    origin = first.replace(second=0, microsecond=0)
    if size >= timedelta(days=1):
        origin = origin.replace(hour=0, minute=0)
    counts: Counter[tuple[int, str, str]] = Counter(
        (int((t - origin) / size), group, what) for t, group, what in seen
    )
    buckets = range(max(i for i, _, _ in counts) + 1)
    return {
        "bucket": name,
        "points": [
            {
                "at": (origin + i * size).isoformat(),
                "group": group,
                "responses": counts[(i, group, "responses")],
                "conversions": counts[(i, group, "conversions")],
            }
            for i in buckets
            for group in ("treated", "control")
        ],
    }


def _window(query: Any, campaign: Campaign) -> Any:
    if campaign.window_start is not None:
        query = query.where(col(Interaction.occurred_at) >= campaign.window_start)
    if campaign.window_end is not None:
        query = query.where(col(Interaction.occurred_at) <= campaign.window_end)
    return query


def _iso(value: Any) -> str | None:
    moment = as_utc(value)
    return moment.isoformat() if moment else None


def _responses(session: Session, campaign: Campaign) -> dict[int, dict[str, Any]]:
    """Per customer: responded at all, visited, converted, revenue, opened and clicked (by
    a person, or only by machines), inside the window."""
    query = _window(
        select(Interaction.customer_id, Interaction.kind, Interaction.detail).where(
            Interaction.campaign == campaign.id,
            Interaction.direction == Direction.inbound,
            col(Interaction.kind).in_(RESPONSE_KINDS + MACHINE),
        ),
        campaign,
    )
    out: dict[int, dict[str, Any]] = {}
    for customer_id, kind, detail in session.exec(query):
        r = out.setdefault(customer_id, dict.fromkeys(FLAGS, False) | {"revenue": 0.0})
        if kind in FLAGS:
            r[kind] = True
        if kind in MEASURABLE:  # what a held-out customer can do as well
            r["responded"] = True
        if kind == "conversion":
            r["conversion"] = True
            r["revenue"] += float((detail or {}).get("value") or 0)
    return out


CSV_FIELDS = [
    "targeted", "sent", "delivered", "bounced", "failed", "opened", "clicked", "machine_opened",
    "machine_clicked", "responded", "response_rate", "visits",
    "visit_rate", "conversions", "conversion_rate", "revenue", "revenue_per_customer", "cost",
    "roi",
]  # fmt: skip


def to_csv(data: dict[str, Any]) -> str:
    """One row per arm and group, with the uplift of the treated rows."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        ["arm", "group", *CSV_FIELDS, "conversion_uplift_pp", "ci95_low", "ci95_high", "p_value"]
    )
    for arm in data["arms"]:
        conversion = arm["uplift"]["conversion"]
        for group, block in (("treated", arm["treated"]), ("control", arm["control_group"])):
            extra = (
                [
                    conversion.get("uplift_pp"),
                    *(conversion.get("ci95") or [None, None]),
                    conversion.get("p_value"),
                ]
                if group == "treated"
                else [None, None, None, None]
            )
            flat = {**block, **block.get("engagement", {})}
            writer.writerow([arm["arm"], group, *(flat[f] for f in CSV_FIELDS), *extra])
    return buffer.getvalue()
