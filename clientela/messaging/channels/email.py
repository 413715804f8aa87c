"""Email over SMTP with aiosmtplib, one connection reused for a whole batch."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass
from email import policy
from email.header import Header
from email.parser import BytesParser
from email.utils import formataddr, formatdate, parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any

import aiosmtplib
from aiosmtplib import (
    SMTPException,
    SMTPRecipientRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPStatus,
    SMTPTimeoutError,
)

from clientela.messaging.channels import InDoubt, Permanent, SendAccepted, Transient
from clientela.messaging.templating import RenderedEmail
from clientela.settings import Settings


@lru_cache(maxsize=64)
def _sender_domain(sender: str) -> str:
    return parseaddr(sender)[1].rpartition("@")[2] or "clientela.local"


def message_id_for(key: str, sender: str) -> str:
    """A Message-ID derived from the idempotency key: the same message has the same id."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{_sender_domain(sender)}>"


@dataclass(frozen=True)
class OutgoingEmail:
    """A message ready for SMTP: envelope and the RFC 5322 bytes."""

    sender: str  # envelope sender (bare address)
    recipient: str
    message_id: str
    data: bytes

    def header(self, name: str) -> str:
        """A header's value as written (for tests and logs)."""
        parsed = BytesParser(policy=policy.default).parsebytes(self.data, headersonly=True)
        return str(parsed.get(name, ""))


class BadAddress(ValueError):
    """An address this builder will not put in a message (the message fails, with why)."""


#: Every control character, CR and LF included: none may reach a header as it is.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
#: What a bare address, as customers' addresses are stored, consists of.
_BARE = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+")


def _header_value(value: str) -> str:
    """A header value that cannot end its header: control characters (CR and LF among them)
    become a space; ASCII stays as it is, anything else becomes RFC 2047 encoded words,
    folded with CRLF and a space as RFC 5322 allows."""
    value = _CONTROLS.sub(" ", value)
    if value.isascii():
        return value
    return Header(value, "utf-8").encode(linesep="\r\n")


def _address(address: str) -> str:
    if not _BARE.fullmatch(address):
        raise BadAddress(
            f"{address!r} is not one plain ASCII address (internationalised addresses need "
            "SMTPUTF8, which this sender does not use)"
        )
    return address


@lru_cache(maxsize=64)
def _mailbox(value: str) -> tuple[str, str]:
    """(header form, bare address) of ``Name <address>`` or a bare address."""
    name, address = parseaddr(_CONTROLS.sub(" ", value))
    name = name.strip()
    _address(address)
    header = formataddr((name, address)) if name.isascii() else formataddr((name, address), "utf-8")
    return _CONTROLS.sub(" ", header), address


def _recipient(value: str) -> tuple[str, str]:
    if _BARE.fullmatch(value):
        return value, value  # a bare address, as customers' addresses are stored
    return _mailbox(value)


def _body(text: str) -> str:
    return base64.encodebytes(text.encode("utf-8")).decode("ascii").replace("\n", "\r\n")


def _header_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9-]{1,76}", name):
        raise ValueError(f"{name!r} is not a header name")
    return name


def build_email(
    *,
    key: str,
    sender: str,
    to: str,
    content: RenderedEmail,
    headers: dict[str, str] | None = None,
    return_path: str | None = None,
) -> OutgoingEmail:
    """A multipart/alternative message (text and HTML, UTF-8, base64), built directly.

    The standard library's ``EmailMessage`` takes about 2 ms a message to parse and refold
    its own headers; a campaign sends hundreds a second, so the few headers we write are
    encoded here (RFC 2047 for non-ASCII) and the parts base64-encoded, in about 0.1 ms.
    """
    message_id = message_id_for(key, sender)
    boundary = f"=_{uuid.uuid4().hex}"
    from_header, from_address = _mailbox(sender)
    to_header, to_address = _recipient(to)
    lines = [
        f"From: {from_header}",
        f"To: {to_header}",
        f"Subject: {_header_value(content.subject)}",
        f"Date: {formatdate(localtime=False)}",
        f"Message-ID: {message_id}",
        f"X-Clientela-Key: {_header_value(key)}",
        *(
            f"{_header_name(name)}: {_header_value(value)}"
            for name, value in (headers or {}).items()
        ),
        "MIME-Version: 1.0",
        f'Content-Type: multipart/alternative; boundary="{boundary}"',
        "",
        f"--{boundary}",
        'Content-Type: text/plain; charset="utf-8"',
        "Content-Transfer-Encoding: base64",
        "",
        _body(content.text),
        f"--{boundary}",
        'Content-Type: text/html; charset="utf-8"',
        "Content-Transfer-Encoding: base64",
        "",
        _body(content.html),
        f"--{boundary}--",
        "",
    ]
    return OutgoingEmail(
        sender=_address(return_path) if return_path else from_address,
        recipient=to_address,
        message_id=message_id,
        data="\r\n".join(lines).encode("ascii"),
    )


