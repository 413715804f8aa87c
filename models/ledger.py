"""The message ledger: one row per intended message, the one answer to "was this sent?"."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Column, DateTime, Index
from sqlmodel import Field, SQLModel

from models.base import utcnow


class MessageState(StrEnum):
    queued = "queued"  # intended, not yet handed to a provider
    claimed = "claimed"  # claimed by one attempt, not handed to the provider yet
    sending = "sending"  # being handed to the provider by one attempt (in doubt if it died)
    sent = "sent"  # the provider accepted it
    delivered = "delivered"  # the provider reported delivery
    bounced = "bounced"  # sent, then returned by the recipient's mail server (reason says why)
    failed = "failed"  # will not be sent; reason says why
    suppressed = "suppressed"  # deliberately not sent (consent, suppression list); reason says why

    @property
    def final(self) -> bool:
        return self not in PENDING


#: States of a message that is not settled yet.
PENDING = (MessageState.queued, MessageState.claimed, MessageState.sending)


class Message(SQLModel, table=True):
    # Contact caps read a batch of customers' recent messages by (customer, state); without
    # this index SQLite scans every sent message for each batch.
    __table_args__ = (Index("ix_message_customer_state", "customer_id", "state"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, index=True, max_length=255, description="idempotency key")
    customer_id: int = Field(foreign_key="customer.id", index=True, ondelete="CASCADE")
    channel: str = Field(max_length=16)
    address: str = Field(default="", max_length=320)
    template: str = Field(max_length=128)
    locale: str = Field(default="", max_length=8)
    journey: str | None = Field(default=None, max_length=64, index=True)
    campaign: str | None = Field(default=None, max_length=128, index=True)
    state: str = Field(default=MessageState.queued, max_length=16, index=True)
    service: bool = Field(default=False, description="a service message: outside the caps")
    reason: str = Field(default="", max_length=1000)
    provider_id: str = Field(default="", max_length=255)
    attempts: int = 0
    claimed_by: str = Field(default="", max_length=255)
    claimed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    sent_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    created_at: datetime = Field(  # indexed for the console's "today's messages"
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, index=True),
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class DeliveryReport(SQLModel, table=True):
    """A provider's delivery report that came before its message was recorded as sent (the
    provider may answer the callback before we have its answer to the send): kept, and
    applied as soon as the message is recorded."""

    __tablename__ = "delivery_report"

    id: int | None = Field(default=None, primary_key=True)
    provider_id: str = Field(index=True, max_length=255)
    status: str = Field(max_length=32)
    error_code: int | None = None
    received_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
