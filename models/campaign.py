"""Campaigns and who is in them: arm, variant, treated or control, or excluded and why."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.base import utcnow


class Campaign(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=64, description="slug, e.g. spring-2027")
    name: str = Field(max_length=200)
    objective: str = Field(default="", max_length=2000)
    stage: str = Field(default="draft", max_length=32, index=True)
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    cost_per_message: dict[str, float] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    budget: float | None = None
    window_start: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    window_end: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class CampaignMember(SQLModel, table=True):
    __tablename__ = "campaign_member"
    __table_args__ = (
        # Few indexes: a campaign's whole list is written at once (migration 0003).
        UniqueConstraint("campaign_id", "customer_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: str = Field(foreign_key="campaign.id", index=True, ondelete="CASCADE")
    customer_id: int = Field(foreign_key="customer.id", index=True, ondelete="CASCADE")
    arm: str = Field(default="main", max_length=64)
    variant: str = Field(default="", max_length=64)
    group: str = Field(default="treated", max_length=16)  # treated or control
    channel: str = Field(default="", max_length=16)
    address: str = Field(default="", max_length=320, description="where it goes (or would)")
    excluded: str = Field(default="", max_length=255, description="why not contacted, or ''")
    pilot: bool = Field(default=False, description="in the pilot wave, sent before the rest")
    tier: str = Field(default="", max_length=32, description="the customer's tier when listed")
    segments: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    draw: int = Field(
        default=0, sa_column=Column(BigInteger, nullable=False), description="stable hash"
    )
