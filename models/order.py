"""Orders placed by a conversion, and their fulfilment."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Column, DateTime, Numeric
from sqlmodel import Field, SQLModel

from models.base import utcnow


class Order(SQLModel, table=True):
    __tablename__ = "customer_order"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, max_length=255, description="the event that placed it")
    uid: str = Field(
        default_factory=lambda: uuid.uuid4().hex[:12],
        max_length=32,
        description="with the id, names its fulfilment workflow uniquely across databases",
    )
    customer_id: int = Field(foreign_key="customer.id", index=True, ondelete="CASCADE")
    campaign: str | None = Field(default=None, max_length=128, index=True)
    value: Decimal = Field(sa_column=Column(Numeric(14, 2), nullable=False))
    currency: str = Field(default="USD", max_length=3)
    state: str = Field(default="requested", max_length=16, description="requested, fulfilled")
    transaction_id: int | None = Field(default=None, foreign_key="transaction.id")
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    fulfilled_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
