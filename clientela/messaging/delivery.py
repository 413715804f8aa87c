"""Delivery reports from providers move ledger rows past ``sent``.

A report can come before its message is recorded as sent (the provider calls back while our
answer is still being written): it is kept (``DeliveryReport``) and applied when the message
is recorded, or by the next sweep. A report can also never come: a message still ``sent``
after ``delivery_report_wait`` is looked up with the provider, and the ledger follows.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlmodel import Session, col, select

from clientela.customers.records import suppress
from clientela.messaging.channels.sms import SUPPRESSING_CODES
from clientela.timeutil import as_utc, utcnow
from models import DeliveryReport, Message, MessageState
from models.ledger import PENDING

log = logging.getLogger(__name__)

# Twilio's MessageStatus values that say nothing new once we hold the message as sent.
IN_FLIGHT = {"accepted", "scheduled", "queued", "sending", "sent"}
DELIVERED = {"delivered", "read"}
UNDELIVERED = {"undelivered", "failed"}
#: How long a report for a message we do not know is kept (it may be another system's).
KEEP_UNMATCHED = timedelta(days=3)


class UnknownStatus(ValueError):
    pass


def record_sms_status(
    *, session: Session, sid: str, status: str, error_code: int | None
) -> Message | None:
    """Apply a Twilio status callback; rows only move forward (sent -> delivered or failed).
    A final report for a message not recorded as sent yet is kept for when it is."""
    if status not in IN_FLIGHT | DELIVERED | UNDELIVERED:
        raise UnknownStatus(f"MessageStatus {status!r} is not a Twilio message status")
    row = session.exec(
        select(Message).where(Message.channel == "sms", Message.provider_id == sid)
    ).first()
    if status in IN_FLIGHT:
        return row
    if row is None or row.state in PENDING:
        session.add(DeliveryReport(provider_id=sid, status=status, error_code=error_code))
        return row
    _settle(session, row, status, error_code)
    return row


def _settle(session: Session, row: Message, status: str, error_code: int | None) -> bool:
    """Move a sent row to its final state; False when it was not ``sent``."""
    if row.state != MessageState.sent:
        return False
    if status in DELIVERED:
        row.state = MessageState.delivered
    else:
        row.state = MessageState.failed
        row.reason = f"undelivered: Twilio reported {status}" + (
            f" (error {error_code})" if error_code else ""
        )
        if error_code in SUPPRESSING_CODES:
            suppress(
                session=session,
                channel="sms",
                address=row.address,
                reason=SUPPRESSING_CODES[error_code],
            )
    row.updated_at = utcnow()
    session.add(row)
    return True


def apply_kept(session: Session, sids: list[str] | None = None) -> int:
    """Apply kept reports whose messages are now recorded (``sids``: only these); reports
    for messages nobody knows are dropped after ``KEEP_UNMATCHED``. How many applied."""
    query = select(DeliveryReport)
    if sids is not None:
        if not sids:
            return 0
        query = query.where(col(DeliveryReport.provider_id).in_(sids))
    applied = 0
    cutoff = utcnow() - KEEP_UNMATCHED
    for report in session.exec(query.order_by(col(DeliveryReport.id))).all():
        row = session.exec(
            select(Message).where(
                Message.channel == "sms", Message.provider_id == report.provider_id
            )
        ).first()
        if row is not None and row.state not in PENDING:
            applied += _settle(session, row, report.status, report.error_code)
            session.delete(report)
        elif row is None and (as_utc(report.received_at) or cutoff) < cutoff:
            session.delete(report)
    return applied


def stale_sms(session: Session, older_than: timedelta, limit: int = 500) -> list[tuple[int, str]]:
    """(row id, sid) of SMS still ``sent`` long after sending: their report never came."""
    now = utcnow()
    return [
        (row_id, sid)
        for row_id, sid in session.exec(
            select(Message.id, Message.provider_id)
            .where(
                Message.channel == "sms",
                Message.state == MessageState.sent,
                col(Message.sent_at) < now - older_than,
                col(Message.sent_at) > now - timedelta(days=7),
                Message.provider_id != "",
            )
            .order_by(col(Message.sent_at))
            .limit(limit)
        ).all()
        if row_id is not None
    ]
