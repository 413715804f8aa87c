"""Click and open tracking: links rewritten at send time, and who (or what) followed them.

**Tokens.** A tracked link is ``<public url>/c/<token>`` and the open pixel
``<public url>/o/<token>``. The token is the message's ledger key and the link's address,
encrypted and authenticated with AES-SIV under a key derived from the installation's secret:
opaque (it names no customer, address or campaign in clear), deterministic (the same
message's same link has one token), and impossible to alter without the key. A link whose
token does not open goes to a page that says the link is not valid, never elsewhere: the
redirect's destination is only ever an address that was in a message we sent (no open
redirect). Unsubscribe and preference links, ``mailto:`` and ``tel:`` links and anything
but ``http(s)`` are left as they are; so is a link marked ``data-track="off"``.

**People and machines.** Mail security gateways follow every link of a message to check it,
mailbox providers fetch images, and Apple Mail Privacy Protection fetches every image of
every message at delivery, whether or not anyone reads it. Such hits are counted apart
(``machine_click``, ``machine_open`` in the history, with the rule that caught them) and
never count as a response. The rules, in order:

- ``HEAD`` requests (link checkers);
- a request marked as a prefetch (``Purpose``/``Sec-Purpose``/``X-Moz: prefetch``);
- no ``User-Agent``, or one of known scanners, bots and HTTP libraries (``SCANNERS``);
- opens through Apple's proxy: the user agent is exactly ``Mozilla/5.0``, or the request
  comes from Apple's network 17.0.0.0/8 (the address is looked at, never stored);
- a hit within ``tracking_scanner_seconds`` (10 s) of the send: faster than people read.

Gmail's image proxy (``GoogleImageProxy``) fetches when the message is opened, so its opens
count as a person's.

**Once per person.** A person's first click on each link of a message, and their first open
of it, are recorded as responses (``click``, ``open``) on the message's campaign or journey,
exactly as a posted event would be: the customer is decided again (responsiveness, preferred
channel) and their journeys are told. Later hits on the same link redirect and record
nothing more. No IP address is stored; the history keeps the link and, for machines, why.
Hits older than ``tracking_retention`` are deleted by the API's sweep.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import ipaddress
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from clientela.messaging.links import BadToken, secret_key
from clientela.settings import Settings

#: What a tracking token looks like in a path (base64url, no padding).
TOKEN_PATTERN = r"^[A-Za-z0-9_-]{24,2800}$"
#: Longer addresses are left untracked (a token carries the address, encrypted).
MAX_URL = 2000

#: User agents of mail security scanners, crawlers and HTTP libraries (lowercase parts).
SCANNERS = (
    "bot",
    "crawler",
    "spider",
    "scanner",
    "preview",
    "proofpoint",
    "mimecast",
    "barracuda",
    "safelinks",
    "symantec",
    "messagelabs",
    "trendmicro",
    "fireeye",
    "forcepoint",
    "ironport",
    "sophos",
    "zscaler",
    "python-requests",
    "python-httpx",
    "aiohttp",
    "go-http-client",
    "curl/",
    "wget/",
    "java/",
    "okhttp",
    "libwww",
    "headlesschrome",
)
APPLE_NETWORK = ipaddress.ip_network("17.0.0.0/8")

CLICK, OPEN = b"click", b"open"


@lru_cache(maxsize=8)
def _cipher(key: bytes) -> AESSIV:
    return AESSIV(hmac.new(key, b"clientela tracking links", hashlib.sha512).digest())


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def click_token(settings: Settings, key: str, url: str) -> str:
    payload = f"{key}\x1f{url}".encode()
    return _encode(_cipher(secret_key(settings)).encrypt(payload, [CLICK]))


def open_token(settings: Settings, key: str) -> str:
    return _encode(_cipher(secret_key(settings)).encrypt(key.encode(), [OPEN]))


def _open(settings: Settings, token: str, purpose: bytes) -> str:
    if not re.fullmatch(TOKEN_PATTERN, token):
        raise BadToken("this link is not valid")
    try:
        return _cipher(secret_key(settings)).decrypt(_decode(token), [purpose]).decode()
    except (InvalidTag, ValueError, UnicodeDecodeError):
        raise BadToken("this link is not valid") from None


def read_click(settings: Settings, token: str) -> tuple[str, str]:
    """(message key, address) of a genuine click token; BadToken otherwise."""
    key, sep, url = _open(settings, token, CLICK).partition("\x1f")
    if not sep or not trackable(url):
        raise BadToken("this link is not valid")
    return key, url


def read_open(settings: Settings, token: str) -> str:
    """The message key of a genuine open token; BadToken otherwise."""
    return _open(settings, token, OPEN)


def trackable(url: str) -> bool:
    """An absolute http(s) address of reasonable length, with nothing that could end a
    header (the redirect writes it in ``Location``)."""
    return (
        url.startswith(("http://", "https://"))
        and len(url) <= MAX_URL
        and _UNSAFE.search(url) is None
    )


#: Control characters, space and DEL: none may be in an address that goes in a header.
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")


# -- rewriting a message's links ------------------------------------------------------------

_ANCHOR = re.compile(r"<a\b[^>]*>", re.IGNORECASE)
_HREF = re.compile(r"""(\bhref\s*=\s*)(["'])([^"']*)\2""", re.IGNORECASE)
_NO_TRACK = re.compile(r"""\bdata-track\s*=\s*["']?off\b""", re.IGNORECASE)
_TEXT_URL = re.compile(r"https?://[^\s<>\"'()\[\]]+")
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


@lru_cache(maxsize=8)
def _own_prefixes(base: str) -> tuple[str, ...]:
    return tuple(f"{base}/{p}/" for p in "upsr")


@dataclass
class Rewriter:
    """Rewrites one message's links (and adds its pixel); ``kept`` are never rewritten."""

    settings: Settings
    key: str
    kept: set[str] = field(default_factory=set)

    def _own(self, url: str) -> bool:
        """A link of our own that must work as it is: unsubscribe, preferences, survey,
        report."""
        return url in self.kept or url.startswith(_own_prefixes(self.settings.recipient_base_url))

    def link(self, url: str) -> str:
        if not trackable(url) or self._own(url):
            return url
        return f"{self.settings.recipient_base_url}/c/{click_token(self.settings, self.key, url)}"

    def html(self, text: str, *, clicks: bool = True, opens: bool = True) -> str:
        def anchor(match: re.Match[str]) -> str:
            tag = match.group(0)
            if _NO_TRACK.search(tag):
                return tag

            def href(m: re.Match[str]) -> str:
                url = html.unescape(m.group(3)).strip()
                tracked = self.link(url)
                if tracked == url:
                    return m.group(0)
                return f"{m.group(1)}{m.group(2)}{html.escape(tracked)}{m.group(2)}"

            return _HREF.sub(href, tag, count=1)

        out = _ANCHOR.sub(anchor, text) if clicks else text
        if opens:
            pixel = (
                f'<img src="{self.settings.recipient_base_url}/o/'
                f'{open_token(self.settings, self.key)}" width="1" height="1" alt="" '
                'style="display:block;width:1px;height:1px;border:0">'
            )
            ends = list(_BODY_END.finditer(out))
            at = ends[-1].start() if ends else len(out)
            out = f"{out[:at]}{pixel}{out[at:]}"
        return out

    def text(self, text: str) -> str:
        def url(match: re.Match[str]) -> str:
            found = match.group(0)
            trimmed = found.rstrip(".,;:!?")  # the end of a sentence, not of the address
            return self.link(trimmed) + found[len(trimmed) :]

        return _TEXT_URL.sub(url, text)


# -- people and machines --------------------------------------------------------------------


def machine(
    settings: Settings,
    *,
    kind: str,
    method: str,
    user_agent: str,
    client: str | None,
    purpose: str,
    sent_at: datetime | None,
    now: datetime,
) -> str | None:
    """Why a hit is a machine's (the rule's name), or None for a person's."""
    if method == "HEAD":
        return "HEAD request"
    if "prefetch" in purpose.lower():
        return "prefetch"
    agent = user_agent.strip()
    if not agent:
        return "no user agent"
    if kind == "open" and (agent == "Mozilla/5.0" or _apple(client)):
        return "Apple Mail Privacy Protection"
    lowered = agent.lower()
    if "googleimageproxy" not in lowered and any(s in lowered for s in SCANNERS):
        return "scanner user agent"
    window = settings.tracking_scanner_seconds
    if sent_at is not None and window and (now - sent_at).total_seconds() < window:
        return f"within {window:g} s of the send"
    return None


def _apple(client: str | None) -> bool:
    try:
        return client is not None and ipaddress.ip_address(client) in APPLE_NETWORK
    except ValueError:
        return False


#: One lock per stripe of message keys: a person's double click records one click.
_STRIPES = [threading.Lock() for _ in range(64)]


def stripe(key: str) -> threading.Lock:
    return _STRIPES[int(hashlib.blake2b(key.encode(), digest_size=2).hexdigest(), 16) % 64]