async def _envelope(smtp: aiosmtplib.SMTP, sender: str, recipient: str) -> None:
    """MAIL FROM and RCPT TO, answered as ``SMTP.mail`` and ``SMTP.rcpt`` answer them.

    Written by hand for bare addresses, which is what ``build_email`` puts on an envelope:
    aiosmtplib parses each address again with ``email.utils.parseaddr``, which was 5% of a
    sending worker's CPU (``bench.campaign``). A bare address (``_BARE``: no space, quote or
    angle bracket) cannot carry another parameter or command, so it goes as it is. Anything
    else, and a connection that has not greeted the server yet, takes the library's way."""
    if smtp.is_ehlo_or_helo_needed or not (_BARE.fullmatch(sender) and _BARE.fullmatch(recipient)):
        await smtp.mail(sender)
        await smtp.rcpt(recipient)
        return
    response = await smtp.execute_command(b"MAIL", b"FROM:<" + sender.encode("ascii") + b">")
    if response.code != SMTPStatus.completed:
        raise SMTPSenderRefused(response.code, response.message, sender)
    response = await smtp.execute_command(b"RCPT", b"TO:<" + recipient.encode("ascii") + b">")
    if response.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
        raise SMTPRecipientRefused(response.code, response.message, recipient)


def _classify(exc: SMTPResponseException, stage: str) -> Transient | Permanent:
    reason = f"SMTP {exc.code} at {stage}: {exc.message}".strip()
    if 400 <= exc.code < 500:
        return Transient(reason)
    return Permanent(reason)


