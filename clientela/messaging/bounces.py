"""Bounces and complaints from mailbox providers: what comes back after a message was sent.

**Return path.** Every email goes out with a VERP-style envelope sender,
``<bounce local part>+<tag>@<bounce domain>`` (``bounce_address``, by default ``bounces@``
the sender's domain), and the same tag in an ``X-Clientela-Ref`` header. The tag is 20
lowercase hex digits: 12 of the message key's SHA-256 and 8 of an HMAC of those under the
installation's secret, so that it survives mail servers that fold case, names one message,
and cannot be forged: a report whose tag does not check out changes nothing.

**Reports.** A message in the bounce mailbox is read as

- a delivery status notification (RFC 3464, ``multipart/report;
  report-type=delivery-status``): per recipient, ``Action`` and ``Status``. ``failed`` with a
  5.x.x status is a **hard bounce**: the ledger moves ``sent -> bounced`` with the status and
  diagnostic, and the address is suppressed at once. A 4.x.x status (or ``Action: delayed``)
  is a **soft bounce**: counted once per message, and the address is suppressed when it has
  soft-bounced ``soft_bounce_limit`` messages within ``soft_bounce_window``; a ``failed``
  one moves its message to ``bounced`` too. ``delivered``/``relayed`` moves it to
  ``delivered``;
- a feedback-loop report (ARF, RFC 5965, ``report-type=feedback-report``): the recipient
  marked the message as spam, so email consent is withdrawn (logged with source
  ``complaint``), whatever the feedback type but ``not-spam``.

Anything else (an out-of-office reply, a bounce in a provider's own words) is left alone and
counted as not understood. Each report is applied in one transaction, and applying the same
report twice changes nothing more. Intake: ``clientela bounces process FILE`` (a mail
server's pipe), ``clientela bounces fetch`` (a Maildir, in development the built-in
catcher's), and the API's sweep every minute.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import hashlib
import hmac
import os
import re
import time
from dataclasses import dataclass, field
from datetime import timedelta
from email.message import Message as MailMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from clientela.customers.records import record_interaction, set_consent, suppress
from clientela.messaging.links import secret_key
from clientela.settings import Settings
from clientela.timeutil import utcnow
from models import Customer, Direction, Interaction, Message, MessageState

TAG = re.compile(r"\+([0-9a-f]{20})@", re.IGNORECASE)
REF_HEADER = "X-Clientela-Ref"


@lru_cache(maxsize=8)
def _tag_key(key: bytes) -> bytes:
    return hmac.new(key, b"clientela return paths", hashlib.sha256).digest()


def tag_for(settings: Settings, key: str) -> str:
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    signature = hmac.new(_tag_key(secret_key(settings)), digest.encode(), hashlib.sha256)
    return digest + signature.hexdigest()[:8]


def genuine(settings: Settings, tag: str) -> bool:
    tag = tag.lower()
    if not re.fullmatch(r"[0-9a-f]{20}", tag):
        return False
    expected = hmac.new(_tag_key(secret_key(settings)), tag[:12].encode(), hashlib.sha256)
    return hmac.compare_digest(tag[12:], expected.hexdigest()[:8])


def bounce_address(settings: Settings) -> str:
    """The bare bounce address (VERP tags go before its ``@``)."""
    return _bounce_address(settings.bounce_address, settings.mail_from)


@lru_cache(maxsize=32)
def _bounce_address(configured: str, mail_from: str) -> str:
    if configured:
        return configured
    domain = parseaddr(mail_from)[1].rpartition("@")[2] or "clientela.example"
    return f"bounces@{domain}"


def return_path(settings: Settings, key: str, tag: str | None = None) -> str:
    """The VERP return path of the message ``key`` (``tag``: its ``tag_for``, if known)."""
    local, _, domain = bounce_address(settings).rpartition("@")
    return f"{local}+{tag or tag_for(settings, key)}@{domain}"


#: What enhanced status codes say (RFC 3463), for the report's failure analysis.
STATUS = {
    "1.1": "no such mailbox",
    "1.2": "no such domain",
    "1.3": "bad address syntax",
    "1.6": "mailbox moved",
    "2.1": "mailbox disabled",
    "2.2": "mailbox full",
    "2.3": "message too large",
    "3.0": "recipient's server failing",
    "4.0": "routing problem",
    "4.4": "no answer from the recipient's server",
    "4.7": "delivery time expired",
    "7.0": "refused by policy",
    "7.1": "refused: sender not allowed",
    "7.26": "refused: authentication failed (SPF/DKIM/DMARC)",
}


def describe(status: str) -> str:
    """``5.1.1`` -> ``5.1.1 no such mailbox (hard)``."""
    klass, _, detail = status.partition(".")
    said = STATUS.get(detail) or STATUS.get(f"{detail.split('.')[0]}.0", "")
    kind = "hard" if klass == "5" else "soft" if klass == "4" else "unknown"
    return " ".join(p for p in (status, said, f"({kind})") if p)


# -- reading a report -------------------------------------------------------------------


@dataclass
class Recipient:
    address: str
    action: str  # failed, delayed, delivered, relayed, expanded
    status: str  # 5.1.1
    diagnostic: str = ""


@dataclass
class Report:
    kind: str  # dsn, complaint, other
    tags: list[str] = field(default_factory=list)  # where it says which message it is about
    recipients: list[Recipient] = field(default_factory=list)
    feedback_type: str = ""
    original_to: str = ""


def _text(value: Any) -> str:
    return re.sub(r"\s+", " ", str(value or "")).strip()


def _address_of(field_value: str) -> str:
    """``rfc822; someone@example.com`` -> ``someone@example.com``."""
    value = _text(field_value)
    if ";" in value:
        value = value.split(";", 1)[1]
    return parseaddr(value.strip())[1].lower()


def read(raw: bytes, envelope_to: list[str] | None = None) -> Report:
    """What a message in the bounce mailbox says."""
    parsed = email.message_from_bytes(raw, policy=email.policy.compat32)
    tags: list[str] = []
    for where in [
        *(envelope_to or []),
        str(parsed.get("To", "")),
        str(parsed.get("Delivered-To", "")),
    ]:
        tags += TAG.findall(where)
    report_type = (parsed.get_param("report-type") or "") if parsed.is_multipart() else ""
    original = _original_headers(parsed)
    if original is not None:
        tags += [_text(v) for v in original.get_all(REF_HEADER, [])]
    tags = list(dict.fromkeys(t.lower() for t in tags))
    if parsed.get_content_type() == "multipart/report" and report_type == "delivery-status":
        return Report("dsn", tags, _recipients(parsed))
    if parsed.get_content_type() == "multipart/report" and report_type == "feedback-report":
        fields = _feedback(parsed)
        to = _address_of(fields.get("Original-Rcpt-To", "")) or (
            parseaddr(str(original.get("To", "")))[1].lower() if original is not None else ""
        )
        return Report(
            "complaint", tags, feedback_type=_text(fields.get("Feedback-Type")).lower(),
            original_to=to,
        )  # fmt: skip
    return Report("other", tags)


def _recipients(parsed: MailMessage) -> list[Recipient]:
    out = []
    for part in parsed.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            blocks = [b for b in payload if isinstance(b, MailMessage)]
        else:  # read as text by a lenient parser: split it
            text = str(payload)
            blocks = [email.message_from_string(b) for b in re.split(r"\r?\n\r?\n", text) if b]
        for block in blocks[1:] if len(blocks) > 1 else blocks:
            recipient = _address_of(block.get("Final-Recipient", "")) or _address_of(
                block.get("Original-Recipient", "")
            )
            if not recipient:
                continue
            out.append(
                Recipient(
                    address=recipient,
                    action=_text(block.get("Action")).lower(),
                    status=_text(block.get("Status")).split(" ")[0],
                    diagnostic=_text(block.get("Diagnostic-Code"))[:300],
                )
            )
    return out


def _feedback(parsed: MailMessage) -> MailMessage:
    for part in parsed.walk():
        if part.get_content_type() == "message/feedback-report":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], MailMessage):
                return payload[0]
            return email.message_from_string(str(payload))
    return MailMessage()


def _original_headers(parsed: MailMessage) -> MailMessage | None:
    """The returned message (or its headers), which carries our reference."""
    for part in parsed.walk():
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], MailMessage):
                return payload[0]
        if kind in ("text/rfc822-headers", "message/rfc822-headers"):
            raw = part.get_payload(decode=True)
            return email.message_from_bytes(raw if isinstance(raw, bytes) else b"")
    return None


# -- applying it ----------------------------------------------------------------------------


@dataclass
class Applied:
    """What one report did."""

    kind: str  # hard, soft, delivered, complaint, duplicate, unmatched, not understood
    message: str = ""  # the ledger key it was about
    customer_id: str = ""
    suppressed: bool = False
    detail: str = ""


def apply(session: Session, settings: Settings, report: Report) -> list[Applied]:
    """Apply a report in the caller's transaction."""
    if report.kind == "other":
        return [Applied("not understood")]
    message = _message(session, settings, report)
    if message is None:
        return [Applied("unmatched", detail="no genuine reference to a message we sent")]
    customer = session.get(Customer, message.customer_id)
    assert customer is not None and customer.id is not None
    if report.kind == "complaint":
        return [_complaint(session, message, customer, report)]
    done = []
    for r in report.recipients:
        if r.address and message.address and r.address != message.address.lower():
            done.append(
                Applied("unmatched", message.key, detail=f"{r.address} was not its recipient")
            )
            continue
        done.append(_bounce(session, settings, message, customer, r))
    return done or [Applied("not understood", message.key, detail="no recipient in the report")]


