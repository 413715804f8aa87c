"""FastAPI application: ``POST /events`` takes sign-ups and responses; customers can be read."""

import asyncio
import html
import logging
import re
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from sqlmodel import Session, col, select
from temporalio.client import Client
from twilio.request_validator import RequestValidator

from api.limits import BodyLimit, validation_error
from clientela import complaints, journey_router, realtime
from clientela.campaigns import html as report_html
from clientela.campaigns.report import UnknownCampaign
from clientela.campaigns.report import build as build_report
from clientela.customers import (
    UnknownCustomer,
    customer_view,
    get_customer,
    record_interaction,
    set_consent,
    upsert_customer,
)
from clientela.db import get_engine, session_scope
from clientela.delivery import UnknownStatus, record_sms_status
from clientela.journeys import signal_response, start_case, start_fulfilment, tell_case
from clientela.service import report as service_report
from clientela.settings import STATUS_CALLBACK_PATH, Settings, load_settings
from clientela.temporal import connect
from clientela.unsubscribe import BadToken, read_survey_token, read_token
from models import Complaint, Direction, Order
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


class CaseResponse(BaseModel):
    """The responsible answered the customer (the first answer counts for the service level)."""

    model_config = ConfigDict(extra="forbid")

    by: Annotated[Name, Field(min_length=1)]
    note: Text = ""


class CaseResolution(BaseModel):
    model_config = ConfigDict(extra="forbid")

    by: Annotated[Name, Field(min_length=1)]
    resolution: Text = ""


class CaseRating(BaseModel):
    """The customer's satisfaction with the handling: 1 (very unhappy) to 5 (very happy)."""

    model_config = ConfigDict(extra="forbid")

    score: int = Field(ge=1, le=5)
    comment: Text = ""


class ProfileEvent(CustomerIn):
    """A change of profile (or consent): the record is updated and decided again."""

    type: Literal["profile"]
    consent_source: Name = "profile"


Event = Annotated[
    SignupEvent | ResponseEvent | PurchaseEvent | ComplaintEvent | ProfileEvent,
    Field(discriminator="type"),
]


#: A complaint case's number, as the database can hold it.
CaseId = Annotated[int, Path(ge=1, le=2**63 - 1, description="the case number")]

#: The ``type`` of every event (pydantic names it in an error's location; clients do not).
EVENT_TYPES = {
    "signup",
    "profile",
    "purchase",
    "complaint",
    *ResponseEvent.model_fields["type"].annotation.__args__,  # type: ignore[union-attr]
}

bearer = HTTPBearer(auto_error=False)


async def require_api_key(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """With CLIENTELA_API_KEY set, every call needs ``Authorization: Bearer <key>``."""
    expected = request.app.state.settings.api_key
    if not expected:
        return
    given = credentials.credentials if credentials else ""
    if not secrets.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            401, "a valid API key is required: Authorization: Bearer <CLIENTELA_API_KEY>"
        )


Authorised = [Depends(require_api_key)]


async def temporal_client(request: Request) -> Client:
    """The app's Temporal client, connected on first use; 503 while Temporal is down."""
    return await _client_of(request.app)


async def _client_of(app: FastAPI) -> Client:
    state = app.state
    if state.client is None:
        async with state.client_lock:
            if state.client is None:
                try:
                    state.client = await connect(state.settings)
                except ConnectionError as exc:
                    raise HTTPException(503, str(exc)) from None
    return state.client


