"""``POST /events``: sign-ups, responses, purchases, complaints and profile changes."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlmodel import select

from api.deps import Authorised, SettingsDep, temporal_client
from api.models import (
    EventAccepted,
    SignupAccepted,
    TrackAccepted,
    errors,
)
from clientela import metrics
from clientela.customers import realtime
from clientela.customers.records import (
    UnknownCustomer,
    get_customer,
    record_interaction,
    upsert_customer,
)
from clientela.db import session_scope
from clientela.journeys import router as journey_router
from clientela.journeys.runs import signal_response, start_case, start_fulfilment
from clientela.settings import Settings
from clientela.timeutil import as_utc
from models import Direction, Interaction
from models.schemas import CustomerIn, ExternalId, Name, Text


class SignupEvent(CustomerIn):
    """A new customer signed up: create or update the record and welcome them."""

    type: Literal["signup"]
    consent_source: Name = "signup"


class ResponseEvent(BaseModel):
    """A customer responded to a message: opened, clicked, visited, replied or converted.

    With ``campaign`` it counts in that campaign's report (inside its response window);
    a conversion carries its ``value``.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["open", "click", "visit", "reply", "response", "conversion"]
    customer_id: ExternalId
    channel: Literal["email", "sms", "web", "phone", "store"] = "email"
    journey: str | None = Field(None, pattern=r"^[a-z][a-z0-9_]{0,47}$")
    campaign: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    value: Decimal | None = Field(None, ge=0, max_digits=14, decimal_places=2)


class PurchaseEvent(BaseModel):
    """A purchase: recorded on the customer, whose tier is decided again at once."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["purchase"]
    customer_id: ExternalId
    amount: Decimal = Field(gt=0, max_digits=14, decimal_places=2, description="more than 0")
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    product: Name = ""
    at: datetime | None = None


class ComplaintEvent(BaseModel):
    """A coded complaint: opened with a due time from the customer's tier."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["complaint"]
    customer_id: ExternalId
    code: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    description: Text = ""
    channel: Literal["email", "sms", "web", "phone", "store"] | None = Field(
        None, description="where it came in; the acknowledgement goes back on it if it can"
    )


class ProfileEvent(CustomerIn):
    """A change of profile (or consent): the record is updated and decided again."""

    type: Literal["profile"]
    consent_source: Name = "profile"


#: A custom event's name (Segment's ``event``): letters, digits, spaces and ``_ . : -``.
CUSTOM_EVENT = r"^[A-Za-z][A-Za-z0-9 _.:-]{0,63}$"
#: The largest ``properties`` or ``traits`` object read, as JSON.
MAX_PROPERTIES = 16_384


