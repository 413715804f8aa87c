"""Service indicators of complaint cases: response and resolution times, breaches of the
service levels, the most frequent codes and the customers' satisfaction, overall and by the
tier each case was opened in (``clientela service report``, ``GET /service/report``).

Times are in hours. A breach is counted when the answer (or resolution) came after its due
time, or has not come and the due time has passed. Satisfaction is the customers' 1-5 score
after the resolution; "satisfied" is a 4 or a 5.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from sqlmodel import Session, col, select

from clientela.service.cases import SURVEYED, breaches, iso
from clientela.timeutil import as_utc, utcnow
from models import Complaint, Customer
from rules.service import latest_run, rules_of

NO_TIER = "(none)"
TOP_CODES = 10


def build(session: Session, *, since: datetime | None = None) -> dict[str, Any]:
    """The indicators of every case opened since ``since`` (all when None), as of now."""
    now = utcnow()
    query = select(Complaint, Customer.external_id).join(
        Customer, col(Customer.id) == col(Complaint.customer_id)
    )
    if since is not None:
        query = query.where(col(Complaint.opened_at) >= since)
    cases = list(session.exec(query.order_by(col(Complaint.id))).all())
    latest = latest_run(session)
    levels = rules_of(latest[1]).spec.tiers.levels if latest else []
    by_tier: dict[str, list[Complaint]] = defaultdict(list)
    for row, _ in cases:
        by_tier[row.tier or NO_TIER].append(row)
    order = [t for t in levels if t in by_tier] + sorted(t for t in by_tier if t not in levels)
    overdue: list[dict[str, Any]] = [
        {
            "id": row.id,
            "customer_id": external_id,
            "code": row.code,
            "tier": row.tier,
            "responsible": row.responsible,
            "breached": broken,
            "opened_at": iso(row.opened_at),
            "overdue_hours": _overdue(row, now),
            "escalated": row.escalated_at is not None,
        }
        for row, external_id in cases
        if row.resolved_at is None and (broken := breaches(row, now))
    ]
    rank = {t: i for i, t in enumerate(order)}
    overdue.sort(key=lambda c: (rank.get(c["tier"] or NO_TIER, len(rank)), -c["overdue_hours"]))
    return {
        "generated_at": now.isoformat(),
        "since": since.isoformat() if since else None,
        "overall": _indicators([row for row, _ in cases], now),
        "by_tier": [{"tier": t, **_indicators(by_tier[t], now)} for t in order],
        "codes": _codes([row for row, _ in cases]),
        "overdue": overdue,
    }


def _indicators(rows: list[Complaint], now: datetime) -> dict[str, Any]:
    response = [_hours(r.opened_at, r.responded_at) for r in rows if r.responded_at]
    resolution = [_hours(r.opened_at, r.resolved_at) for r in rows if r.resolved_at]
    broken = [breaches(r, now) for r in rows]
    scores = [r.satisfaction for r in rows if r.satisfaction is not None]
    surveyed = sum(1 for r in rows if SURVEYED in r.steps)
    with_due = sum(1 for r in rows if r.due_at is not None)
    response_breaches = sum(1 for b in broken if "response" in b)
    return {
        "opened": len(rows),
        "unresolved": sum(1 for r in rows if r.resolved_at is None),
        "responded": len(response),
        "resolved": len(resolution),
        "escalated": sum(1 for r in rows if r.escalated_at is not None),
        "response_hours": _spread(response),
        "resolution_hours": _spread(resolution),
        "response_breaches": response_breaches,
        "resolution_breaches": sum(1 for b in broken if "resolution" in b),
        "response_within_level": (round(1 - response_breaches / with_due, 4) if with_due else None),
        "satisfaction": {
            "surveyed": surveyed,
            "rated": len(scores),
            "answer_rate": round(len(scores) / surveyed, 4) if surveyed else None,
            "mean": round(statistics.fmean(scores), 2) if scores else None,
            "satisfied_share": (
                round(sum(1 for s in scores if s >= 4) / len(scores), 4) if scores else None
            ),
            "distribution": {str(n): scores.count(n) for n in range(1, 6)},
        },
    }


def _codes(rows: list[Complaint]) -> list[dict[str, Any]]:
    counts = Counter(r.code for r in rows)
    out = []
    for code, n in counts.most_common(TOP_CODES):
        mine = [r for r in rows if r.code == code]
        scores = [r.satisfaction for r in mine if r.satisfaction is not None]
        tiers = Counter(r.tier or NO_TIER for r in mine)
        out.append(
            {
                "code": code,
                "count": n,
                "share": round(n / len(rows), 4),
                "unresolved": sum(1 for r in mine if r.resolved_at is None),
                "resolution_hours": _spread(
                    [_hours(r.opened_at, r.resolved_at) for r in mine if r.resolved_at]
                )["median"],
                "satisfaction_mean": round(statistics.fmean(scores), 2) if scores else None,
                "by_tier": dict(sorted(tiers.items())),
            }
        )
    return out


def _spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "p90": None, "mean": None}
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return {
        "median": round(statistics.median(ordered), 4),
        "p90": round(p90, 4),
        "mean": round(statistics.fmean(ordered), 4),
    }


def _hours(start: datetime | None, end: datetime | None) -> float:
    a, b = as_utc(start), as_utc(end)
    assert a is not None and b is not None
    return (b - a).total_seconds() / 3600


def _overdue(row: Complaint, now: datetime) -> float:
    due = as_utc(row.resolution_due_at if row.responded_at else row.due_at) or as_utc(row.due_at)
    return round((now - due).total_seconds() / 3600, 3) if due else 0.0


# --- presentation -------------------------------------------------------------------------


def _num(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}" if isinstance(v, float) else f"{v:,}"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.1f}%"


def render_html(data: dict[str, Any]) -> str:
    env = Environment(
        loader=PackageLoader("clientela.service", "."),
        autoescape=select_autoescape(enabled_extensions=("html", "j2")),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _num
    env.filters["pct"] = _pct
    return env.get_template("report.html.j2").render(data=data)


def duration(hours: float | None) -> str:
    """Hours as a person reads them: 45s, 12m, 3.5h, 2.1d."""
    if hours is None:
        return "-"
    seconds = hours * 3600
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if hours < 48:
        return f"{hours:.1f}h"
    return f"{hours / 24:.1f}d"


def render_text(data: dict[str, Any]) -> str:
    """The report as a terminal table (under 80 columns)."""
    lines = [
        "Service report" + (f" (cases opened since {data['since'][:16]})" if data["since"] else ""),
        "",
        f"{'tier':<6}{'opened':>7}{'open':>5}{'answer p50/p90':>16}{'resolved p50/p90':>18}"
        f"{'breach':>8}{'esc':>4}{'score':>6}{'4-5':>7}",
    ]
    for label, ind in [("all", data["overall"])] + [(t["tier"], t) for t in data["by_tier"]]:
        s = ind["satisfaction"]
        answer, resolved = ind["response_hours"], ind["resolution_hours"]
        lines.append(
            f"{label:<6}{ind['opened']:>7}{ind['unresolved']:>5}"
            f"{duration(answer['median']) + ' / ' + duration(answer['p90']):>16}"
            f"{duration(resolved['median']) + ' / ' + duration(resolved['p90']):>18}"
            f"{str(ind['response_breaches']) + '/' + str(ind['resolution_breaches']):>8}"
            f"{ind['escalated']:>4}{_num(s['mean'], 1):>6}{_pct(s['satisfied_share']):>7}"
        )
    lines.append("breach: response/resolution breaches; esc: escalated; score: mean 1-5")
    if data["codes"]:
        lines += ["", "most frequent codes:"]
        lines += [
            f"  {c['code']:<16}{c['count']:>6} {_pct(c['share']):>6}  unresolved "
            f"{c['unresolved']}, resolved in {duration(c['resolution_hours'])}, "
            f"score {_num(c['satisfaction_mean'], 1)}"
            for c in data["codes"]
        ]
    if data["overdue"]:
        lines += ["", "breaching now (most important customers first):"]
        lines += [
            f"  #{c['id']:<6} {c['customer_id']:<16} tier {c['tier'] or '-':<3} {c['code']:<16}"
            f" {'+'.join(c['breached'])}, {duration(c['overdue_hours'])} over"
            f"{' (escalated)' if c['escalated'] else ''}"
            for c in data["overdue"]
        ]
    return "\n".join(lines)