def _message(session: Session, settings: Settings, report: Report) -> Message | None:
    """The message a genuine tag names: among the recipient's messages, the one whose key
    gives the tag (the tag is a digest, so it is looked for, not looked up)."""
    tags = [t for t in report.tags if genuine(settings, t)]
    if not tags:
        return None
    addresses = {r.address for r in report.recipients} | {report.original_to} - {""}
    customers = (
        session.exec(select(Customer.id).where(col(Customer.email).in_(addresses))).all()
        if addresses
        else []
    )
    query = select(Message).where(Message.channel == "email")
    if customers:
        query = query.where(col(Message.customer_id).in_(customers))
    elif addresses:
        query = query.where(col(Message.address).in_(addresses))
    else:
        return None
    for message in session.exec(query.order_by(col(Message.id).desc()).limit(5000)):
        if tag_for(settings, message.key) in tags:
            return message
    return None


def _bounce(
    session: Session, settings: Settings, message: Message, customer: Customer, r: Recipient
) -> Applied:
    assert customer.id is not None
    if r.action in ("delivered", "relayed", "expanded"):
        changed = session.execute(
            update(Message)
            .where(col(Message.id) == message.id, col(Message.state) == MessageState.sent)
            .values(state=MessageState.delivered, updated_at=utcnow())
        )
        return Applied("delivered" if changed.rowcount else "duplicate", message.key)  # type: ignore[attr-defined]
    hard = r.action == "failed" and r.status.startswith("5")
    if not (hard or r.status.startswith("4") or r.action in ("delayed", "failed")):
        return Applied("not understood", message.key, detail=f"action {r.action!r}")
    kind = "hard" if hard else "soft"
    seen = session.exec(
        select(Interaction.id).where(
            Interaction.message_key == message.key,
            Interaction.kind == "bounce",
            Interaction.outcome == kind,
        )
    ).first()
    if seen is not None:
        return Applied("duplicate", message.key, customer.external_id)
    reason = " ".join(p for p in (r.status, r.diagnostic) if p)[:200] or "no reason given"
    record_interaction(
        session=session,
        customer_id=customer.id,
        channel="email",
        direction=Direction.inbound,
        kind="bounce",
        outcome=kind,
        journey=message.journey,
        campaign=message.campaign,
        message_key=message.key,
        detail={"status": r.status, "action": r.action, "diagnostic": r.diagnostic},
    )
    if r.action == "failed":
        # Also a message whose answer is not recorded yet (``sending``): the bounce says it
        # was handed over. The attempt that sends it finds it settled when it records.
        session.execute(
            update(Message)
            .where(
                col(Message.id) == message.id,
                col(Message.state).in_(
                    (MessageState.sending, MessageState.sent, MessageState.delivered)
                ),
            )
            .values(
                state=MessageState.bounced,
                reason=f"bounced{'' if hard else ' (soft)'}: {reason}"[:1000],
                updated_at=utcnow(),
            )
        )
    address = message.address.lower()
    if hard:
        # Grouped in reports and audiences by its status, so the reason names no address.
        why = f"hard bounce: {describe(r.status)}"
        suppress(session=session, channel="email", address=address, reason=why)
        return Applied("hard", message.key, customer.external_id, True, reason)
    since = utcnow() - settings.soft_bounce_window
    count = session.exec(
        select(func.count(func.distinct(Interaction.message_key))).where(
            Interaction.customer_id == customer.id,
            Interaction.kind == "bounce",
            Interaction.outcome == "soft",
            col(Interaction.occurred_at) >= since,
        )
    ).one()
    if count >= settings.soft_bounce_limit:
        days = settings.soft_bounce_window / timedelta(days=1)
        suppress(
            session=session,
            channel="email",
            address=address,
            reason=f"soft bounces: {count} in {days:g} days (last: {describe(r.status)})",
        )
        return Applied("soft", message.key, customer.external_id, True, reason)
    return Applied("soft", message.key, customer.external_id, False, reason)