class EmailTransport:
    """Sends over one SMTP connection; reconnects after a drop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sender = settings.mail_from
        self._smtp: aiosmtplib.SMTP | None = None
        #: Whether the connection has carried a message (a kept one the server may have
        #: closed since: its first envelope is tried again on a new connection).
        self._used = False

    @property
    def connected(self) -> bool:
        return self._smtp is not None and self._smtp.is_connected

    async def _connection(self) -> aiosmtplib.SMTP:
        if self._smtp is not None and self._smtp.is_connected:
            return self._smtp
        self._used = False
        host, port = self.settings.smtp_address
        smtp = aiosmtplib.SMTP(
            hostname=host,
            port=port,
            timeout=self.settings.smtp_timeout,
            start_tls=self.settings.smtp_starttls,
            username=self.settings.smtp_username or None,
            password=self.settings.smtp_password or None,
        )
        try:
            await smtp.connect()
        except SMTPResponseException as exc:
            raise _classify(exc, "connect") from None
        except (SMTPException, OSError) as exc:
            raise Transient(f"cannot reach SMTP server {host}:{port}: {exc}") from None
        self._smtp = smtp
        return smtp

    async def send(self, message: OutgoingEmail) -> SendAccepted:
        sender, recipient = message.sender, message.recipient
        # Until DATA's final dot is sent nothing can have been accepted: failures before it
        # are clean. A failure while waiting for the answer to DATA leaves us in doubt.
        while True:
            smtp = await self._connection()
            kept = self._used
            try:
                await _envelope(smtp, sender, recipient)
                break
            except SMTPResponseException as exc:
                await self._reset()
                raise _classify(exc, "envelope") from None
            except (SMTPServerDisconnected, SMTPTimeoutError, OSError) as exc:
                self._smtp = None
                if kept:  # the server closed a connection kept idle: once more, on a new one
                    continue
                raise Transient(
                    f"SMTP connection lost before the message was sent: {exc}"
                ) from None
        self._used = True
        try:
            response = await smtp.data(message.data)
        except SMTPResponseException as exc:
            await self._reset()
            raise _classify(exc, "DATA") from None
        except (SMTPServerDisconnected, SMTPTimeoutError, OSError) as exc:
            self._smtp = None
            raise InDoubt(
                f"SMTP connection lost while the message was being accepted: {exc}"
            ) from None
        queued = response.message.strip()
        return SendAccepted(provider_id=message.message_id + (f" {queued}" if queued else ""))

    async def _reset(self) -> None:
        if self._smtp is None:
            return
        try:
            await self._smtp.rset()
        except (SMTPException, OSError):
            self._smtp = None

    async def was_accepted(self, message_id: str) -> bool | None:
        """Whether the server holds the message: known only for the built-in catcher."""
        if not self.settings.uses_catcher:
            return None
        return message_id in catcher_message_ids(self.settings.outbox_dir)

    def abandon(self) -> None:
        """Close the connection without a goodbye (one kept idle for too long)."""
        if self._smtp is not None:
            self._smtp.close()
        self._smtp = None

    async def close(self) -> None:
        if self._smtp is not None and self._smtp.is_connected:
            try:
                await self._smtp.quit()
            except (SMTPException, OSError):
                self._smtp.close()
        self._smtp = None


class EmailPool:
    """SMTP connections kept open between the send activities of one worker process.

    A journey sends one message per activity; without the pool each would open a connection
    (TCP, EHLO, and with a relay STARTTLS and AUTH) and close it again. A connection idle for
    ``idle_seconds`` is closed with a QUIT (relays drop idle clients, and a worker that has
    nothing to send holds nothing open); one the server closed meanwhile is replaced on its
    first envelope (``EmailTransport``).
    """

    def __init__(self, size: int, idle_seconds: float = 20.0) -> None:
        self.size = size
        self.idle_seconds = idle_seconds
        self._idle: list[tuple[float, EmailTransport]] = []
        self._sweeper: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()

    def take(self) -> EmailTransport | None:
        """The most recently used idle connection, if it is fresh enough; stale ones go."""
        now = time.monotonic()
        while self._idle:
            at, transport = self._idle.pop()
            if not self._stale(at, now) and transport.connected:
                return transport
            transport.abandon()
        return None

    async def give(self, transport: EmailTransport) -> None:
        """Keep a connection for the next activity, or close it if the pool is full."""
        if transport.connected and len(self._idle) < self.size:
            self._idle.append((time.monotonic(), transport))
            if self._sweeper is None:
                self._sweeper = asyncio.get_running_loop().call_later(
                    self.idle_seconds, self._sweep
                )
        else:
            await transport.close()

    def _stale(self, kept_at: float, now: float) -> bool:
        """Idle for ``idle_seconds`` or longer: closed, never reused."""
        return now - kept_at >= self.idle_seconds

    def _sweep(self) -> None:
        """Close (QUIT) the connections idle for ``idle_seconds``; look again when the next
        one will be."""
        self._sweeper = None
        now = time.monotonic()
        loop = asyncio.get_running_loop()
        kept = []
        for at, transport in self._idle:
            if self._stale(at, now):
                task = loop.create_task(transport.close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
            else:
                kept.append((at, transport))
        self._idle = kept
        if kept:
            first = min(at for at, _ in kept)
            self._sweeper = loop.call_later(first + self.idle_seconds - now, self._sweep)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        idle, self._idle = self._idle, []
        for _, transport in idle:
            await transport.close()


def catcher_index(outbox: Path) -> list[dict[str, Any]]:
    """The catcher's index (one JSON object a line, oldest first). A last line without its
    newline is still being written by the catcher, and is read next time."""
    index = outbox / "index.jsonl"
    if not index.is_file():
        return []
    with index.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.endswith("\n") and line.strip()]


def catcher_message_ids(outbox: Path) -> set[str]:
    """Message-IDs the catcher has stored."""
    return {entry["message_id"] for entry in catcher_index(outbox)}
