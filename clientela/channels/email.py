"""Email over SMTP with aiosmtplib, one connection reused for a whole batch."""

from __future__ import annotations

import hashlib
import json
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from pathlib import Path

import aiosmtplib
from aiosmtplib import (
    SMTPException,
    SMTPResponseException,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)

from clientela.channels import InDoubt, Permanent, SendAccepted, Transient
from clientela.settings import Settings
from clientela.templating import RenderedEmail


def message_id_for(key: str, sender: str) -> str:
    """A Message-ID derived from the idempotency key: the same message has the same id."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "clientela.local"
    return f"<{hashlib.sha256(key.encode()).hexdigest()[:32]}@{domain}>"


def build_email(
    *,
    key: str,
    sender: str,
    to: str,
    content: RenderedEmail,
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = content.subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id_for(key, sender)
    msg["X-Clientela-Key"] = key
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(content.text)
    msg.add_alternative(content.html, subtype="html")
    return msg


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

    async def _connection(self) -> aiosmtplib.SMTP:
        if self._smtp is not None and self._smtp.is_connected:
            return self._smtp
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

    async def send(self, message: EmailMessage) -> SendAccepted:
        smtp = await self._connection()
        sender = parseaddr(str(message["From"]))[1]
        recipient = parseaddr(str(message["To"]))[1]
        # Until DATA's final dot is sent nothing can have been accepted: failures before it
        # are clean. A failure while waiting for the answer to DATA leaves us in doubt.
        try:
            await smtp.mail(sender)
            await smtp.rcpt(recipient)
        except SMTPResponseException as exc:
            await self._reset()
            raise _classify(exc, "envelope") from None
        except (SMTPServerDisconnected, SMTPTimeoutError, OSError) as exc:
            self._smtp = None
            raise Transient(f"SMTP connection lost before the message was sent: {exc}") from None
        try:
            response = await smtp.data(message.as_bytes())
        except SMTPResponseException as exc:
            await self._reset()
            raise _classify(exc, "DATA") from None
        except (SMTPServerDisconnected, SMTPTimeoutError, OSError) as exc:
            self._smtp = None
            raise InDoubt(
                f"SMTP connection lost while the message was being accepted: {exc}"
            ) from None
        queued = response.message.strip()
        return SendAccepted(
            provider_id=str(message["Message-ID"]) + (f" {queued}" if queued else "")
        )

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

    async def close(self) -> None:
        if self._smtp is not None and self._smtp.is_connected:
            try:
                await self._smtp.quit()
            except (SMTPException, OSError):
                self._smtp.close()
        self._smtp = None


def catcher_message_ids(outbox: Path) -> set[str]:
    """Message-IDs the catcher has stored, from its index (one JSON object per message)."""
    index = outbox / "index.jsonl"
    if not index.is_file():
        return set()
    ids = set()
    with index.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                ids.add(json.loads(line)["message_id"])
    return ids
