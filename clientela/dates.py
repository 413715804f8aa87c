"""Whose special date it is, in their own time zone, at the greeting hour.

The daily date journeys run every hour (a Temporal Schedule). Each run stands for one UTC
hour, its *slot*: in the time zones where the slot is the greeting hour (``date_hour``,
default 09:00 local), it is the local date D, and the customers there whose birthday or
sign-up anniversary falls on D are greeted. A birthday on 29 February is greeted on 28
February in other years. Each greeting is a journey started under the id
``journey-<name>-<customer>-<year>``: once per customer, occasion and year, however often a
slot is run (twice by the schedule, by hand, or caught up after downtime).
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import func
from sqlmodel import Session, col, select

from clientela.timeutil import zone_of
from models import Customer

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


def due(session: Session, slot: datetime, hour: int, occasion: str) -> list[Occasion]:
    """Customers whose ``occasion`` is celebrated in this slot."""
    column = {
        "birthday": col(Customer.birthday),
        "signup_anniversary": col(Customer.signup_date),
    }[occasion]
    out = []
    for on, zones in local_dates(session, slot, hour).items():
        rows = session.exec(
            select(Customer.external_id, column).where(
                col(Customer.internal).is_(False),
                col(Customer.timezone).in_(zones),
                _month_day(session, column).in_(month_days(on)),  # type: ignore[attr-defined]
            )
        ).all()
        for external_id, when in rows:
            if occasion == "signup_anniversary" and when is not None and when.year >= on.year:
                continue  # signed up this year: no anniversary yet
            out.append(Occasion(external_id, occasion, on))
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
