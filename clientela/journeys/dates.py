"""Whose special date it is, in their own time zone, at the greeting hour.

The daily date journeys run every hour (a Temporal Schedule). Each run stands for one UTC
hour, its *slot*: in the time zones where the slot is the greeting hour (``date_hour``,
default 09:00 local), it is the local date D, and the customers there whose birthday or
sign-up anniversary (or a date attribute: ``attr.<name>``) falls on D are greeted; and the
customers who reach N days without a purchase that day enter the win-back journeys
(``no_purchase_for``). A birthday on 29 February is greeted on 28
February in other years. Each greeting is a journey started under the id
``journey-<name>-<customer>-<year>``: once per customer, occasion and year, however often a
slot is run (twice by the schedule, by hand, or caught up after downtime).
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from clientela.timeutil import zone_of
from models import Customer, Transaction

OCCASIONS = ("birthday", "signup_anniversary")


@dataclass(frozen=True)
class Occasion:
    customer_id: str
    occasion: str  # birthday, signup_anniversary
    on: date  # the local date it is celebrated

    @property
    def key(self) -> str:
        return str(self.on.year)


def local_dates(session: Session, slot: datetime, hour: int) -> dict[date, list[str]]:
    """The time zones (of customers) where ``slot`` is ``hour`` local, by their local date."""
    zones = session.exec(select(Customer.timezone).distinct()).all()
    found: dict[date, list[str]] = defaultdict(list)
    for name in zones:
        local = slot.astimezone(zone_of(name))
        if local.hour == hour:
            found[local.date()].append(name)
    return dict(found)


def month_days(on: date) -> list[str]:
    """The MM-DD dates celebrated on ``on``: 28 February also takes 29 February's in a
    year without one."""
    days = [on.strftime("%m-%d")]
    if on.month == 2 and on.day == 28 and not calendar.isleap(on.year):
        days.append("02-29")
    return days


def _month_day(session: Session, column: object) -> object:
    if session.get_bind().dialect.name == "sqlite":
        return func.strftime("%m-%d", column)
    return func.to_char(column, "MM-DD")


def _date_column(session: Session, occasion: str) -> tuple[Any, Any]:
    """(the column, its MM-DD) of an occasion: a date column, or an attribute holding
    ``YYYY-MM-DD`` or ``MM-DD`` (its last five characters)."""
    if occasion.startswith("attr."):
        value = col(Customer.attributes)[occasion[5:]].as_string()
        return value, func.substr(value, func.length(value) - 4, 5)
    column = {
        "birthday": col(Customer.birthday),
        "signup_anniversary": col(Customer.signup_date),
    }[occasion]
    return column, _month_day(session, column)


def due(session: Session, slot: datetime, hour: int, occasion: str) -> list[Occasion]:
    """Customers whose ``occasion`` is celebrated in this slot."""
    column, month_day = _date_column(session, occasion)
    out = []
    for on, zones in local_dates(session, slot, hour).items():
        rows = session.exec(
            select(Customer.external_id, column).where(
                col(Customer.internal).is_(False),
                col(Customer.timezone).in_(zones),
                month_day.in_(month_days(on)),
            )
        ).all()
        for external_id, when in rows:
            if occasion == "signup_anniversary" and when is not None and when.year >= on.year:
                continue  # signed up this year: no anniversary yet
            out.append(Occasion(external_id, occasion, on))
    return out


@dataclass(frozen=True)
class Lapse:
    """A customer whose last purchase (or sign-up, without one) was ``days`` ago today."""

    customer_id: str
    since: date  # the local date of the last purchase, or the sign-up date
    on: date  # today, where they live

    @property
    def key(self) -> str:
        return self.since.isoformat()  # once per spell without a purchase


def lapsed(session: Session, slot: datetime, hour: int, days: int) -> list[Lapse]:
    """Customers who, at this slot's greeting hour, reach ``days`` days without a purchase:
    their last purchase fell on the local date ``days`` before, or, with no purchase ever,
    they signed up that day. Each spell is found on one day only, so a customer re-enters only
    after buying again and lapsing again."""
    out = []
    for on, zones in local_dates(session, slot, hour).items():
        then = on - timedelta(days=days)
        for zone_name in zones:
            zone = zone_of(zone_name)
            start = datetime.combine(then, time(0), tzinfo=zone).astimezone(UTC)
            end = datetime.combine(then + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
            last = func.max(col(Transaction.occurred_at))
            bought = session.exec(
                select(Customer.external_id)
                .join(Transaction, col(Transaction.customer_id) == col(Customer.id))
                .where(col(Customer.internal).is_(False), Customer.timezone == zone_name)
                .group_by(col(Customer.id), col(Customer.external_id))
                .having(last >= start, last < end)
            ).all()
            never = session.exec(
                select(Customer.external_id).where(
                    col(Customer.internal).is_(False),
                    Customer.timezone == zone_name,
                    Customer.signup_date == then,
                    ~select(Transaction.id)
                    .where(col(Transaction.customer_id) == col(Customer.id))
                    .exists(),
                )
            ).all()
            out += [Lapse(external_id, then, on) for external_id in [*bought, *never]]
    return out


def slots_between(start: datetime, end: datetime) -> list[datetime]:
    """Every whole UTC hour in [start, end)."""
    first = start.replace(minute=0, second=0, microsecond=0)
    if first < start:
        first += timedelta(hours=1)
    out = []
    while first < end:
        out.append(first)
        first += timedelta(hours=1)
    return out