def _complaint(session: Session, message: Message, customer: Customer, report: Report) -> Applied:
    assert customer.id is not None
    if report.feedback_type == "not-spam":
        return Applied("not understood", message.key, detail="a not-spam report")
    seen = session.exec(
        select(Interaction.id).where(
            Interaction.message_key == message.key, Interaction.kind == "spam_complaint"
        )
    ).first()
    if seen is not None:
        return Applied("duplicate", message.key, customer.external_id)
    record_interaction(
        session=session,
        customer_id=customer.id,
        channel="email",
        direction=Direction.inbound,
        kind="spam_complaint",
        outcome=report.feedback_type or "abuse",
        journey=message.journey,
        campaign=message.campaign,
        message_key=message.key,
        detail={"feedback_type": report.feedback_type},
    )
    set_consent(
        session=session,
        customer_id=customer.id,
        channel="email",
        granted=False,
        source=f"complaint (marked as {report.feedback_type or 'abuse'})",
    )
    return Applied("complaint", message.key, customer.external_id, True)


# -- intake -----------------------------------------------------------------------------


def process(settings: Settings, raw: bytes, envelope_to: list[str] | None = None) -> list[Applied]:
    """Read and apply one message of the bounce mailbox, in a transaction of its own."""
    from clientela.db import session_scope

    report = read(raw, envelope_to)
    with session_scope(settings.db_url) as session:
        return apply(session, settings, report)


