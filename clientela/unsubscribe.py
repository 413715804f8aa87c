"""Signed links in messages: unsubscribe (RFC 8058 one-click) and satisfaction surveys."""

from __future__ import annotations

import base64
import hashlib
import hmac

from clientela.keys import installation_secret
from clientela.settings import Settings


class BadToken(ValueError):
    pass


def secret_key(settings: Settings) -> bytes:
    """CLIENTELA_SECRET_KEY, or one generated once and kept in the home folder."""
    if settings.secret_key:
        return settings.secret_key.encode()
    return installation_secret(settings.home / "secret.key").encode()


def _sign(key: bytes, payload: str) -> str:
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()[:24]


def _pack(settings: Settings, *fields: str) -> str:
    """The fields and their signature, URL-safe."""
    payload = "\x1f".join(fields)
    signed = f"{payload}\x1f{_sign(secret_key(settings), payload)}"
    return base64.urlsafe_b64encode(signed.encode()).decode().rstrip("=")


def _unpack(settings: Settings, token: str, count: int) -> list[str] | None:
    """The ``count`` fields of a genuine token; None for anything else."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    *fields, signature = raw.split("\x1f")
    if len(fields) != count:
        return None
    expected = _sign(secret_key(settings), "\x1f".join(fields))
    return fields if hmac.compare_digest(signature, expected) else None


def token_for(settings: Settings, customer_id: str, channel: str, campaign: str | None) -> str:
    return _pack(settings, customer_id, channel, campaign or "")


def read_token(settings: Settings, token: str) -> tuple[str, str, str | None]:
    """(customer id, channel, campaign) of a genuine token; BadToken otherwise."""
    fields = _unpack(settings, token, 3)
    if fields is None or fields[1] not in ("email", "sms"):  # (a survey token is not one)
        raise BadToken("this unsubscribe link is not valid")
    customer_id, channel, campaign = fields
    return customer_id, channel, campaign or None


def url_for(settings: Settings, customer_id: str, channel: str, campaign: str | None) -> str:
    return f"{settings.recipient_base_url}/u/{token_for(settings, customer_id, channel, campaign)}"


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
