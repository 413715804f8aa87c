"""``POST /events``: sign-ups, responses, purchases, complaints and profile changes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from api.deps import Authorised, SettingsDep, temporal_client
from api.models import (
    EventAccepted,
    SignupAccepted,
    errors,
)
from clientela.customers import realtime
from clientela.customers.records import (
    UnknownCustomer,
    upsert_customer,
)
from clientela.db import session_scope
from clientela.journeys import router as journey_router
from clientela.journeys.runs import signal_response, start_case, start_fulfilment
from clientela.settings import Settings
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


Event = Annotated[
    SignupEvent | ResponseEvent | PurchaseEvent | ComplaintEvent | ProfileEvent,
    Field(discriminator="type"),
]


#: The ``type`` of every event (pydantic names it in an error's location; clients do not).
EVENT_TYPES = {
    "signup",
    "profile",
    "purchase",
    "complaint",
    *ResponseEvent.model_fields["type"].annotation.__args__,  # type: ignore[union-attr]
}


router = APIRouter(tags=["events"])


@router.post(
    "/events",
    status_code=202,
    dependencies=Authorised,
    response_model=SignupAccepted | EventAccepted,
    responses=errors(400, 401, 404, 413, 503),
)
async def events(settings: SettingsDep, event: Event, request: Request) -> dict[str, Any]:
    # Connect only once the body is valid: bad input is a 422 even while Temporal is down.
    client = await temporal_client(request)
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
