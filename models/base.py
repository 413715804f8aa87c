"""Column helpers shared by every table."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