def mailbox_dir(settings: Settings) -> Path:
    """The Maildir bounces arrive in (the built-in catcher delivers there in development)."""
    return settings.bounce_maildir or settings.home / "bounces"


def fetch(settings: Settings, folder: Path | None = None) -> list[Applied]:
    """Process every new message of a Maildir, each once however many fetches run.

    A message is first claimed by moving it from ``new/`` to ``cur/`` (an atomic rename: one
    fetch wins; its time is set to the claim's), then applied, then flagged seen
    (``:2,S``). A message claimed but not flagged five minutes later belongs to a fetch that
    stopped between: it is applied again, which changes nothing the first one did (reports
    are applied once each).
    """
    box = Path(folder or mailbox_dir(settings))
    for sub in ("new", "cur", "tmp"):
        (box / sub).mkdir(parents=True, exist_ok=True)
    mine: list[Path] = []
    for name in sorted(os.listdir(box / "new")):
        if name.startswith("."):
            continue
        claimed = box / "cur" / f"{name.split(':')[0]}:2,"
        try:
            os.rename(box / "new" / name, claimed)
        except FileNotFoundError:
            continue  # another fetch took it
        os.utime(claimed)
        mine.append(claimed)
    stale = time.time() - 300
    for name in sorted(os.listdir(box / "cur")):
        path = box / "cur" / name
        with contextlib.suppress(FileNotFoundError):
            if name.endswith(":2,") and path not in mine and path.stat().st_mtime < stale:
                mine.append(path)
    done: list[Applied] = []
    for path in mine:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            continue
        done += process(settings, raw)
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, path.with_name(f"{path.name}S"))
    return done