class _Segment(BaseModel):
    """The fields of the Segment spec's common envelope Clientela reads; the others
    (``context``, ``integrations``, ``sentAt``, ...) are accepted and ignored, so that a
    pipeline can post its messages unchanged."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    user_id: ExternalId = Field(
        alias="userId", description="the customer's id (an anonymousId alone is not enough)"
    )
    message_id: str | None = Field(
        None,
        alias="messageId",
        max_length=100,
        pattern=r"^[\x21-\x7e]+$",
        description="the pipeline's id of this message: one posted again changes nothing",
    )
    timestamp: datetime | None = None


class TrackEvent(_Segment):
    """Something the customer did, with its properties (Segment's ``track``): recorded in
    their history, it starts the journeys triggered by it and reaches the running journeys
    waiting for it; journeys and their templates read its properties."""

    type: Literal["track"]
    event: str = Field(pattern=CUSTOM_EVENT, description="e.g. cart_abandoned, Order Completed")
    properties: dict[str, Any] = Field(default_factory=dict)

    @field_validator("properties")
    @classmethod
    def _small(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _bounded(value, "properties")


class IdentifyEvent(_Segment):
    """Who the customer is (Segment's ``identify``): ``traits`` update the profile
    (``email``, ``phone``, ``firstName``, ``lastName``, ``birthday``, ``locale``,
    ``timezone``); other traits with a text, number or true/false value become attributes."""

    type: Literal["identify"]
    traits: dict[str, Any] = Field(default_factory=dict)

    @field_validator("traits")
    @classmethod
    def _small(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _bounded(value, "traits")


def _bounded(value: dict[str, Any], name: str) -> dict[str, Any]:
    import json

    size = len(json.dumps(value, default=str))
    if size > MAX_PROPERTIES:
        raise ValueError(f"{name} is {size} bytes as JSON; at most {MAX_PROPERTIES}")
    return value


#: Segment's reserved traits and the profile fields they fill.
TRAITS = {
    "email": "email",
    "phone": "phone",
    "firstName": "first_name",
    "first_name": "first_name",
    "lastName": "last_name",
    "last_name": "last_name",
    "birthday": "birthday",
    "locale": "locale",
    "timezone": "timezone",
}


Event = Annotated[
    SignupEvent
    | ResponseEvent
    | PurchaseEvent
    | ComplaintEvent
    | ProfileEvent
    | TrackEvent
    | IdentifyEvent,
    Field(discriminator="type"),
]


#: The ``type`` of every event (pydantic names it in an error's location; clients do not).
EVENT_TYPES = {
    "signup",
    "profile",
    "track",
    "identify",
    "purchase",
    "complaint",
    *ResponseEvent.model_fields["type"].annotation.__args__,  # type: ignore[union-attr]
}


router = APIRouter(tags=["events"])


@router.post(
    "/events",
    status_code=202,
    dependencies=Authorised,
    response_model=SignupAccepted | EventAccepted | TrackAccepted,
    responses=errors(400, 401, 404, 413, 503),
)
async def events(settings: SettingsDep, event: Event, request: Request) -> dict[str, Any]:
    accepted = await _accept(settings, event, request)
    metrics.EVENTS.labels(type=event.type).inc()
    return accepted


async def _accept(settings: Settings, event: Event, request: Request) -> dict[str, Any]:
    # Connect only once the body is valid: bad input is a 422 even while Temporal is down.
    client = await temporal_client(request)
    if isinstance(event, IdentifyEvent):
        event = _as_profile(event)
    if isinstance(event, TrackEvent):
        try:
            tracked = await asyncio.to_thread(_track, settings, event)
        except UnknownCustomer as exc:
            raise HTTPException(
                404, f"userId: {exc} (identify the customer first, or post a signup)"
            ) from None
        waiting: list[str] = []
        if not tracked.duplicate:  # the running journeys waiting for it, or branching on it
            waiting = await journey_router.signal_event(
                client, settings, event.user_id, event.event, "web"
            )
        entries = await journey_router.release(client, settings, tracked.held)
        return {
            "customer_id": event.user_id,
            "event": event.event,
            "recorded": not tracked.duplicate,
            "duplicate": tracked.duplicate,
            "journeys_told": waiting,
            "journeys": [e.as_dict() for e in entries],
        }
    if isinstance(event, PurchaseEvent | ComplaintEvent | ProfileEvent):
        try:
            decided, held = await asyncio.to_thread(_realtime, settings, event)
        except UnknownCustomer as exc:
            raise HTTPException(404, f"customer_id: {exc}") from None
        if decided.case is not None:  # the case is recorded: its clock starts (once)
            await start_case(client, settings, *decided.case)
        told: list[str] = []
        if isinstance(event, PurchaseEvent):  # journeys waiting for a purchase
            told = await journey_router.signal_event(
                client, settings, event.customer_id, event.type, "store"
            )
        entries = await journey_router.release(client, settings, held)
        return {
            **decided.as_dict(),
            "journeys_told": told,
            "journeys": [e.as_dict() for e in entries],
        }
    if isinstance(event, SignupEvent):
        fields = event.model_dump(exclude={"type"}, exclude_unset=True)
        fields["consent_source"] = event.consent_source
        data = CustomerIn.model_validate(fields)
        created, held = await asyncio.to_thread(_upsert, settings, data)
        entries = await journey_router.release(client, settings, held)
        return {
            "customer_id": data.external_id,
            "created": created,
            "journeys": [e.as_dict() for e in entries],
        }
    try:
        outcome, order, held = await asyncio.to_thread(_record_response, settings, event)
    except UnknownCustomer as exc:
        raise HTTPException(404, f"customer_id: {exc}") from None
    except realtime.UnknownCampaign as exc:
        raise HTTPException(404, f"campaign: {exc}") from None
    # What the customer did reaches the journeys they are in (and a welcome of old).
    told = await journey_router.signal_event(
        client, settings, event.customer_id, event.type, event.channel
    )
    if await signal_response(client, event.customer_id, event.type, event.channel):
        told.append(f"welcome-{event.customer_id}")
    entries = await journey_router.release(client, settings, held)
    fulfilment = None
    if order is not None:  # the order is recorded: its fulfilment starts (once)
        fulfilment = await start_fulfilment(client, settings, *order)
    return {
        **outcome.as_dict(),
        "recorded": True,
        "journeys_told": told,
        "journeys": [e.as_dict() for e in entries],
        "fulfilment": fulfilment,
    }


# Each intake records what happened and, in the same transaction, the journey entries it
# causes (``journey_router.hold``); the handler starts them once it has committed.


def _upsert(settings: Settings, data: CustomerIn) -> tuple[bool, list[int]]:
    with session_scope(settings.db_url) as session:
        _, created = upsert_customer(session=session, data=data)
        signup = journey_router.Happening(kind="event", event="signup", key="signup")
        return created, journey_router.hold(session, settings, data.external_id, [signup])


def _record_response(
    settings: Settings, event: ResponseEvent
) -> tuple[realtime.Outcome, tuple[int, str] | None, list[int]]:
    with session_scope(settings.db_url) as session:
        outcome, order = realtime.response(
            session,
            customer_id=event.customer_id,
            kind=event.type,
            channel=event.channel,
            journey=event.journey,
            campaign=event.campaign,
            value=event.value,
            today=datetime.now(UTC).date(),
        )
        placed = (order.id, order.uid) if order is not None and order.id is not None else None
        return outcome, placed, journey_router.hold_outcome(session, settings, outcome, event.type)


def _realtime(
    settings: Settings, event: PurchaseEvent | ComplaintEvent | ProfileEvent
) -> tuple[realtime.Outcome, list[int]]:
    today = datetime.now(UTC).date()
    with session_scope(settings.db_url) as session:
        if isinstance(event, PurchaseEvent):
            outcome = realtime.purchase(
                session,
                customer_id=event.customer_id,
                amount=event.amount,
                currency=event.currency,
                product=event.product,
                at=event.at,
                today=today,
            )
        elif isinstance(event, ComplaintEvent):
            outcome = realtime.complaint(
                session,
                customer_id=event.customer_id,
                code=event.code,
                description=event.description,
                channel=event.channel or "",
                today=today,
                time_scale=settings.journey_time_scale,
            )
        else:
            fields = event.model_dump(exclude={"type"}, exclude_unset=True)
            fields["consent_source"] = event.consent_source
            outcome = realtime.profile(session, data=CustomerIn.model_validate(fields), today=today)
        kind = None if isinstance(event, ProfileEvent) else event.type
        return outcome, journey_router.hold_outcome(session, settings, outcome, kind)


def _as_profile(event: IdentifyEvent) -> ProfileEvent:
    """An identify as a profile change: reserved traits fill profile fields, the rest with
    a plain value become attributes (each checked as a profile or attribute is)."""
    fields: dict[str, Any] = {"type": "profile", "external_id": event.user_id}
    attributes: dict[str, Any] = {}
    for name, value in event.traits.items():
        if name in TRAITS:
            fields[TRAITS[name]] = value
        elif isinstance(value, str | int | float | bool) and re.fullmatch(
            r"[A-Za-z_][A-Za-z0-9_]{0,63}", name
        ):
            attributes[name] = value
    if attributes:
        fields["attributes"] = attributes
    fields["consent_source"] = "identify"
    try:
        return ProfileEvent.model_validate(fields)
    except ValidationError as exc:
        raise RequestValidationError(
            [
                {**e, "loc": ("body", "traits", *[_trait(str(p)) for p in e["loc"]])}
                for e in exc.errors()
            ]
        ) from None


def _trait(field: str) -> str:
    return next((trait for trait, f in TRAITS.items() if f == field), field)


@dataclass
class Tracked:
    duplicate: bool = False
    held: list[int] = dataclass_field(default_factory=list)


def _track(settings: Settings, event: TrackEvent) -> Tracked:
    """Record the event once (by its messageId) and hold the journeys it starts (released
    once this commits)."""
    with session_scope(settings.db_url) as session:
        customer = get_customer(session=session, external_id=event.user_id)
        assert customer.id is not None
        key = f"track:{event.message_id}" if event.message_id else None
        if (
            key is not None
            and session.exec(select(Interaction.id).where(Interaction.message_key == key)).first()
            is not None
        ):
            return Tracked(duplicate=True)
        row = record_interaction(
            session=session,
            customer_id=customer.id,
            channel="web",
            direction=Direction.inbound,
            kind="track",
            outcome=event.event,
            message_key=key,
            detail={"event": event.event, "properties": event.properties},
        )
        if event.timestamp is not None:  # when it happened, as the pipeline says (UTC if naive)
            row.occurred_at = as_utc(event.timestamp) or row.occurred_at
        session.flush()
        happening = journey_router.Happening(
            kind="event",
            event=event.event,
            key=event.message_id or f"t{row.id}",
            data={"properties": event.properties},
        )
        held = journey_router.hold(session, settings, customer.external_id, [happening])
        return Tracked(held=held)
