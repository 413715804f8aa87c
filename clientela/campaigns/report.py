"""The campaign report: per arm, treated against control, with honest uplift.

JSON shape (``clientela campaign report ID --json``; documented in docs/campaigns.md): for
each arm, ``treated`` and ``control`` blocks with ``targeted``, ``excluded`` (by reason),
``sent``, ``delivered``, ``failed``, ``responded``, ``response_rate``, ``visits``,
``visit_rate``, ``conversions``, ``conversion_rate``, ``revenue``,
``revenue_per_customer``, ``cost`` and ``roi``; and ``uplift`` per measure with ``uplift_pp``
(or ``diff`` for amounts), ``uplift_rel``, ``ci95`` [low, high], ``p_value`` and the
incremental conversions or revenue, or ``insufficient`` saying why there is no number.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, col, select

from clientela.campaigns.uplift import Moments, Uplift, means, proportions
from clientela.timeutil import as_utc
from models import Campaign, CampaignMember, Direction, Interaction, Message, MessageState
from models.history import RESPONSE_KINDS

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
            "responded": self.responded,
            "response_rate": _rate(self.responded, n),
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
    }


def build(session: Session, campaign_id: str) -> dict[str, Any]:
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise UnknownCampaign(campaign_id)
    members = session.exec(
        select(CampaignMember).where(CampaignMember.campaign_id == campaign_id)
    ).all()
    responses = _responses(session, campaign)
    messages = _messages(session, campaign_id)
    groups: dict[tuple[str, str], Group] = defaultdict(Group)
    for m in members:
        g = groups[(m.arm, m.group)]
        if m.excluded:
            g.excluded[m.excluded] += 1
            continue
        g.targeted += 1
        for state, reason, channel in messages.get(m.customer_id, []):
            if state in (MessageState.sent, MessageState.delivered):
                g.sent += 1
                g.cost += campaign.cost_per_message.get(channel, 0.0)
            if state == MessageState.delivered:
                g.delivered += 1
            if state == MessageState.failed:
                g.failed += 1
                g.failures[reason.split(":")[0][:80]] += 1
        r = responses.get(m.customer_id)
        value = r["revenue"] if r else 0.0
        g.revenue.add(value)
        if value:
            g.paying += 1
        if r:
            g.responded += 1
            g.visits += int(r["visit"])
            g.conversions += int(r["conversion"])
    arms = sorted({arm for arm, group in groups if group == "treated"})
    out_arms = []
    for arm in arms:
        treated = groups[(arm, "treated")]
        control = groups.get((arm, "control")) or groups.get((SHARED, "control")) or Group()
        n1, n0 = treated.targeted, control.targeted
        out_arms.append(
            {
                "arm": arm,
                "control": "own" if (arm, "control") in groups else "shared",
                "treated": treated.as_dict(),
                "control_group": control.as_dict(),
                "uplift": {
                    "response": _uplift_rate(
                        proportions(treated.responded, n1, control.responded, n0), n1
                    ),
                    "visit": _uplift_rate(proportions(treated.visits, n1, control.visits, n0), n1),
                    "conversion": _uplift_rate(
                        proportions(treated.conversions, n1, control.conversions, n0), n1
                    ),
                    "revenue_per_customer": _uplift_amount(
                        means(treated.revenue, control.revenue, treated.paying, control.paying), n1
                    ),
                },
            }
        )
    return {
        "campaign": {
            "id": campaign.id,
            "name": campaign.name,
            "stage": campaign.stage,
            "window": [
                _iso(campaign.window_start),
                _iso(campaign.window_end),
            ],
        },
        "arms": out_arms,
    }


def _iso(value: Any) -> str | None:
    moment = as_utc(value)
    return moment.isoformat() if moment else None


def _responses(session: Session, campaign: Campaign) -> dict[int, dict[str, Any]]:
    """Per customer: responded at all, visited, converted, revenue, inside the window."""
    query = select(Interaction.customer_id, Interaction.kind, Interaction.detail).where(
        Interaction.campaign == campaign.id,
        Interaction.direction == Direction.inbound,
        col(Interaction.kind).in_(RESPONSE_KINDS),
    )
    if campaign.window_start is not None:
        query = query.where(col(Interaction.occurred_at) >= campaign.window_start)
    if campaign.window_end is not None:
        query = query.where(col(Interaction.occurred_at) <= campaign.window_end)
    out: dict[int, dict[str, Any]] = {}
    for customer_id, kind, detail in session.exec(query):
        r = out.setdefault(customer_id, {"visit": False, "conversion": False, "revenue": 0.0})
        if kind in ("visit", "click"):
            r["visit"] = True
        if kind == "conversion":
            r["conversion"] = True
            r["revenue"] += float((detail or {}).get("value") or 0)
    return out


def _messages(session: Session, campaign_id: str) -> dict[int, list[tuple[str, str, str]]]:
    out: dict[int, list[tuple[str, str, str]]] = defaultdict(list)
    for customer_id, state, reason, channel in session.exec(
        select(Message.customer_id, Message.state, Message.reason, Message.channel).where(
            Message.campaign == campaign_id
        )
    ):
        out[customer_id].append((state, reason, channel))
    return out


CSV_FIELDS = [
    "targeted", "sent", "delivered", "failed", "responded", "response_rate", "visits",
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
            writer.writerow([arm["arm"], group, *(block[f] for f in CSV_FIELDS), *extra])
    return buffer.getvalue()
