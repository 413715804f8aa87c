"""Campaign data made elsewhere: who was in which arm or control group, and their responses."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlmodel import Session, col, select

from clientela.tables import RowError, read_rows, validated
from clientela.timeutil import utcnow
from models import Campaign, CampaignMember, Customer, Direction, Interaction
from models.schemas import ExternalId

BATCH = 2000
Row = TypeVar("Row")


class MemberRow(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    customer_id: ExternalId
    arm: str = Field("", max_length=64, description="'' for a control shared by every arm")
    group: Literal["treated", "control"]
    variant: str = Field("", max_length=64)

    @model_validator(mode="after")
    def _treated_have_an_arm(self) -> MemberRow:
        if self.group == "treated" and not self.arm:
            raise ValueError("a treated customer needs an arm")
        return self


class EventRow(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    type: Literal["open", "click", "visit", "reply", "conversion", "unsubscribe"]
    customer_id: ExternalId
    event_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@+\-]{0,127}$",
        description="the source's id of the event: the same id is recorded once",
    )
    campaign: str | None = Field(None, max_length=64)
    channel: Literal["email", "sms", "web", "phone", "store"] = "email"
    value: Decimal | None = Field(None, ge=0, max_digits=14, decimal_places=2)
    at: datetime | None = None


@dataclass
class Imported:
    imported: int = 0
    skipped: int = 0  # already there (the same row imported before)
    errors: list[RowError] = field(default_factory=list)


def _in_batches(
    rows: Iterator[tuple[int, Row | RowError]],
    result: Imported,
    batch: list[tuple[int, Row]],
    flush: Callable[[], None],
) -> None:
    """Collect good rows into ``batch`` and flush every BATCH of them; errors are kept."""
    for line, row in rows:
        if isinstance(row, RowError):
            result.errors.append(row)
            continue
        batch.append((line, row))
        if len(batch) >= BATCH:
            flush()
    if batch:
        flush()


def _ids(session: Session, external_ids: set[str]) -> dict[str, int]:
    rows = session.exec(
        select(Customer.external_id, Customer.id).where(col(Customer.external_id).in_(external_ids))
    ).all()
    return {e: i for e, i in rows if i is not None}


def import_members(session: Session, *, campaign_id: str, path: Path) -> Imported:
    """Arms and control groups as given; a customer already in the campaign is updated."""
    if session.get(Campaign, campaign_id) is None:
        raise LookupError(f"no campaign {campaign_id!r}")
    result = Imported()
    rows = validated(
        path,
        read_rows(path, columns=set(MemberRow.model_fields), required={"customer_id", "group"}),
        MemberRow,
    )
    batch: list[tuple[int, MemberRow]] = []

    def flush() -> None:
        ids = _ids(session, {r.customer_id for _, r in batch})
        existing = {
            m.customer_id: m
            for m in session.exec(
                select(CampaignMember).where(
                    CampaignMember.campaign_id == campaign_id,
                    col(CampaignMember.customer_id).in_(list(ids.values())),
                )
            ).all()
        }
        fresh: dict[int, dict[str, Any]] = {}
        for line, r in batch:
            pk = ids.get(r.customer_id)
            if pk is None:
                result.errors.append(
                    RowError(str(path), line, "customer_id", f"no customer {r.customer_id!r}")
                )
                continue
            member = existing.get(pk)
            if member is not None:
                member.arm, member.group, member.variant = r.arm, r.group, r.variant
                session.add(member)
            else:
                fresh[pk] = {
                    "campaign_id": campaign_id,
                    "customer_id": pk,
                    "arm": r.arm,
                    "group": r.group,
                    "variant": r.variant,
                    "channel": "",
                    "address": "",
                    "excluded": "",
                    "pilot": False,
                    "tier": "",
                    "segments": [],
                    "draw": 0,
                }
            result.imported += 1
        if fresh:  # plain rows: building ORM objects costs more than writing them
            table = CampaignMember.__table__  # type: ignore[attr-defined]
            session.connection().execute(table.insert(), list(fresh.values()))
        session.commit()
        batch.clear()

    _in_batches(rows, result, batch, flush)
    return result


def _event_key(row: EventRow, occurrence: int) -> str:
    """What makes an imported event the same one again.

    With an ``event_id``, that id: the same id is one event, in whatever file it comes.
    Without one, the row's content and how many identical rows came before it in the file:
    two identical purchases in one file are two purchases, and importing the file again
    records neither a second time.
    """
    if row.event_id:
        return f"event:{row.event_id}"
    canonical = json.dumps(row.model_dump(mode="json", exclude={"event_id"}), sort_keys=True)
    if occurrence > 1:  # (the first keeps the key of versions before event ids)
        canonical += f"#{occurrence}"
    return "event:" + hashlib.sha256(canonical.encode()).hexdigest()[:40]


def import_events(session: Session, *, path: Path) -> Imported:
    """Responses recorded against customers (and campaigns), idempotently."""
    result = Imported()
    rows = validated(
        path,
        read_rows(path, columns=set(EventRow.model_fields), required={"type", "customer_id"}),
        EventRow,
    )
    campaigns = set(session.exec(select(Campaign.id)).all())
    batch: list[tuple[int, EventRow]] = []
    occurrences: Counter[str] = Counter()  # identical rows so far in this file

    def flush() -> None:
        ids = _ids(session, {r.customer_id for _, r in batch})
        keys: dict[str, tuple[int, EventRow]] = {}
        for line, r in batch:
            canonical = r.model_dump_json(exclude={"event_id"})
            occurrences[canonical] += 1
            key = _event_key(r, occurrences[canonical])
            if key in keys:  # the same event_id twice in the file
                result.skipped += 1
                continue
            keys[key] = (line, r)
        seen = set(
            session.exec(
                select(Interaction.message_key).where(col(Interaction.message_key).in_(list(keys)))
            ).all()
        )
        fresh: list[dict[str, Any]] = []
        now = utcnow()
        for key, (line, r) in keys.items():
            if key in seen:
                result.skipped += 1
                continue
            pk = ids.get(r.customer_id)
            if pk is None:
                result.errors.append(
                    RowError(str(path), line, "customer_id", f"no customer {r.customer_id!r}")
                )
                continue
            if r.campaign is not None and r.campaign not in campaigns:
                result.errors.append(
                    RowError(str(path), line, "campaign", f"no campaign {r.campaign!r}")
                )
                continue
            fresh.append(
                {
                    "customer_id": pk,
                    "channel": r.channel,
                    "direction": Direction.inbound.value,
                    "kind": r.type,
                    "outcome": "responded",
                    "journey": None,
                    "campaign": r.campaign,
                    "message_key": key,
                    "detail": {} if r.value is None else {"value": float(r.value)},
                    "occurred_at": r.at or now,
                }
            )
            result.imported += 1
        if fresh:
            table = Interaction.__table__  # type: ignore[attr-defined]
            session.connection().execute(table.insert(), fresh)
        session.commit()
        batch.clear()

    _in_batches(rows, result, batch, flush)
    return result
