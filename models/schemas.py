"""What enters from outside (API, import files): validated before anything is written.

The types here are shared by every way in (``POST /events``, imports, campaign specs), so a
value refused at one door is refused at all of them.
"""

from __future__ import annotations

import math
import re
from datetime import date
from functools import lru_cache
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

SUPPORTED_LOCALES = ("en", "es")
E164 = re.compile(r"^\+[1-9]\d{6,14}$")

#: External ids: what a CRM, a shop or a form may use to name a customer. The alphabet is
#: closed (no spaces, no control characters, no quotes or brackets) because the id travels
#: into idempotency keys, workflow ids, message headers and file names.
EXTERNAL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@+\-]{0,127}$"
EXTERNAL_ID_RULE = (
    "1 to 128 characters: letters A-Z and a-z, digits and . _ : @ + - (starting with a "
    "letter or digit; no spaces or control characters)"
)
_EXTERNAL_ID = re.compile(EXTERNAL_ID_PATTERN)

#: Free attributes: at most this many per customer, text values at most this long.
MAX_ATTRIBUTES = 100
MAX_ATTRIBUTE_TEXT = 1000
#: Zone names that exist in the database but name no place a customer lives in.
_NOT_PLACES = {"Factory", "localtime", "posixrules"}


def check_external_id(value: str) -> str:
    if not _EXTERNAL_ID.fullmatch(value):
        shown = value if len(value) <= 40 else value[:40] + "…"
        raise ValueError(f"{shown!r} is not a valid id: use {EXTERNAL_ID_RULE}")
    return value


ExternalId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        description=EXTERNAL_ID_RULE,
        examples=["C-1001"],
        json_schema_extra={"pattern": EXTERNAL_ID_PATTERN},
    ),
    AfterValidator(check_external_id),
]


def check_email(value: str) -> str:
    """One mailbox, checked by a real parser: no lists, no display names, no comments.

    Domains may be internationalised (kept in their ASCII form); addresses whose part before
    the @ is not ASCII need SMTPUTF8, which not every relay offers, so they are refused here
    rather than accepted and then failed at send time.
    """
    try:
        checked = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise ValueError(f"{value!r} is not a usable email address: {exc}") from None
    return (checked.ascii_email or checked.normalized).lower()


EmailAddress = Annotated[
    str, Field(max_length=320, examples=["lucia@example.com"]), AfterValidator(check_email)
]


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(z for z in available_timezones() if z not in _NOT_PLACES)


def check_timezone(value: str) -> str:
    if value not in _zones():
        raise ValueError(
            f"{value!r} is not an IANA time zone of a place, such as Europe/Madrid or "
            "America/Mexico_City (or UTC)"
        )
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA time zone such as Europe/Madrid") from None
    return value


TimeZone = Annotated[str, Field(max_length=64), AfterValidator(check_timezone)]


def check_attributes(values: dict[str, Any]) -> dict[str, Any]:
    if len(values) > MAX_ATTRIBUTES:
        raise ValueError(f"at most {MAX_ATTRIBUTES} attributes per customer, not {len(values)}")
    for name, value in values.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name):
            raise ValueError(f"attribute name {name!r} must be letters, digits and _")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"attribute {name}: {value} is not a number that can be stored")
        if isinstance(value, str) and len(value) > MAX_ATTRIBUTE_TEXT:
            raise ValueError(
                f"attribute {name}: text of {len(value)} characters; at most {MAX_ATTRIBUTE_TEXT}"
            )
    return values


def no_control_characters(value: str) -> str:
    """Free text (names, notes) may not carry control characters other than newlines."""
    bad = next((c for c in value if (ord(c) < 32 and c not in "\n\t") or ord(c) == 127), None)
    if bad is not None:
        raise ValueError(f"control character {bad!r} is not allowed here")
    return value


def single_line(value: str) -> str:
    """Names and sources: one line of text, no control characters at all."""
    bad = next((c for c in value if ord(c) < 32 or 127 <= ord(c) < 160), None)
    if bad is not None:
        raise ValueError(f"control character {bad!r} is not allowed here (one line of text)")
    return value


Name = Annotated[str, Field(max_length=128), AfterValidator(single_line)]
Text = Annotated[str, Field(max_length=2000), AfterValidator(no_control_characters)]


class CustomerIn(BaseModel):
    """A customer as a marketer or a sign-up form gives it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    external_id: ExternalId
    first_name: Name = ""
    last_name: Name = ""
    email: str | None = Field(None, max_length=320, examples=["lucia@example.com"])
    phone: str | None = Field(None, max_length=32, description="E.164, e.g. +34600123456")
    locale: str = Field("en", max_length=35)
    timezone: TimeZone = "UTC"
    birthday: date | None = None
    signup_date: date | None = None
    preferred_channel: Literal["email", "sms"] | None = None
    email_consent: bool = False
    sms_consent: bool = False
    consent_source: Name = "import"
    attributes: Annotated[dict[str, float | int | str], AfterValidator(check_attributes)] = Field(
        default_factory=dict
    )

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        return check_email(v)

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
