"""An SMTP server (aiosmtpd) that keeps every message it accepts as a ``.eml`` file.

Each accepted message is written to ``<outbox>/<received>-<n>.eml`` and indexed in
``<outbox>/index.jsonl`` (file, Message-ID, envelope). The index is also how the sender
reconciles a message it is in doubt about. Faults can be injected, as a mail server would
produce them, to exercise the sender's handling of refusals and slow answers.

It also plays the recipients' mail servers and the company's bounce mailbox, so that the
whole return path runs in development: mail to the bounce address (``bounces@...``, with or
without a VERP tag) is delivered to a Maildir (``<outbox>/../bounces``) instead of the
outbox, and mail to these simulated recipients (any domain; a ``+tag`` is allowed) is
accepted and then answered as a real mailbox provider would, to the message's return path:

- ``bounce@``: a delivery status notification, ``failed`` with 5.1.1 (no such user);
- ``softbounce@``: a delivery status notification, ``delayed`` with 4.2.2 (mailbox full);
- ``complaint@``: a feedback-loop report (ARF): the recipient marked it as spam.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import itertools
import json
import logging
import mailbox
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class Fault:
    """Answer ``code message`` to DATA for recipients matching ``pattern``, ``times`` times
    (at ``stage`` "rcpt": to RCPT TO; at "mail": to MAIL FROM, for senders matching it)."""

    pattern: str
    code: int
    message: str = "fault injected"
    times: int | None = None  # None: always
    stage: Literal["mail", "rcpt", "data"] = "data"  # refuse the sender, recipient or message

    def matches(self, recipients: list[str]) -> bool:
        return any(re.search(self.pattern, r) for r in recipients)


#: Simulated recipients (the local part before any ``+``) and what their mailbox does.
SIMULATED = {"bounce", "softbounce", "complaint"}


class CatcherHandler:
    def __init__(
        self, outbox: Path, bounces: Path | None = None, bounce_local: str = "bounces"
    ) -> None:
        self.outbox = outbox
        self.outbox.mkdir(parents=True, exist_ok=True)
        self.bounces = bounces or outbox.parent / "bounces"
        self.bounce_local = bounce_local
        self.faults: list[Fault] = []
        self.delay_seconds = 0.0
        self._counter = itertools.count(1)
        self.accepted = 0

    def _fault(self, stage: str, recipients: list[str]) -> str | None:
        for fault in self.faults:
            if fault.stage == stage and fault.times != 0 and fault.matches(recipients):
                if fault.times is not None:
                    fault.times -= 1
                return f"{fault.code} {fault.message}"
        return None

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        refused = self._fault("mail", [address])
        if refused:
            return refused
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        refused = self._fault("rcpt", [address])
        if refused:
            return refused
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        recipients = [str(r) for r in envelope.rcpt_tos]
        refused = self._fault("data", recipients)
        if refused:
            return refused
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode()
        if all(self._to_bounces(r) for r in recipients):
            self._deliver_bounce(content)
            return "250 OK delivered to the bounce mailbox"
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        stamp = datetime.now(UTC)
        name = f"{stamp:%Y%m%dT%H%M%S%f}-{os.getpid()}-{next(self._counter):06d}.eml"
        tmp = self.outbox / f".{name}.tmp"
        tmp.write_bytes(content)
        tmp.rename(self.outbox / name)
        entry = {
            "file": name,
            "message_id": str(parsed.get("Message-ID", "")),
            "from": envelope.mail_from,
            "to": recipients,
            "subject": str(parsed.get("Subject", "")),
            "received_at": stamp.isoformat(),
            # The client's end of the connection: messages sharing it came over one session.
            "peer": ":".join(str(part) for part in (session.peer or ())[:2]),
        }
        with (self.outbox / "index.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
        self.accepted += 1
        for recipient in recipients:
            self._answer_as_mailbox(recipient, str(envelope.mail_from or ""), content)
        return f"250 OK queued as {name}"

    def _to_bounces(self, address: str) -> bool:
        local = address.rpartition("@")[0].lower()
        return local == self.bounce_local or local.startswith(f"{self.bounce_local}+")

    def _deliver_bounce(self, content: bytes) -> None:
        mailbox.Maildir(self.bounces, create=True).add(content)

    def _answer_as_mailbox(self, recipient: str, return_path: str, content: bytes) -> None:
        """What a simulated recipient's mail server sends back, to the return path."""
        from clientela.messaging import bounces

        who = recipient.rpartition("@")[0].split("+")[0].lower()
        if who not in SIMULATED or not return_path or not self._to_bounces(return_path):
            return
        if who == "complaint":
            report = bounces.arf(
                reporting="mailbox.example", to=return_path, original=content, recipient=recipient
            )
        else:
            hard = who == "bounce"
            report = bounces.dsn(
                reporting_mta="mx.mailbox.example",
                to=return_path,
                original=content,
                recipient=recipient,
                action="failed" if hard else "delayed",
                status="5.1.1" if hard else "4.2.2",
                diagnostic=f"550 5.1.1 <{recipient}>: Recipient address rejected: User unknown"
                if hard
                else f"452 4.2.2 <{recipient}>: Mailbox full",
            )
        self._deliver_bounce(report)


def read_outbox(outbox: Path) -> list[dict[str, Any]]:
    """The index of every message the catcher accepted, oldest first."""
    from clientela.messaging.channels.email import catcher_index

    return catcher_index(outbox)


class SmtpCatcher:
    """The catcher on a background thread (aiosmtpd's controller)."""

    def __init__(
        self,
        outbox: Path,
        host: str = "127.0.0.1",
        port: int = 1025,
        bounces: Path | None = None,
        bounce_local: str = "bounces",
    ) -> None:
        self.handler = CatcherHandler(outbox, bounces, bounce_local)
        self.controller = Controller(
            self.handler, hostname=host, port=port, data_size_limit=25 * 1024 * 1024
        )

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def start(self) -> SmtpCatcher:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--outbox", type=Path, default=Path(".clientela/outbox"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--bounces", type=Path, default=None, help="the bounce Maildir")
    parser.add_argument("--bounce-local", default="bounces", help="the bounce address's user")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s smtp %(levelname)s %(message)s")
    catcher = SmtpCatcher(
        args.outbox, args.host, args.port, args.bounces, args.bounce_local
    ).start()
    logging.info("SMTP catcher on %s:%d, outbox %s", args.host, args.port, args.outbox)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        catcher.stop()


if __name__ == "__main__":
    main()
