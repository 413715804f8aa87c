"""Rule versions, rule runs, each customer's current decision and tier history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Float, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.base import utcnow


class RuleVersion(SQLModel, table=True):
    """Every version of a rule file ever applied: old decisions stay explainable."""

    __tablename__ = "rule_version"

    id: int | None = Field(default=None, primary_key=True)
    ruleset: str = Field(max_length=64, index=True)
    digest: str = Field(max_length=64, unique=True, index=True)
    source: str = Field(sa_column=Column(Text, nullable=False))
    path: str = Field(default="", max_length=500)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    created_by: str = Field(default="", max_length=128)


class RuleRun(SQLModel, table=True):
    """One application of a rule version to the base (or one customer, in real time)."""

    __tablename__ = "rule_run"

    id: int | None = Field(default=None, primary_key=True)
    rule_version_id: int = Field(foreign_key="rule_version.id", index=True)
    state: str = Field(default="running", max_length=16)  # running, finished
    thresholds: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    counts: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    started_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class RankingValue(SQLModel, table=True):
    """A customer's value for a ranking of a run: the database finds the top N."""

    __tablename__ = "ranking_value"
    __table_args__ = (UniqueConstraint("run_id", "name", "customer_id"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="rule_run.id", index=True, ondelete="CASCADE")
    name: str = Field(max_length=64)
    customer_id: int = Field(foreign_key="customer.id", ondelete="CASCADE")
    value: float = Field(sa_column=Column(Float, nullable=False))


class CustomerDecision(SQLModel, table=True):
    """What the rules decided for a customer, with the values they saw."""

    __tablename__ = "customer_decision"

    customer_id: int = Field(foreign_key="customer.id", primary_key=True, ondelete="CASCADE")
    rule_version_id: int = Field(foreign_key="rule_version.id", index=True)
    run_id: int | None = Field(default=None, foreign_key="rule_run.id")
    tier: str = Field(max_length=32, index=True)
    tier_rule: str = Field(max_length=64)
    segments: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    offers: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    features: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    decided_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class TierChange(SQLModel, table=True):
    __tablename__ = "tier_change"

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True, ondelete="CASCADE")
    from_tier: str | None = Field(default=None, max_length=32)
    to_tier: str = Field(max_length=32)
    rule_version_id: int = Field(foreign_key="rule_version.id")
    rule: str = Field(max_length=64)
    reason: str = Field(default="", max_length=1000)
    trigger: str = Field(default="", max_length=64)  # rules apply, purchase, complaint, ...
    at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