def create_app(settings: Settings | None = None, client: Client | None = None) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(get_engine, settings.db_url)
        sweeper = asyncio.create_task(_sweep(app))
        yield
        sweeper.cancel()

    app = FastAPI(title="Clientela", version="0.1.0", lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.state.union_tags = EVENT_TYPES
    app.state.settings = settings
    app.state.client = client
    app.state.client_lock = asyncio.Lock()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/events", status_code=202, dependencies=Authorised)
    async def events(event: Event, request: Request) -> dict[str, Any]:
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

    @app.post("/webhooks/twilio/status", status_code=204)
    async def twilio_status(request: Request) -> Response:
        """Twilio's status callback: signed with the account's auth token."""
        params = await _form(request)
        url = f"{settings.recipient_base_url}{STATUS_CALLBACK_PATH}"
        token = settings.twilio_credentials[1]
        signature = request.headers.get("X-Twilio-Signature", "")
        if not RequestValidator(token).validate(url, params, signature):
            raise HTTPException(403, "X-Twilio-Signature does not match this request")
        sid, status = params.get("MessageSid", ""), params.get("MessageStatus", "")
        if not sid or not status:
            raise HTTPException(422, "MessageSid and MessageStatus are required")
        code = params.get("ErrorCode", "")
        if code and not re.fullmatch(r"[0-9]{1,9}", code):
            raise HTTPException(422, f"ErrorCode: {code[:20]!r} is not a Twilio error number")
        try:
            await asyncio.to_thread(
                _record_status, settings, sid, status, int(code) if code else None
            )
        except UnknownStatus as exc:
            raise HTTPException(422, f"MessageStatus: {exc}") from None
        return Response(status_code=204)

    @app.get("/u/{token}", response_class=HTMLResponse)
    async def unsubscribe_page(token: str) -> HTMLResponse:
        """What an unsubscribe link opens: one button, so that link scanners change nothing."""
        try:
            read_token(settings, token)
        except BadToken as exc:
            return HTMLResponse(_page(str(exc)), status_code=404)
        return HTMLResponse(
            _page(
                "Do you want to stop receiving these messages?"
                f'<form method="post" action="/u/{html.escape(token)}">'
                '<button type="submit">Unsubscribe</button></form>'
            )
        )

    @app.post("/u/{token}", response_class=HTMLResponse)
    async def unsubscribe(token: str) -> HTMLResponse:
        """Withdraw consent for the channel (also RFC 8058 one-click, from mail clients)."""
        try:
            customer_id, channel, campaign = read_token(settings, token)
            await asyncio.to_thread(_unsubscribe, settings, customer_id, channel, campaign)
        except (BadToken, UnknownCustomer):
            return HTMLResponse(_page("This unsubscribe link is not valid."), status_code=404)
        return HTMLResponse(_page("You are unsubscribed. You will not receive these messages."))

    @app.get("/campaigns/{campaign_id}/report", dependencies=Authorised)
    async def campaign_report(campaign_id: str) -> dict[str, Any]:
        """The campaign report (the documented JSON of `clientela campaign report --json`)."""
        return await _report(settings, campaign_id)

    @app.get(
        "/campaigns/{campaign_id}/report.html",
        dependencies=Authorised,
        response_class=HTMLResponse,
    )
    async def campaign_report_page(campaign_id: str) -> HTMLResponse:
        """The report page with its charts, as of now."""
        return HTMLResponse(report_html.render(await _report(settings, campaign_id)))

    @app.get("/customers/{customer_id}", dependencies=Authorised)
    async def customer(customer_id: ExternalId) -> dict[str, Any]:
        try:
            return await asyncio.to_thread(_view, settings, customer_id)
        except UnknownCustomer as exc:
            raise HTTPException(404, str(exc)) from None

    @app.get("/complaints", dependencies=Authorised)
    async def complaint_list(
        state: Literal["open", "responded", "resolved", "closed", "unresolved"] | None = None,
        customer_id: ExternalId | None = None,
        limit: Annotated[int, Query(ge=1, le=1000, description="at most this many cases")] = 100,
    ) -> list[dict[str, Any]]:
        """Complaint cases, newest first; ``state=unresolved`` for open and answered ones."""
        try:
            return await asyncio.to_thread(_cases, settings, state, customer_id, limit)
        except UnknownCustomer as exc:
            raise HTTPException(404, f"customer_id: {exc}") from None

    @app.get("/complaints/{complaint_id}", dependencies=Authorised)
    async def complaint_case(complaint_id: CaseId) -> dict[str, Any]:
        return await _case_change(settings, complaint_id, None)

    @app.post("/complaints/{complaint_id}/response", dependencies=Authorised)
    async def complaint_response(
        complaint_id: CaseId, body: CaseResponse, request: Request
    ) -> dict[str, Any]:
        """Record the first answer to the customer; the case's reminders stop."""
        change = partial(complaints.respond, complaint_id=complaint_id, by=body.by, note=body.note)
        return await _case_change(settings, complaint_id, change, request)

    @app.post("/complaints/{complaint_id}/resolution", dependencies=Authorised)
    async def complaint_resolution(
        complaint_id: CaseId, body: CaseResolution, request: Request
    ) -> dict[str, Any]:
        """Resolve the case; the customer is asked for a satisfaction score."""
        change = partial(
            complaints.resolve, complaint_id=complaint_id, by=body.by, resolution=body.resolution
        )
        return await _case_change(settings, complaint_id, change, request)

    @app.post("/complaints/{complaint_id}/satisfaction", dependencies=Authorised)
    async def complaint_satisfaction(
        complaint_id: CaseId, body: CaseRating, request: Request
    ) -> dict[str, Any]:
        """The customer's score, taken by another channel (a call, a form of your own)."""
        change = partial(
            complaints.rate, complaint_id=complaint_id, score=body.score, comment=body.comment
        )
        return await _case_change(settings, complaint_id, change, request)

    @app.get("/s/{token}", response_class=HTMLResponse)
    async def survey_page(token: str, score: int | None = None) -> HTMLResponse:
        """What a survey link opens: the score to confirm, so that link scanners rate nothing."""
        try:
            complaint_id = read_survey_token(settings, token)
        except BadToken as exc:
            return HTMLResponse(_page(str(exc)), status_code=404)
        return HTMLResponse(_page(_survey_form(token, complaint_id, score)))

    @app.post("/s/{token}", response_class=HTMLResponse)
    async def survey_answer(token: str, request: Request) -> HTMLResponse:
        try:
            complaint_id = read_survey_token(settings, token)
        except BadToken as exc:
            return HTMLResponse(_page(str(exc)), status_code=404)
        form = await _form(request)
        raw = form.get("score", "")
        if raw not in ("1", "2", "3", "4", "5"):
            return HTMLResponse(_page(_survey_form(token, complaint_id, None)), status_code=422)
        change = partial(
            complaints.rate,
            complaint_id=complaint_id,
            score=int(raw),
            comment=form.get("comment", "")[:2000],
        )
        try:
            await _case_change(settings, complaint_id, change, request)
        except HTTPException as exc:
            if exc.status_code == 409:
                return HTMLResponse(_page("You have answered already. Thank you."))
            raise
        return HTMLResponse(_page("Thank you for telling us."))

    @app.get("/service/report", dependencies=Authorised)
    async def service_report_json(since: datetime | None = None) -> dict[str, Any]:
        """Service indicators (the JSON of `clientela service report --json`)."""
        return await asyncio.to_thread(_service_report, settings, since)

    @app.get("/service/report.html", dependencies=Authorised, response_class=HTMLResponse)
    async def service_report_page(since: datetime | None = None) -> HTMLResponse:
        data = await asyncio.to_thread(_service_report, settings, since)
        return HTMLResponse(service_report.render_html(data))

    return app


def _cases(
    settings: Settings, state: str | None, customer_id: str | None, limit: int
) -> list[dict[str, Any]]:
    with session_scope(settings.db_url) as session:
        return complaints.list_cases(session, state=state, customer_id=customer_id, limit=limit)


async def _case_change(
    settings: Settings,
    complaint_id: int,
    change: Callable[[Any], Complaint] | None,
    request: Request | None = None,
) -> dict[str, Any]:
    """Apply a change to a case (or only read it), then wake its workflow."""
    try:
        case, uid = await asyncio.to_thread(complaints.apply, settings.db_url, complaint_id, change)
    except complaints.UnknownComplaint as exc:
        raise HTTPException(404, str(exc)) from None
    except complaints.CaseConflict as exc:
        raise HTTPException(409, str(exc)) from None
    if change is not None and request is not None:
        try:
            client = await _client_of(request.app)
            case["workflow_told"] = await tell_case(client, complaint_id, uid)
        except HTTPException:  # recorded; the workflow reads it at its next deadline
            case["workflow_told"] = False
    return case


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body; 400 unless it is UTF-8 throughout."""
    try:
        body = (await request.body()).decode("utf-8")
        return dict(parse_qsl(body, keep_blank_values=True, errors="strict", max_num_fields=100))
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(
            400, "the form body is not UTF-8 form data (application/x-www-form-urlencoded)"
        ) from None


def _survey_form(token: str, complaint_id: int, score: int | None) -> str:
    buttons = "".join(
        f'<button type="submit" name="score" value="{n}" style="font-size: 1.4em; margin: 0.2em;'
        f'{" outline: 3px solid #2563eb;" if n == score else ""}">{n}</button>'
        for n in range(1, 6)
    )
    return (
        f"How satisfied are you with how we handled your complaint {complaint_id}?<br>"
        "1 = very unhappy, 5 = very happy."
        f'<form method="post" action="/s/{html.escape(token)}">'
        f"<p>{buttons}</p>"
        '<p><textarea name="comment" rows="3" cols="50" placeholder="Anything to add? '
        '(optional)"></textarea></p></form>'
    )


def _service_report(settings: Settings, since: datetime | None) -> dict[str, Any]:
    with session_scope(settings.db_url) as session:
        return service_report.build(session, since=since)


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
        return outcome, placed, _hold(session, settings, outcome, event.type)


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
        return outcome, _hold(session, settings, outcome, kind)


def _hold(
    session: Session, settings: Settings, outcome: realtime.Outcome, event: str | None
) -> list[int]:
    levels = journey_router.levels_of(session) if outcome.changed else []  # only then read
    happenings = journey_router.happenings_of(outcome, event, levels)
    return journey_router.hold(session, settings, outcome.customer_id, happenings)


async def _sweep(app: FastAPI, every: float = 60.0) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await resume_fulfilment(app)
            await resume_cases(app)
            await resume_journeys(app)
        except Exception:  # a sweep that fails is tried again at the next tick
            logging.getLogger(__name__).exception("resuming orders and complaint cases")


async def resume_journeys(app: FastAPI) -> list[journey_router.Entry]:
    """Journey entries held a minute ago or more and not started yet: started now (what
    was started already is refused by its workflow id)."""
    settings: Settings = app.state.settings
    held = await asyncio.to_thread(journey_router.waiting, settings, timedelta(minutes=1))
    if not held:
        return []
    return await journey_router.release(await _client_of(app), settings, held)


async def resume_cases(app: FastAPI) -> list[str]:
    """Complaint cases recorded a minute ago or more that were never acknowledged: their
    workflow is started again (a no-op when it runs)."""
    settings: Settings = app.state.settings

    def read() -> list[tuple[int, str]]:
        with session_scope(settings.db_url) as session:
            return complaints.unstarted(session, timedelta(minutes=1))

    waiting = await asyncio.to_thread(read)
    if not waiting:
        return []
    client = await _client_of(app)
    return [await start_case(client, settings, cid, uid) for cid, uid in waiting]


async def resume_fulfilment(app: FastAPI) -> list[str]:
    """Orders recorded a minute ago or more whose fulfilment has not finished are started
    again (the API may have stopped in between): starting a running one again is a no-op."""
    settings: Settings = app.state.settings
    waiting = await asyncio.to_thread(_requested_orders, settings)
    if not waiting:
        return []
    client = await _client_of(app)
    return [await start_fulfilment(client, settings, oid, uid) for oid, uid in waiting]


def _requested_orders(settings: Settings) -> list[tuple[int, str]]:
    cutoff = datetime.now(UTC) - timedelta(minutes=1)
    with session_scope(settings.db_url) as session:
        return [
            (order_id, uid)
            for order_id, uid in session.exec(
                select(Order.id, Order.uid).where(
                    Order.state == "requested", col(Order.created_at) < cutoff
                )
            ).all()
            if order_id is not None
        ]


async def _report(settings: Settings, campaign_id: str) -> dict[str, Any]:
    def read() -> dict[str, Any]:
        with session_scope(settings.db_url) as session:
            return build_report(session, campaign_id)

    try:
        return await asyncio.to_thread(read)
    except UnknownCampaign as exc:
        raise HTTPException(404, str(exc)) from None


def _page(body: str) -> str:
    return f"<!doctype html><html><body style='font-family: sans-serif'><p>{body}</p></body></html>"


def _unsubscribe(settings: Settings, customer_id: str, channel: str, campaign: str | None) -> None:
    with session_scope(settings.db_url) as session:
        customer = get_customer(session=session, external_id=customer_id)
        assert customer.id is not None
        set_consent(
            session=session,
            customer_id=customer.id,
            channel=channel,
            granted=False,
            source=f"unsubscribe link{f' ({campaign})' if campaign else ''}",
        )
        record_interaction(
            session=session,
            customer_id=customer.id,
            channel=channel,
            direction=Direction.inbound,
            kind="unsubscribe",
            outcome="responded",
            campaign=campaign,
        )


def _record_status(settings: Settings, sid: str, status: str, code: int | None) -> None:
    with session_scope(settings.db_url) as session:
        record_sms_status(session=session, sid=sid, status=status, error_code=code)


def _view(settings: Settings, customer_id: str) -> dict[str, Any]:
    with session_scope(settings.db_url) as session:
        return customer_view(session=session, external_id=customer_id)


def app_from_env() -> FastAPI:
    """Entry point for uvicorn (``--factory``)."""
    return create_app()
