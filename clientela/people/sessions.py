"""Console sessions: sign-in, the session a cookie stands for, its expiry, sign-out, and the
limit on failed sign-ins.

The cookie carries 256 random bits; the database keeps their SHA-256, so a copy of the
database signs no one in. A session ends when unused for ``session_idle`` or
``session_max`` after sign-in, whichever comes first, and at once when its user is
disabled. Failed sign-ins are audit events (``session.sign_in_failed``), which is also what
the limit counts: ``sign_in_attempts`` per user, four times that per address, per 15 minutes.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlmodel import Session, col, func, select

from clientela.people import audit
from clientela.people.users import authenticate
from clientela.timeutil import utcnow
from models.people import AuditEvent, ConsoleSession, User

WINDOW = timedelta(minutes=15)
FAILED = "session.sign_in_failed"


@dataclass(frozen=True)
class SignedIn:
    """Who a valid session belongs to, and the token its forms carry."""

    username: str
    name: str
    roles: tuple[str, ...]
    csrf: str


class TooManyAttempts(Exception):
    def __init__(self, retry_after: timedelta) -> None:
        self.retry_after = retry_after
        minutes = max(1, round(retry_after.total_seconds() / 60))
        super().__init__(f"too many failed sign-ins: try again in {minutes} min")


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _wait(session: Session, *, username: str, client: str, limit: int) -> timedelta | None:
    """How long until another attempt is allowed, if the limit is reached."""
    since = utcnow() - WINDOW
    failures = select(func.count(), func.min(AuditEvent.at)).where(
        AuditEvent.action == FAILED, col(AuditEvent.at) >= since
    )
    for query, allowed in (
        (failures.where(AuditEvent.subject == f"user:{username}"), limit),
        (failures.where(AuditEvent.actor == f"client:{client}"), 4 * limit),
    ):
        count, first = session.exec(query).one()
        if count >= allowed and first is not None:
            return _utc(first) + WINDOW - utcnow()
    return None


def sign_in(
    session: Session,
    *,
    username: str,
    password: str,
    client: str,
    limit: int,
) -> tuple[str, SignedIn] | None:
    """A new session for these credentials: (the cookie's token, who), or None when they
    are wrong (recorded). TooManyAttempts once the limit is reached, right or wrong."""
    username = username.strip().lower()[:64]
    client = client[:64]
    wait = _wait(session, username=username, client=client, limit=limit)
    if wait is not None:
        raise TooManyAttempts(wait)
    user = authenticate(session, username, password)
    if user is None:
        audit.record(session, actor=f"client:{client}", action=FAILED, subject=f"user:{username}")
        return None
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    assert user.id is not None
    session.add(
        ConsoleSession(token_hash=_digest(token), user_id=user.id, csrf=csrf, client=client)
    )
    audit.record(
        session,
        actor=f"user:{user.username}",
        action="session.signed_in",
        subject=f"user:{user.username}",
        detail={"client": client},
    )
    return token, SignedIn(user.username, user.name, tuple(user.roles), csrf)


def current(
    session: Session, token: str, *, idle: timedelta, longest: timedelta
) -> SignedIn | None:
    """The session a cookie stands for, if it is still valid (and it is marked as used)."""
    if not token or len(token) > 128:
        return None
    row = session.exec(
        select(ConsoleSession).where(ConsoleSession.token_hash == _digest(token))
    ).first()
    if row is None or row.ended_at is not None:
        return None
    now = utcnow()
    if now - _utc(row.seen_at) > idle or now - _utc(row.created_at) > longest:
        row.ended_at = now
        session.add(row)
        return None
    user = session.get(User, row.user_id)
    if user is None or not user.active:
        return None
    if now - _utc(row.seen_at) > timedelta(minutes=1):  # one write a minute, not a request
        row.seen_at = now
        session.add(row)
    return SignedIn(user.username, user.name, tuple(user.roles), row.csrf)


def sign_out(session: Session, token: str) -> None:
    row = session.exec(
        select(ConsoleSession).where(ConsoleSession.token_hash == _digest(token))
    ).first()
    if row is not None and row.ended_at is None:
        row.ended_at = utcnow()
        session.add(row)
