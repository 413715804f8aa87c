"""Delivery reports from providers move ledger rows past ``sent``."""

from __future__ import annotations

from sqlmodel import Session, select

from clientela.channels.sms import SUPPRESSING_CODES
from clientela.customers import suppress
from clientela.timeutil import utcnow
from models import Message, MessageState

# Twilio's MessageStatus values that say nothing new once we hold the message as sent.
IN_FLIGHT = {"accepted", "scheduled", "queued", "sending", "sent"}
DELIVERED = {"delivered", "read"}
UNDELIVERED = {"undelivered", "failed"}


class UnknownStatus(ValueError):
    pass


def record_sms_status(
    *, session: Session, sid: str, status: str, error_code: int | None
) -> Message | None:
    """Apply a Twilio status callback; rows only move forward (sent -> delivered or failed)."""
    if status not in IN_FLIGHT | DELIVERED | UNDELIVERED:
        raise UnknownStatus(f"MessageStatus {status!r} is not a Twilio message status")
    row = session.exec(
        select(Message).where(Message.channel == "sms", Message.provider_id == sid)
    ).first()
    if row is None or row.state != MessageState.sent or status in IN_FLIGHT:
        return row
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
    return row
