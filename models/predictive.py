"""Predictive models: every trained version, with what it learnt from and how well it did."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.base import utcnow


class PredictiveModel(SQLModel, table=True):
    """One trained version of a model spec (``predictive/<name>.yaml``).

    ``artifact`` is the fitted estimator, pickled; it is loaded only when its SHA-256 equals
    ``digest``. The store is trusted as the database is: only the trainer writes it.
    """

    __tablename__ = "predictive_model"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, index=True)
    version: int
    kind: str = Field(max_length=16, description="propensity or uplift")
    method: str = Field(max_length=32)
    outcome: str = Field(max_length=16, description="visit or conversion")
    offer: str = Field(default="", max_length=64, description="the offer it predicts, if any")
    spec: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    features: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    campaigns: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    window_start: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    window_end: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    rows: dict[str, int] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    curve: list[list[float]] = Field(
        default_factory=list,
        sa_column=Column(JSON, nullable=False),
        description="held-out Qini curve: [share targeted, incremental responses per customer]",
    )
    artifact: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    digest: str = Field(max_length=64)
    training_key: str = Field(
        max_length=200, unique=True, description="the run that trained it: a retry finds it"
    )
    trained_by: str = Field(default="", max_length=128)
    trained_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    seconds: float = 0.0
