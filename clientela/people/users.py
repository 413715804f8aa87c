"""Users, roles, passwords and personal API tokens.

Passwords are hashed with argon2id (``argon2-cffi``'s defaults, rehashed when they change);
API tokens are 256 random bits, shown once and kept as their SHA-256 (a token is never
guessable, so a slow hash adds nothing but time to every request).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Iterable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlmodel import Session, col, select

from clientela.people import audit
from clientela.timeutil import utcnow
from models.people import ROLES, ApiToken, User

USERNAME = re.compile(r"[a-z][a-z0-9._-]{1,63}")
#: Every token starts so, which makes one found in a log or a repository recognisable.
TOKEN_PREFIX = "clt_"
MIN_PASSWORD = 12

_hasher = PasswordHasher()


class PeopleError(ValueError):
    """A change that cannot be made; the message says why and what to do."""


class UnknownUser(PeopleError):
    pass


def _roles(roles: Iterable[str]) -> list[str]:
    wanted = sorted(set(roles))
    wrong = [r for r in wanted if r not in ROLES]
    if wrong:
        raise PeopleError(f"no role {', '.join(wrong)}; roles are {', '.join(ROLES)}")
    return wanted


def _password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise PeopleError(f"a password has at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


def get_user(session: Session, username: str) -> User:
    user = session.exec(select(User).where(User.username == username)).first()
    if user is None:
        raise UnknownUser(f"no user {username!r}; `clientela users list` shows them")
    return user


def add_user(
    session: Session,
    *,
    actor: str,
    username: str,
    roles: Iterable[str],
    password: str,
    name: str = "",
    email: str = "",
) -> User:
    if not USERNAME.fullmatch(username):
        raise PeopleError(
            f"{username!r}: a username is 2 to 64 of a-z, 0-9, '.', '_' and '-', "
            "starting with a letter"
        )
    if session.exec(select(User).where(User.username == username)).first() is not None:
        raise PeopleError(f"user {username!r} exists already")
    user = User(
        username=username,
        name=name,
        email=email,
        roles=_roles(roles),
        password_hash=_password(password),
    )
    session.add(user)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="user.added",
        subject=f"user:{username}",
        detail={"roles": user.roles, "name": name, "email": email},
    )
    return user


def set_password(session: Session, *, actor: str, username: str, password: str) -> None:
    user = get_user(session, username)
    user.password_hash = _password(password)
    session.add(user)
    audit.record(session, actor=actor, action="user.password_set", subject=f"user:{username}")


def set_roles(session: Session, *, actor: str, username: str, roles: Iterable[str]) -> User:
    user = get_user(session, username)
    before, user.roles = user.roles, _roles(roles)
    session.add(user)
    audit.record(
        session,
        actor=actor,
        action="user.roles_changed",
        subject=f"user:{username}",
        detail={"from": before, "to": user.roles},
    )
    return user


def disable(session: Session, *, actor: str, username: str) -> User:
    """A disabled user can neither sign in nor use their tokens; their history stays."""
    user = get_user(session, username)
    user.active = False
    session.add(user)
    audit.record(session, actor=actor, action="user.disabled", subject=f"user:{username}")
    return user


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The active user with this password, else None (the same answer for either mistake)."""
    user = session.exec(select(User).where(User.username == username)).first()
    if user is None or not user.active or not user.password_hash:
        _hasher.hash(password)  # the same work either way: no timing tells who exists
        return None
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
        session.add(user)
    return user


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(session: Session, *, actor: str, username: str, name: str) -> tuple[ApiToken, str]:
    """A new token for the user: (its record, the token itself, to be shown once)."""
    user = get_user(session, username)
    if not user.active:
        raise PeopleError(f"user {username!r} is disabled")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    assert user.id is not None
    row = ApiToken(user_id=user.id, name=name, token_hash=_digest(token))
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="token.issued",
        subject=f"user:{username}",
        detail={"token": row.id, "name": name},
    )
    return row, token


def revoke_token(session: Session, *, actor: str, token_id: int) -> ApiToken:
    row = session.get(ApiToken, token_id)
    if row is None:
        raise PeopleError(f"no token {token_id}; `clientela users tokens USERNAME` lists them")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
        owner = session.get(User, row.user_id)
        audit.record(
            session,
            actor=actor,
            action="token.revoked",
            subject=f"user:{owner.username if owner else row.user_id}",
            detail={"token": token_id},
        )
    return row


def token_record(session: Session, token: str) -> ApiToken | None:
    """The record of a token, whatever its state."""
    return session.exec(select(ApiToken).where(ApiToken.token_hash == _digest(token))).first()


def user_for_token(session: Session, token: str) -> User | None:
    """The active user a token belongs to, if it is one of ours and not revoked."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
        return None
    row = session.exec(select(ApiToken).where(ApiToken.token_hash == _digest(token))).first()
    if row is None or row.revoked_at is not None:
        return None
    user = session.get(User, row.user_id)
    if user is None or not user.active:
        return None
    row.last_used_at = utcnow()
    session.add(row)
    return user


def tokens_of(session: Session, username: str) -> list[ApiToken]:
    user = get_user(session, username)
    return list(
        session.exec(select(ApiToken).where(ApiToken.user_id == user.id).order_by(col(ApiToken.id)))
    )


def all_users(session: Session) -> list[User]:
    return list(session.exec(select(User).order_by(col(User.username))))
