"""What happened with a customer: purchases, every contact in and out, complaints."""

from __future__ import annotations

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


class Complaint(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True, ondelete="CASCADE")
    code: str = Field(max_length=32, index=True)
    description: str = Field(default="", max_length=2000)
    responsible: str = Field(default="", max_length=128)
    opened_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    due_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    resolved_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
