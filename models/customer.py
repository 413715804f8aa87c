"""The customer: profile, consent per channel, and suppressed addresses."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import JSON, Column, DateTime, Index, UniqueConstraint, func, text
from sqlmodel import Field, SQLModel

from models.base import utcnow


class Channel(StrEnum):
    email = "email"
    sms = "sms"


def full_name(first_name: str, last_name: str) -> str:
    return f"{first_name} {last_name}".strip()


class CustomerFields(Protocol):
    """What deciding and rendering a message read of a customer: a ``Customer``, or a row of
    its table read without the ORM (a campaign's sending loads its batches so: building ORM
    objects cost twice as much as the rows, measured with ``bench.campaign``)."""

    @property
    def id(self) -> int | None: ...
    @property
    def external_id(self) -> str: ...
    @property
    def first_name(self) -> str: ...
    @property
    def last_name(self) -> str: ...
    @property
    def email(self) -> str | None: ...
    @property
    def phone(self) -> str | None: ...
    @property
    def locale(self) -> str: ...
    @property
    def timezone(self) -> str: ...
    @property
    def preferred_channel(self) -> str | None: ...
    @property
    def tier(self) -> str | None: ...
    @property
    def segments(self) -> list[str]: ...
    @property
    def attributes(self) -> dict[str, Any]: ...
    @property
    def internal(self) -> bool: ...


class CustomerBase(SQLModel):
    external_id: str = Field(index=True, unique=True, max_length=128)
    first_name: str = Field(default="", max_length=128)
    last_name: str = Field(default="", max_length=128)
    email: str | None = Field(default=None, index=True, max_length=320)
    phone: str | None = Field(default=None, index=True, max_length=16)
    locale: str = Field(default="en", max_length=8)
    # The hourly date run selects customers by time zone (the zones where it is 09:00 now).
    timezone: str = Field(default="UTC", max_length=64, index=True)
    birthday: date | None = None
    signup_date: date | None = None
    preferred_channel: str | None = Field(default=None, max_length=16)


class Customer(CustomerBase, table=True):
    # Search by the start of a name, in any case, is an index lookup.
    __table_args__ = (
        Index("ix_customer_last_name_lower", func.lower(text("last_name"))),
        Index("ix_customer_first_name_lower", func.lower(text("first_name"))),
    )

    id: int | None = Field(default=None, primary_key=True)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    tier: str | None = Field(default=None, index=True, max_length=32)
    internal: bool = Field(
        default=False, description="an internal test recipient (proof list): in no audience"
    )
    segments: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )

    @property
    def full_name(self) -> str:
        return full_name(self.first_name, self.last_name)


class Consent(SQLModel, table=True):
    """Whether a customer agreed to be contacted on a channel, who said so, and when."""

    __table_args__ = (UniqueConstraint("customer_id", "channel"),)

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True, ondelete="CASCADE")
    channel: str = Field(max_length=16)
    granted: bool
    source: str = Field(max_length=128)
    recorded_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class ConsentRecord(SQLModel, table=True):
    """The consent log: every grant and withdrawal, never changed afterwards. ``Consent`` and
    ``TopicPreference`` hold what it adds up to now, written in the same transaction."""

    __tablename__ = "consent_record"

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True, ondelete="CASCADE")
    channel: str = Field(default="", max_length=16, description="email, sms; '' for a topic")
    topic: str = Field(default="", max_length=64, description="a subscription topic, or ''")
    granted: bool
    source: str = Field(max_length=128, description="import, api, link, keyword, bounce, ...")
    wording: str = Field(default="", max_length=64, description="version of the text shown")
    recorded_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class TopicPreference(SQLModel, table=True):
    """A customer's choice about one subscription topic (none: subscribed)."""

    __tablename__ = "topic_preference"
    __table_args__ = (UniqueConstraint("customer_id", "topic"),)

    id: int | None = Field(default=None, primary_key=True)
    customer_id: int = Field(foreign_key="customer.id", index=True, ondelete="CASCADE")
    topic: str = Field(max_length=64)
    subscribed: bool
    source: str = Field(max_length=128)
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class Suppression(SQLModel, table=True):
    """An address no message may go to (opted out at the provider, invalid, unsubscribed)."""

    __table_args__ = (UniqueConstraint("channel", "address"),)

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=16)
    address: str = Field(max_length=320, index=True)
    reason: str = Field(max_length=512)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class Tombstone(SQLModel, table=True):
    """An erased customer's address, as a salted hash only: a later import of the same
    address is not consent to contact it (docs/tracking.md)."""

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=16)
    digest: str = Field(max_length=64, unique=True, index=True, description="HMAC-SHA256")
    reason: str = Field(default="", max_length=255)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class HashSalt(SQLModel, table=True):
    """Random salts made once per database (for tombstones)."""

    __tablename__ = "hash_salt"

    purpose: str = Field(primary_key=True, max_length=32)
    value: str = Field(max_length=128)
