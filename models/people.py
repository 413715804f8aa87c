"""The people who work in Clientela: users with roles, their API tokens, and the audit trail
of every change they make."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime
from sqlmodel import Field, SQLModel

from models.base import utcnow

#: marketer: designs and launches campaigns and journeys, edits templates; approver: approves
#: or rejects campaigns; desk: complaint cases and the customer view; admin: users, rules,
#: settings. A user may hold several.
ROLES = ("marketer", "approver", "desk", "admin")


class User(SQLModel, table=True):
    __tablename__ = "app_user"  # ("user" is reserved in PostgreSQL)

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(unique=True, index=True, max_length=64)
    name: str = Field(default="", max_length=128)
    email: str = Field(default="", max_length=320)
    roles: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    password_hash: str = Field(default="", max_length=255, description="argon2id")
    active: bool = True
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )


class ApiToken(SQLModel, table=True):
    """A personal API token: shown once when made, kept only as its SHA-256."""

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="app_user.id", index=True, ondelete="CASCADE")
    name: str = Field(max_length=64, description="what it is for, e.g. the shop's webhook")
    token_hash: str = Field(unique=True, index=True, max_length=64)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    last_used_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
    revoked_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))


class AuditEvent(SQLModel, table=True):
    """Who changed what, when: one row per change of state."""

    __tablename__ = "audit_event"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(
        default_factory=utcnow,
        sa_column=Column(DateTime(timezone=True), nullable=False, index=True),
    )
    actor: str = Field(max_length=128, description="a user, or cli:<account> / api:service")
    action: str = Field(max_length=64, index=True, description="e.g. campaign.approved")
    subject: str = Field(max_length=255, index=True, description="e.g. campaign:spring-2027")
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class ConsoleSession(SQLModel, table=True):
    """A signed-in browser: the cookie holds a random token, kept here as its SHA-256, with
    the token every form of the session carries against cross-site requests."""

    __tablename__ = "console_session"

    id: int | None = Field(default=None, primary_key=True)
    token_hash: str = Field(unique=True, index=True, max_length=64)
    user_id: int = Field(foreign_key="app_user.id", index=True, ondelete="CASCADE")
    csrf: str = Field(max_length=64)
    client: str = Field(default="", max_length=64, description="the address it signed in from")
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    seen_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(DateTime(timezone=True), nullable=False)
    )
    ended_at: datetime | None = Field(default=None, sa_column=Column(DateTime(timezone=True)))