def _returned(original: bytes) -> MailMessage:
    """The original message's headers, as a report returns them (``text/rfc822-headers``)."""
    headers = re.split(rb"\r?\n\r?\n", original, maxsplit=1)[0]
    part = MailMessage()
    part["Content-Type"] = "text/rfc822-headers"
    part.set_payload(headers.decode("utf-8", "replace").replace("\r\n", "\n") + "\n")
    return part


def _fields(**values: str) -> MailMessage:
    block = MailMessage()
    for name, value in values.items():
        block[name.replace("_", "-")] = value
    return block


def dsn(
    *,
    reporting_mta: str,
    to: str,
    original: bytes,
    recipient: str,
    action: str,
    status: str,
    diagnostic: str,
) -> bytes:
    """A delivery status notification (RFC 3464) as a mail server writes one (the built-in
    catcher's, in development)."""
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_mta}>"
    report["To"] = to
    report["Subject"] = (
        "Undelivered Mail Returned to Sender" if action == "failed" else "Delayed Mail"
    )
    report["Auto-Submitted"] = "auto-replied"
    report.attach(
        MIMEText(
            f"This is the mail system at host {reporting_mta}.\n\n"
            f"Your message to <{recipient}> could not be delivered: {diagnostic}\n"
        )
    )
    status_part = MailMessage()
    status_part["Content-Type"] = "message/delivery-status"
    status_part.set_payload(
        [
            _fields(Reporting_MTA=f"dns; {reporting_mta}"),
            _fields(
                Final_Recipient=f"rfc822; {recipient}",
                Action=action,
                Status=status,
                Diagnostic_Code=f"smtp; {diagnostic}",
            ),
        ]
    )
    report.attach(status_part)
    report.attach(_returned(original))
    return report.as_bytes()


def arf(*, reporting: str, to: str, original: bytes, recipient: str) -> bytes:
    """A feedback-loop report (ARF, RFC 5965): the recipient marked the message as spam."""
    report = MIMEMultipart("report", report_type="feedback-report")
    report["From"] = f"Feedback Loop <fbl@{reporting}>"
    report["To"] = to
    report["Subject"] = "Complaint about a message from your domain"
    report.attach(MIMEText("This is an email abuse report for a message from your domain.\n"))
    feedback = MailMessage()
    feedback["Content-Type"] = "message/feedback-report"
    feedback.set_payload(
        "Feedback-Type: abuse\nUser-Agent: clientela-catcher/1.0\nVersion: 1\n"
        f"Original-Rcpt-To: {recipient}\n"
    )
    report.attach(feedback)
    report.attach(_returned(original))
    return report.as_bytes()
