"""What enters from outside (API, import files): validated before anything is written."""

from __future__ import annotations

import re
from datetime import date
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

SUPPORTED_LOCALES = ("en", "es")
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class CustomerIn(BaseModel):
    """A customer as a marketer or a sign-up form gives it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    external_id: str = Field(min_length=1, max_length=128)
    first_name: str = Field("", max_length=128)
    last_name: str = Field("", max_length=128)
    email: str | None = Field(None, max_length=320)
    phone: str | None = Field(None, description="E.164, e.g. +34600123456")
    locale: str = "en"
    timezone: str = "UTC"
    birthday: date | None = None
    signup_date: date | None = None
    preferred_channel: Literal["email", "sms"] | None = None
    email_consent: bool = False
    sms_consent: bool = False
    consent_source: str = Field("import", max_length=128)
    attributes: dict[str, float | int | str] = Field(default_factory=dict)

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if not EMAIL.match(v):
            raise ValueError(f"{v!r} is not an email address")
        return v.lower()

    @field_validator("phone")
    @classmethod
    def _phone(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        compact = re.sub(r"[\s\-().]", "", v)
        if not E164.match(compact):
            raise ValueError(f"{v!r} is not an E.164 number (write it as +<country><number>)")
        return compact

    @field_validator("locale")
    @classmethod
    def _locale(cls, v: str) -> str:
        base = v.replace("_", "-").split("-")[0].lower()
        if base not in SUPPORTED_LOCALES:
            raise ValueError(f"{v!r} is not a supported locale ({', '.join(SUPPORTED_LOCALES)})")
        return base

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{v!r} is not an IANA time zone such as Europe/Madrid") from None
        return v

    @field_validator("attributes")
    @classmethod
    def _attribute_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", name):
                raise ValueError(f"attribute name {name!r} must be letters, digits and _")
        return v
