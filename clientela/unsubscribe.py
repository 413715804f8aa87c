"""Signed links in messages: unsubscribe (RFC 8058 one-click) and satisfaction surveys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from clientela.settings import Settings


class BadToken(ValueError):
    pass


_keys: dict[str, bytes] = {}


def secret_key(settings: Settings) -> bytes:
    """CLIENTELA_SECRET_KEY, or one generated once and kept in the home folder."""
    if settings.secret_key:
        return settings.secret_key.encode()
    known = _keys.get(str(settings.home))
    if known is not None:
        return known
    path = settings.home / "secret.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    _keys[str(settings.home)] = key = path.read_text().strip().encode()
    return key


def _sign(key: bytes, payload: str) -> str:
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()[:24]


def token_for(settings: Settings, customer_id: str, channel: str, campaign: str | None) -> str:
    payload = f"{customer_id}\x1f{channel}\x1f{campaign or ''}"
    signed = f"{payload}\x1f{_sign(secret_key(settings), payload)}"
    return base64.urlsafe_b64encode(signed.encode()).decode().rstrip("=")


def read_token(settings: Settings, token: str) -> tuple[str, str, str | None]:
    """(customer id, channel, campaign) of a genuine token; BadToken otherwise."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        customer_id, channel, campaign, signature = raw.split("\x1f")
    except (ValueError, UnicodeDecodeError):
        raise BadToken("this unsubscribe link is not valid") from None
    expected = _sign(secret_key(settings), f"{customer_id}\x1f{channel}\x1f{campaign}")
    if not hmac.compare_digest(signature, expected):
        raise BadToken("this unsubscribe link is not valid")
    return customer_id, channel, campaign or None


def url_for(settings: Settings, customer_id: str, channel: str, campaign: str | None) -> str:
    return f"{settings.recipient_base_url}/u/{token_for(settings, customer_id, channel, campaign)}"


# Satisfaction survey links: the same signature over a payload of their own.


def survey_token(settings: Settings, complaint_id: int, uid: str) -> str:
    payload = f"survey\x1f{complaint_id}\x1f{uid}"
    signed = f"{payload}\x1f{_sign(secret_key(settings), payload)}"
    return base64.urlsafe_b64encode(signed.encode()).decode().rstrip("=")


def read_survey_token(settings: Settings, token: str) -> int:
    """The complaint id of a genuine survey token; BadToken otherwise."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        kind, complaint_id, uid, signature = raw.split("\x1f")
        expected = _sign(secret_key(settings), f"{kind}\x1f{complaint_id}\x1f{uid}")
        if kind != "survey" or not hmac.compare_digest(signature, expected):
            raise ValueError
        return int(complaint_id)
    except (ValueError, UnicodeDecodeError):
        raise BadToken("this survey link is not valid") from None


def survey_url(settings: Settings, complaint_id: int, uid: str) -> str:
    return f"{settings.recipient_base_url}/s/{survey_token(settings, complaint_id, uid)}"
