"""Customer data functions: create or update, import files, the single customer view."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlmodel import Session, col, select

from clientela.timeutil import as_utc, utcnow
from models import (
    Channel,
    Complaint,
    Consent,
    Customer,
    CustomerDecision,
    Direction,
    Interaction,
    Message,
    RuleVersion,
    Suppression,
    Transaction,
)
from models.schemas import CustomerIn
from rules.service import tier_history

PROFILE_FIELDS = (
    "first_name",
    "last_name",
    "email",
    "phone",
    "locale",
    "timezone",
    "birthday",
    "signup_date",
    "preferred_channel",
)
ATTRIBUTE_PREFIX = "attr_"


class UnknownCustomer(LookupError):
    def __init__(self, external_id: str) -> None:
        super().__init__(f"no customer with id {external_id!r}")
        self.external_id = external_id


def get_customer(*, session: Session, external_id: str) -> Customer:
    customer = session.exec(select(Customer).where(Customer.external_id == external_id)).first()
    if customer is None:
        raise UnknownCustomer(external_id)
    return customer


def upsert_customer(*, session: Session, data: CustomerIn) -> tuple[Customer, bool]:
    """Create the customer or update the fields given; returns (customer, created)."""
    customer = session.exec(
        select(Customer).where(Customer.external_id == data.external_id)
    ).first()
    created = customer is None
    if customer is None:
        customer = Customer(external_id=data.external_id)
    given = data.model_fields_set
    for name in PROFILE_FIELDS:
        if created or name in given:
            setattr(customer, name, getattr(data, name))
    if data.attributes:
        customer.attributes = {**customer.attributes, **data.attributes}
    customer.updated_at = utcnow()
    session.add(customer)
    session.flush()
    assert customer.id is not None
    for channel, flag in ((Channel.email, "email_consent"), (Channel.sms, "sms_consent")):
        if created or flag in given:
            set_consent(
                session=session,
                customer_id=customer.id,
                channel=channel,
                granted=getattr(data, flag),
                source=data.consent_source,
            )
    return customer, created


def set_consent(
    *, session: Session, customer_id: int, channel: str, granted: bool, source: str
) -> bool:
    """Record consent for a channel; returns True when it changed (the change is logged)."""
    row = session.exec(
        select(Consent).where(Consent.customer_id == customer_id, Consent.channel == channel)
    ).first()
    if row is not None and row.granted == granted:
        return False
    first = row is None
    if row is None:
        row = Consent(customer_id=customer_id, channel=channel, granted=granted, source=source)
    else:
        row.granted, row.source, row.recorded_at = granted, source, utcnow()
    session.add(row)
    if first and not granted:
        return True  # never asked is not a withdrawal: nothing to log
    session.add(
        Interaction(
            customer_id=customer_id,
            channel=channel,
            direction=Direction.inbound,
            kind="consent",
            outcome="granted" if granted else "withdrawn",
            detail={"source": source},
        )
    )
    return True


def consents(*, session: Session, customer_id: int) -> dict[str, Consent]:
    rows = session.exec(select(Consent).where(Consent.customer_id == customer_id)).all()
    return {row.channel: row for row in rows}


def suppress(*, session: Session, channel: str, address: str, reason: str) -> None:
    exists = session.exec(
        select(Suppression).where(Suppression.channel == channel, Suppression.address == address)
    ).first()
    if exists is None:
        session.add(Suppression(channel=channel, address=address, reason=reason))


def is_suppressed(*, session: Session, channel: str, address: str) -> Suppression | None:
    return session.exec(
        select(Suppression).where(Suppression.channel == channel, Suppression.address == address)
    ).first()


def record_interaction(
    *,
    session: Session,
    customer_id: int,
    channel: str,
    direction: Direction,
    kind: str,
    outcome: str = "",
    journey: str | None = None,
    campaign: str | None = None,
    message_key: str | None = None,
    detail: dict[str, Any] | None = None,
) -> Interaction:
    row = Interaction(
        customer_id=customer_id,
        channel=channel,
        direction=direction,
        kind=kind,
        outcome=outcome,
        journey=journey,
        campaign=campaign,
        message_key=message_key,
        detail=detail or {},
    )
    session.add(row)
    return row


# --- the single customer view --------------------------------------------------------------


def customer_view(*, session: Session, external_id: str, history: int = 50) -> dict[str, Any]:
    """Everything known about one customer, as plain data (for the CLI and the API)."""
    c = get_customer(session=session, external_id=external_id)
    assert c.id is not None
    interactions = session.exec(
        select(Interaction)
        .where(Interaction.customer_id == c.id)
        .order_by(col(Interaction.occurred_at).desc(), col(Interaction.id).desc())
        .limit(history)
    ).all()
    messages = session.exec(
        select(Message).where(Message.customer_id == c.id).order_by(col(Message.id))
    ).all()
    transactions = session.exec(
        select(Transaction)
        .where(Transaction.customer_id == c.id)
        .order_by(col(Transaction.occurred_at).desc())
    ).all()
    complaints = session.exec(select(Complaint).where(Complaint.customer_id == c.id)).all()
    decision = session.get(CustomerDecision, c.id)
    return {
        "profile": {
            "id": c.external_id,
            **{name: _plain(getattr(c, name)) for name in PROFILE_FIELDS},
            "tier": c.tier,
            "segments": c.segments,
            "attributes": c.attributes,
            "created_at": _plain(c.created_at),
            "updated_at": _plain(c.updated_at),
        },
        "decision": None
        if decision is None
        else {
            "tier": decision.tier,
            "tier_rule": decision.tier_rule,
            "segments": decision.segments,
            "offers": decision.offers,
            "rule_version": _version_of(session, decision.rule_version_id),
            "decided_at": _plain(decision.decided_at),
        },
        "tier_history": tier_history(session, c.id),
        "consent": {
            ch: {"granted": row.granted, "source": row.source, "at": _plain(row.recorded_at)}
            for ch, row in consents(session=session, customer_id=c.id).items()
        },
        "messages": [
            {
                "key": m.key,
                "channel": m.channel,
                "template": m.template,
                "journey": m.journey,
                "campaign": m.campaign,
                "state": m.state,
                "reason": m.reason,
                "provider_id": m.provider_id,
                "sent_at": _plain(m.sent_at),
            }
            for m in messages
        ],
        "history": [
            {
                "at": _plain(i.occurred_at),
                "channel": i.channel,
                "direction": i.direction,
                "kind": i.kind,
                "outcome": i.outcome,
                "journey": i.journey,
                "campaign": i.campaign,
            }
            for i in interactions
        ],
        "transactions": [
            {
                "at": _plain(t.occurred_at),
                "amount": str(t.amount),
                "currency": t.currency,
                "product": t.product,
            }
            for t in transactions
        ],
        "complaints": [
            {
                "code": k.code,
                "responsible": k.responsible,
                "opened_at": _plain(k.opened_at),
                "due_at": _plain(k.due_at),
                "resolved_at": _plain(k.resolved_at),
            }
            for k in complaints
        ],
    }


def _version_of(session: Session, version_id: int) -> str | None:
    version = session.get(RuleVersion, version_id)
    return version.digest[:12] if version else None


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return as_utc(value).isoformat()  # type: ignore[union-attr]
    return value.isoformat() if hasattr(value, "isoformat") else value


# --- import files --------------------------------------------------------------------------


class ImportFileError(ValueError):
    """The file cannot be imported at all (unreadable, unknown format, bad header)."""


@dataclass
class RowError:
    path: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}"
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


@dataclass
class ImportResult:
    created: int = 0
    updated: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def imported(self) -> int:
        return self.created + self.updated


KNOWN_COLUMNS = set(CustomerIn.model_fields)


def _from_csv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        unknown = [
            h for h in header if h not in KNOWN_COLUMNS and not h.startswith(ATTRIBUTE_PREFIX)
        ]
        if unknown or "external_id" not in header:
            problem = (
                f"unknown column(s) {', '.join(map(repr, unknown))}"
                if unknown
                else "missing the column 'external_id'"
            )
            raise ImportFileError(
                f"{path}:1: {problem}; columns are {', '.join(sorted(KNOWN_COLUMNS))} "
                f"and {ATTRIBUTE_PREFIX}<name> for free attributes"
            )
        line = 1
        for row in reader:
            start, line = line + 1, reader.line_num
            record: dict[str, Any] = {}
            attributes: dict[str, Any] = {}
            for key, value in row.items():
                if key is None:
                    record["__extra__"] = value
                    continue
                if value is None or value == "":
                    continue
                if key.startswith(ATTRIBUTE_PREFIX):
                    attributes[key[len(ATTRIBUTE_PREFIX) :]] = _number_or_text(value)
                else:
                    record[key] = value
            if attributes:
                record["attributes"] = attributes
            yield start, record


def _number_or_text(value: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _from_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as fh:
        for number, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                yield number, {"__json__": f"not valid JSON ({exc.msg} at column {exc.colno})"}
                continue
            if not isinstance(record, dict):
                yield number, {"__json__": "each line must be a JSON object"}
                continue
            attributes = dict(record.pop("attributes", None) or {})
            for key in [k for k in record if k.startswith(ATTRIBUTE_PREFIX)]:
                attributes[key[len(ATTRIBUTE_PREFIX) :]] = record.pop(key)
            if attributes:
                record["attributes"] = attributes
            yield number, record


def read_customer_file(path: Path) -> Iterator[tuple[int, CustomerIn | RowError]]:
    """Each row of a CSV or JSON Lines file, validated, with its line number."""
    if not path.is_file():
        raise ImportFileError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows: Iterable[tuple[int, dict[str, Any]]] = _from_csv(path)
    elif suffix in (".jsonl", ".ndjson"):
        rows = _from_jsonl(path)
    else:
        raise ImportFileError(f"{path}: unknown format {suffix!r}; use .csv or .jsonl")
    for line, record in rows:
        if "__json__" in record:
            yield line, RowError(str(path), line, "", record["__json__"])
            continue
        if "__extra__" in record:
            yield line, RowError(str(path), line, "", "more values than columns in the header")
            continue
        try:
            yield line, CustomerIn.model_validate(record)
        except ValidationError as exc:
            for err in exc.errors():
                name = ".".join(str(p) for p in err["loc"]) or "row"
                message = err["msg"].removeprefix("Value error, ")
                yield line, RowError(str(path), line, name, message)


def import_customers(*, session: Session, path: Path, batch_size: int = 500) -> ImportResult:
    """Import good rows, report every bad one; a row is written whole or not at all."""
    result = ImportResult()
    seen: dict[str, int] = {}
    good: list[CustomerIn] = []
    bad_lines: set[int] = set()
    for line, item in read_customer_file(path):
        if isinstance(item, RowError):
            result.errors.append(item)
            bad_lines.add(line)
            continue
        if line in bad_lines:
            continue
        if item.external_id in seen:
            result.errors.append(
                RowError(
                    str(path),
                    line,
                    "external_id",
                    f"{item.external_id!r} already appears on line {seen[item.external_id]}",
                )
            )
            continue
        seen[item.external_id] = line
        good.append(item)
    for start in range(0, len(good), batch_size):
        for data in good[start : start + batch_size]:
            _, created = upsert_customer(session=session, data=data)
            if created:
                result.created += 1
            else:
                result.updated += 1
        session.commit()
    return result
