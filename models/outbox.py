"""Journey entries waiting to be started: written with the event that caused them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime
from sqlmodel import Field, SQLModel

from models.base import utcnow


class JourneyOutbox(SQLModel, table=True):
    """A happening (an event, a tier change, a segment entry) that lets a customer into at
    least one journey, recorded in the same transaction as what caused it and removed once
    its journeys are started. A row still here a minute later is started again (a start
    that already happened is refused by its workflow id, so nothing starts twice)."""

    __tablename__ = "journey_outbox"

    id: int | None = Field(default=None, primary_key=True)
    customer_id: str = Field(max_length=128, description="the customer's external id")
    happening: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, index=True),
    )
