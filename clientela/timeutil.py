"""Time helpers: the database may hand back naive datetimes (SQLite); all of ours are UTC."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class QuietHours:
    """The local hours in which an SMS may go out: [start, end)."""

    start: time
    end: time | None  # None: until midnight

    @classmethod
    def parse(cls, text: str) -> QuietHours:
        try:
            start_s, end_s = (part.strip() for part in text.split("-"))
            start = time.fromisoformat(start_s)
            end = None if end_s in ("24:00", "24") else time.fromisoformat(end_s)
        except ValueError:
            raise ValueError(
                f"sms_hours {text!r} is not a range of local times such as 08:00-21:00"
            ) from None
        if end is not None and end <= start:
            raise ValueError(f"sms_hours {text!r}: the end must come after the start")
        return cls(start, end)

    def next_opening(self, now: datetime, zone: ZoneInfo) -> datetime | None:
        """None if ``now`` is within the hours, else the UTC time they next open."""
        local = now.astimezone(zone)
        t = local.time().replace(tzinfo=None)
        if self.start <= t and (self.end is None or t < self.end):
            return None
        day = local.date() if t < self.start else local.date() + timedelta(days=1)
        return datetime.combine(day, self.start, tzinfo=zone).astimezone(now.tzinfo)


@lru_cache(maxsize=1024)
def zone_of(name: str) -> ZoneInfo:
    """The customer's time zone; an unknown name counts as UTC (imports validate names)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")
