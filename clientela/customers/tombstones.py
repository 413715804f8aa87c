"""Tombstones: an erased customer's addresses, kept only as salted hashes.

When a customer is erased, each of their addresses becomes a tombstone: an HMAC-SHA256 of
the channel and the address under a random salt made once per database. A later import or
update that gives the same address consent does not get it: the consent is recorded as
refused, with why, until the person consents afresh by their own act (a new sign-up, START
by SMS, the preference centre), which lifts the tombstone. Nothing else about them is kept.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from models import HashSalt, Tombstone

#: Consent sources that are the person's own act: they lift a tombstone.
FRESH = ("signup", "preference centre", "keyword")
REFUSED = "refused: the address was erased earlier and needs fresh consent"

_salts: dict[str, bytes] = {}


def _salt(session: Session) -> bytes:
    url = str(session.get_bind().engine.url)
    if url in _salts:
        return _salts[url]
    row = session.get(HashSalt, "tombstone")
    if row is None:
        try:
            with session.begin_nested():
                row = HashSalt(purpose="tombstone", value=secrets.token_hex(32))
                session.add(row)
        except IntegrityError:  # made by another process meanwhile
            row = session.get(HashSalt, "tombstone")
            assert row is not None
    _salts[url] = bytes.fromhex(row.value)
    return _salts[url]


def _normal(channel: str, address: str) -> str:
    return address.strip().lower() if channel == "email" else address.strip()


def digest(session: Session, channel: str, address: str) -> str:
    message = f"{channel}:{_normal(channel, address)}".encode()
    return hmac.new(_salt(session), message, hashlib.sha256).hexdigest()


def bury(session: Session, channel: str, address: str, reason: str) -> None:
    found = digest(session, channel, address)
    if session.exec(select(Tombstone.id).where(Tombstone.digest == found)).first() is None:
        session.add(Tombstone(channel=channel, digest=found, reason=reason[:255]))


def buried(session: Session, pairs: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which (channel, address) pairs are tombstones."""
    if session.exec(select(Tombstone.id).limit(1)).first() is None:
        return set()  # the usual case: nothing was ever erased
    by_digest = {digest(session, ch, a): (ch, a) for ch, a in pairs if a}
    if not by_digest:
        return set()
    found = session.exec(
        select(Tombstone.digest).where(col(Tombstone.digest).in_(list(by_digest)))
    ).all()
    return {by_digest[d] for d in found}


def fresh(source: str) -> bool:
    return source.startswith(FRESH)


def lift(session: Session, channel: str, address: str) -> None:
    session.execute(
        delete(Tombstone).where(col(Tombstone.digest) == digest(session, channel, address))
    )
