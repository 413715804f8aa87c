"""An SMTP server (aiosmtpd) that keeps every message it accepts as a ``.eml`` file.

Each accepted message is written to ``<outbox>/<received>-<n>.eml`` and indexed in
``<outbox>/index.jsonl`` (file, Message-ID, envelope). The index is also how the sender
reconciles a message it is in doubt about. Faults can be injected, as a mail server would
produce them, to exercise the sender's handling of refusals and slow answers.
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import itertools
import json
import logging
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
    """Answer ``code message`` to DATA for recipients matching ``pattern``, ``times`` times."""

    pattern: str
    code: int
    message: str = "fault injected"
    times: int | None = None  # None: always
    stage: Literal["rcpt", "data"] = "data"  # refuse the recipient, or the message

    def matches(self, recipients: list[str]) -> bool:
        return any(re.search(self.pattern, r) for r in recipients)


class CatcherHandler:
    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        self.outbox.mkdir(parents=True, exist_ok=True)
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
        }
        with (self.outbox / "index.jsonl").open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
        self.accepted += 1
        return f"250 OK queued as {name}"


def read_outbox(outbox: Path) -> list[dict[str, Any]]:
    """The index of every message the catcher accepted, oldest first."""
    from clientela.messaging.channels.email import catcher_index

    return catcher_index(outbox)


class SmtpCatcher:
    """The catcher on a background thread (aiosmtpd's controller)."""

    def __init__(self, outbox: Path, host: str = "127.0.0.1", port: int = 1025) -> None:
        self.handler = CatcherHandler(outbox)
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
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s smtp %(levelname)s %(message)s")
    catcher = SmtpCatcher(args.outbox, args.host, args.port).start()
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
