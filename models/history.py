"""What happened with a customer: purchases, every contact in and out, complaints."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Numeric
from sqlmodel import Field, SQLModel

from models.base import utcnow

#: Inbound interactions that count as a response to a message.
RESPONSE_KINDS = ("open", "click", "visit", "reply", "conversion", "response")


class Direction(StrEnum):
    outbound = "outbound"
    inbound = "inbound"


class Transaction(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True, ondelete="CASCADE")
    amount: Decimal = Field(sa_column=Column(Numeric(14, 2), nullable=False))
    currency: str = Field(default="USD", max_length=3)
    occurred_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    product: str = Field(default="", max_length=128)


class Interaction(SQLModel, table=True):
    """One contact: a message we sent, or a response or inbound contact from the customer."""

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True, ondelete="CASCADE")
    channel: str = Field(max_length=16)
    direction: str = Field(max_length=8)
    kind: str = Field(max_length=32, description="message, open, click, reply, conversion, ...")
    outcome: str = Field(default="", max_length=64)
    journey: str | None = Field(default=None, max_length=64, index=True)
    campaign: str | None = Field(default=None, max_length=128, index=True)
    message_key: str | None = Field(default=None, max_length=255, index=True)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    occurred_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class ComplaintState(StrEnum):
    open = "open"  # waiting for a first answer from the responsible
    responded = "responded"  # answered, not yet resolved
    resolved = "resolved"  # resolved; the customer is asked how satisfied they are
    closed = "closed"  # rated, or the survey's wait ran out


def _uid() -> str:
    return uuid.uuid4().hex[:12]


class Complaint(SQLModel, table=True):
    """A coded complaint and its case: who answers it, by when, and how it went.

    ``due_at`` is the response due time (the tier's ``complaint_response_hours``),
    ``resolution_due_at`` the resolution due time; both are fixed when the case opens.
    """

    id: int | None = Field(default=None, primary_key=True)
    uid: str = Field(
        default_factory=_uid,
        max_length=32,
        description="with the id, names the case workflow uniquely across databases",
    )
    customer_id: int = Field(foreign_key="customer.id", index=True, ondelete="CASCADE")
    code: str = Field(max_length=32, index=True)
    description: str = Field(default="", max_length=2000)
    channel: str = Field(default="", max_length=16, description="where it came in")
    tier: str | None = Field(default=None, max_length=32, description="tier when opened")
    state: str = Field(default=ComplaintState.open, max_length=16, index=True)
    responsible: str = Field(default="", max_length=128)
    responsible_email: str = Field(default="", max_length=320)
    escalate_to: str = Field(default="", max_length=320)
    opened_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    due_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    resolution_due_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True))
    )
    remind_before_s: float = Field(default=0, description="reminder lead before each due time")
    acknowledged_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True))
    )
    responded_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    responded_by: str = Field(default="", max_length=128)
    response: str = Field(default="", max_length=2000)
    resolved_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    resolved_by: str = Field(default="", max_length=128)
    resolution: str = Field(default="", max_length=2000)
    #: Steps the case workflow took, by name (acknowledged, reminded:response, escalated:...).
    steps: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    escalated_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    satisfaction: int | None = Field(default=None, ge=1, le=5)
    satisfaction_comment: str = Field(default="", max_length=2000)
    rated_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    closed_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
