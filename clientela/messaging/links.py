"""Links in messages: unsubscribe (RFC 8058 one-click), satisfaction surveys, report pages.

Unsubscribe and preference links are encrypted and authenticated (AES-SIV, as tracking links
are), so a link says nothing about whom it is for; survey and report links are signed, and a
report link expires. Links of earlier versions, still in people's mailboxes, keep working:
Fernet-encrypted ones and, for unsubscribing, signed ones.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from clientela.keys import installation_secret
from clientela.settings import Settings


class BadToken(ValueError):
    pass


def secret_key(settings: Settings) -> bytes:
    """CLIENTELA_SECRET_KEY, or one generated once and kept in the home folder."""
    if settings.secret_key:
        return settings.secret_key.encode()
    home = settings.home
    if home.is_absolute():
        return _home_secret(home)
    return installation_secret(home / "secret.key").encode()


@lru_cache(maxsize=32)
def _home_secret(home: Path) -> bytes:
    """Every signed link of every message asks for the secret: the home folder's is looked up
    once (building the file's path each time was 4% of a sending worker's CPU)."""
    return installation_secret(home / "secret.key").encode()


def _sign(key: bytes, payload: str) -> str:
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()[:24]


def _pack(settings: Settings, *fields: str) -> str:
    """The fields and their signature, URL-safe."""
    payload = "\x1f".join(fields)
    signed = f"{payload}\x1f{_sign(secret_key(settings), payload)}"
    return base64.urlsafe_b64encode(signed.encode()).decode().rstrip("=")


def _unpack(settings: Settings, token: str, count: int) -> list[str] | None:
    """The ``count`` fields of a genuine token; None for anything else."""
    if len(token) > _MAX_TOKEN:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    *fields, signature = raw.split("\x1f")
    if len(fields) != count:
        return None
    expected = _sign(secret_key(settings), "\x1f".join(fields))
    return fields if hmac.compare_digest(signature, expected) else None


@lru_cache(maxsize=8)
def _fernet(key: bytes) -> Fernet:
    """What links were encrypted with before AES-SIV: read, no longer written."""
    derived = hmac.new(key, b"clientela unsubscribe links", hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(derived))


@lru_cache(maxsize=8)
def _siv(key: bytes) -> AESSIV:
    return AESSIV(hmac.new(key, b"clientela recipient links", hashlib.sha512).digest())


#: A link's purpose is bound into its token: a preferences token is no unsubscribe token.
_UNSUBSCRIBE, _PREFERENCES = [b"unsubscribe"], [b"preferences"]
_MAX_TOKEN = 2048


def _seal(settings: Settings, purpose: list[bytes], *fields: str) -> str:
    """AES-SIV (a sixth of Fernet's cost, and half its length: every message carries two of
    these links, measured with ``bench.campaign``). The same fields give the same token,
    which tells nothing more than that two links are the same link."""
    sealed = _siv(secret_key(settings)).encrypt("\x1f".join(fields).encode(), purpose)
    return base64.urlsafe_b64encode(sealed).decode().rstrip("=")


def _open(settings: Settings, purpose: list[bytes], token: str) -> list[str] | None:
    """The fields of a genuine token of ``purpose``, sealed now or by Fernet before."""
    if len(token) > _MAX_TOKEN:
        return None
    padded = token + "=" * (-len(token) % 4)
    key = secret_key(settings)
    try:
        raw = _siv(key).decrypt(base64.urlsafe_b64decode(padded), purpose)
    except (InvalidTag, ValueError):
        try:
            raw = _fernet(key).decrypt(padded)
        except (InvalidToken, ValueError):
            return None
        if purpose is _PREFERENCES:  # Fernet's preference tokens said so in their payload
            kind, _, rest = raw.partition(b"\x1f")
            if kind != b"preferences":
                return None
            raw = rest
    try:
        return raw.decode().split("\x1f")
    except UnicodeDecodeError:
        return None


def token_for(settings: Settings, customer_id: str, channel: str, campaign: str | None) -> str:
    """An opaque token: who it is for can be read only with the installation's key."""
    return _seal(settings, _UNSUBSCRIBE, customer_id, channel, campaign or "")


def read_token(settings: Settings, token: str) -> tuple[str, str, str | None]:
    """(customer id, channel, campaign) of a genuine token; BadToken otherwise. Tokens of
    earlier versions, still in people's mailboxes, are read as well."""
    fields = _open(settings, _UNSUBSCRIBE, token)
    if fields is None:
        fields = _unpack(settings, token, 3)
    if fields is None or len(fields) != 3 or fields[1] not in ("email", "sms"):
        raise BadToken("this unsubscribe link is not valid")
    customer_id, channel, campaign = fields
    return customer_id, channel, campaign or None


def url_for(settings: Settings, customer_id: str, channel: str, campaign: str | None) -> str:
    return f"{settings.recipient_base_url}/u/{token_for(settings, customer_id, channel, campaign)}"


# The preference centre's links: encrypted like unsubscribe links, for a customer.


def preferences_token(settings: Settings, customer_id: str) -> str:
    return _seal(settings, _PREFERENCES, customer_id)


def read_preferences_token(settings: Settings, token: str) -> str:
    """The customer id of a genuine preference-centre token; BadToken otherwise."""
    fields = _open(settings, _PREFERENCES, token)
    if fields is None or len(fields) != 1 or not fields[0]:
        raise BadToken("this preferences link is not valid")
    return fields[0]


def preferences_url(settings: Settings, customer_id: str) -> str:
    return f"{settings.recipient_base_url}/p/{preferences_token(settings, customer_id)}"


# Satisfaction survey links: the same signature over a payload of their own.


def survey_token(settings: Settings, complaint_id: int, uid: str) -> str:
    return _pack(settings, "survey", str(complaint_id), uid)


def read_survey_token(settings: Settings, token: str) -> int:
    """The complaint id of a genuine survey token; BadToken otherwise."""
    fields = _unpack(settings, token, 3)
    if fields is None or fields[0] != "survey" or not fields[1].isdigit():
        raise BadToken("this survey link is not valid")
    return int(fields[1])


def survey_url(settings: Settings, complaint_id: int, uid: str) -> str:
    return f"{settings.recipient_base_url}/s/{survey_token(settings, complaint_id, uid)}"


# Report links for a campaign's stakeholders: signed, and valid until a time.


def report_token(settings: Settings, campaign_id: str, valid_until: float | None = None) -> str:
    until = valid_until or time.time() + settings.report_link_ttl.total_seconds()
    return _pack(settings, "report", campaign_id, str(int(until)))


def read_report_token(settings: Settings, token: str, now: float | None = None) -> str:
    """The campaign of a genuine report token that has not expired; BadToken otherwise."""
    fields = _unpack(settings, token, 3)
    if fields is None or fields[0] != "report" or not fields[2].isdigit():
        raise BadToken("this report link is not valid")
    if int(fields[2]) < (now or time.time()):
        raise BadToken("this report link has expired; ask for a new one")
    return fields[1]


def report_url(settings: Settings, campaign_id: str) -> str:
    return f"{settings.recipient_base_url}/r/{report_token(settings, campaign_id)}"
