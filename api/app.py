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

from api.limits import BodyLimit, field_error, validation_error
from api.models import (
    CampaignReport,
    CaseView,
    CustomerView,
    EventAccepted,
    Health,
    Problem,
    ServiceReport,
    SignupAccepted,
    errors,
)
from clientela import complaints, delivery, journey_router, pages, realtime
from clientela.campaigns import html as report_html
from clientela.campaigns.report import UnknownCampaign
from clientela.campaigns.report import build as build_report
from clientela.channels.sms import SmsTransport
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
from clientela.unsubscribe import BadToken, read_report_token, read_survey_token, read_token
from models import Complaint, Consent, Customer, Direction, Order
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


#: A link's token (unsubscribe, survey, report), as links carry them.
LinkToken = Annotated[str, Path(min_length=8, max_length=512, pattern=r"^[A-Za-z0-9_=-]+$")]
#: A recipient's page answers 404 with a page that says what to do when a link is not valid.
PAGE_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "the form body is not UTF-8 form data"},
    404: {
        "description": "the link is not valid: a page in the recipient's language",
        "content": {"text/html": {}},
    },
    413: {"model": Problem, "description": "the form is larger than the API reads"},
}
#: A campaign's id in a path.
CampaignSlug = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]


def form_body(fields: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    """The OpenAPI description of a form body a route reads itself (signed forms must be
    read raw, before anything is decoded)."""
    schema: dict[str, Any] = {"type": "object", "properties": fields}
    if required:
        schema["required"] = required
    return {
        "requestBody": {
            "content": {"application/x-www-form-urlencoded": {"schema": schema}},
            "required": bool(required),
        }
    }


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
        sweeper = asyncio.create_task(_sweep(app, settings.sweep_interval.total_seconds()))
        yield
        sweeper.cancel()

    app = FastAPI(title="Clientela", version="0.1.0", lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.state.union_tags = EVENT_TYPES
    app.state.settings = settings
    app.state.client = client
    app.state.client_lock = asyncio.Lock()

    @app.get("/health", response_model=Health)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(
        "/events",
        status_code=202,
        dependencies=Authorised,
        response_model=SignupAccepted | EventAccepted,
        responses=errors(400, 401, 404, 413, 503),
    )
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

    @app.post(
        "/webhooks/twilio/status",
        status_code=204,
        response_class=Response,
        responses=errors(400, 403, 413),
        openapi_extra=form_body(
            {
                "MessageSid": {"type": "string", "maxLength": 64},
                "MessageStatus": {"type": "string", "maxLength": 32},
                "ErrorCode": {"type": "string", "maxLength": 16},
            },
            required=["MessageSid", "MessageStatus"],
        ),
    )
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
            return field_error("MessageSid" if not sid else "MessageStatus", "is required")
        code = params.get("ErrorCode", "")
        if code and not re.fullmatch(r"[0-9]{1,9}", code):
            return field_error("ErrorCode", f"{code[:20]!r} is not a Twilio error number")
        try:
            await asyncio.to_thread(
                _record_status, settings, sid, status, int(code) if code else None
            )
        except UnknownStatus as exc:
            return field_error("MessageStatus", str(exc))
        return Response(status_code=204)

    @app.get("/u/{token}", response_class=HTMLResponse, responses=PAGE_ERRORS)
    async def unsubscribe_page(token: LinkToken) -> HTMLResponse:
        """What an unsubscribe link opens: one button, so that link scanners change nothing."""
        try:
            customer_id, channel, _ = read_token(settings, token)
        except BadToken:
            return _invalid_link(settings, None)
        locale = await asyncio.to_thread(_locale_of, settings, customer_id)
        w = pages.words(locale)
        return _recipient_page(
            settings,
            locale,
            w["unsubscribe.title"],
            w["unsubscribe.ask"].format(channel=w[channel]),
            form="unsubscribe",
            action=f"/u/{token}",
            button=w["unsubscribe.button"],
        )

    @app.post(
        "/u/{token}",
        response_class=HTMLResponse,
        responses=PAGE_ERRORS,
        openapi_extra=form_body({"List-Unsubscribe": {"type": "string", "enum": ["One-Click"]}}),
    )
    async def unsubscribe(token: LinkToken) -> HTMLResponse:
        """Withdraw consent for the channel (also RFC 8058 one-click, from mail clients).
        A second click changes nothing and records nothing more."""
        try:
            customer_id, channel, campaign = read_token(settings, token)
            locale, changed = await asyncio.to_thread(
                _unsubscribe, settings, customer_id, channel, campaign
            )
        except (BadToken, UnknownCustomer):
            return _invalid_link(settings, None)
        w = pages.words(locale)
        said = w["unsubscribe.done" if changed else "unsubscribe.already"]
        return _recipient_page(
            settings,
            locale,
            w["unsubscribe.title"],
            said.format(channel=w[channel]),
            w["unsubscribe.back"],
        )

    @app.get("/r/{token}", response_class=HTMLResponse, responses=PAGE_ERRORS)
    async def shared_report_page(token: LinkToken) -> HTMLResponse:
        """A campaign's report page through the signed, expiring link its stakeholders get
        by email (no API key needed; it shows the report's aggregates, never a customer)."""
        try:
            campaign_id = read_report_token(settings, token)
        except BadToken as exc:
            return HTMLResponse(_plain_page(str(exc)), status_code=404)
        return HTMLResponse(report_html.render(await _report(settings, campaign_id)))

    @app.get(
        "/campaigns/{campaign_id}/report",
        dependencies=Authorised,
        response_model=CampaignReport,
        responses=errors(401, 404),
    )
    async def campaign_report(campaign_id: CampaignSlug) -> dict[str, Any]:
        """The campaign report (the documented JSON of `clientela campaign report --json`)."""
        return await _report(settings, campaign_id)

    @app.get(
        "/campaigns/{campaign_id}/report.html",
        dependencies=Authorised,
        response_class=HTMLResponse,
        responses=errors(401, 404, html=True),
    )
    async def campaign_report_page(campaign_id: CampaignSlug) -> HTMLResponse:
        """The report page with its charts, as of now."""
        return HTMLResponse(report_html.render(await _report(settings, campaign_id)))

    @app.get(
        "/customers/{customer_id}",
        dependencies=Authorised,
        response_model=CustomerView,
        responses=errors(401, 404),
    )
    async def customer(customer_id: ExternalId) -> dict[str, Any]:
        try:
            return await asyncio.to_thread(_view, settings, customer_id)
        except UnknownCustomer as exc:
            raise HTTPException(404, str(exc)) from None

    @app.get(
        "/complaints",
        dependencies=Authorised,
        response_model=list[CaseView],
        responses=errors(401, 404),
    )
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

    @app.get(
        "/complaints/{complaint_id}",
        dependencies=Authorised,
        response_model=CaseView,
        responses=errors(401, 404),
    )
    async def complaint_case(complaint_id: CaseId) -> dict[str, Any]:
        return await _case_change(settings, complaint_id, None)

    @app.post(
        "/complaints/{complaint_id}/response",
        dependencies=Authorised,
        response_model=CaseView,
        responses=errors(400, 401, 404, 409, 413),
    )
    async def complaint_response(
        complaint_id: CaseId, body: CaseResponse, request: Request
    ) -> dict[str, Any]:
        """Record the first answer to the customer; the case's reminders stop."""
        change = partial(complaints.respond, complaint_id=complaint_id, by=body.by, note=body.note)
        return await _case_change(settings, complaint_id, change, request)

    @app.post(
        "/complaints/{complaint_id}/resolution",
        dependencies=Authorised,
        response_model=CaseView,
        responses=errors(400, 401, 404, 409, 413),
    )
    async def complaint_resolution(
        complaint_id: CaseId, body: CaseResolution, request: Request
    ) -> dict[str, Any]:
        """Resolve the case; the customer is asked for a satisfaction score."""
        change = partial(
            complaints.resolve, complaint_id=complaint_id, by=body.by, resolution=body.resolution
        )
        return await _case_change(settings, complaint_id, change, request)

    @app.post(
        "/complaints/{complaint_id}/satisfaction",
        dependencies=Authorised,
        response_model=CaseView,
        responses=errors(400, 401, 404, 409, 413),
    )
    async def complaint_satisfaction(
        complaint_id: CaseId, body: CaseRating, request: Request
    ) -> dict[str, Any]:
        """The customer's score, taken by another channel (a call, a form of your own)."""
        change = partial(
            complaints.rate, complaint_id=complaint_id, score=body.score, comment=body.comment
        )
        return await _case_change(settings, complaint_id, change, request)

    @app.get("/s/{token}", response_class=HTMLResponse, responses=PAGE_ERRORS)
    async def survey_page(
        token: LinkToken, score: Annotated[int | None, Query(ge=1, le=5)] = None
    ) -> HTMLResponse:
        """What a survey link opens: the score to confirm, so that link scanners rate nothing."""
        try:
            complaint_id = read_survey_token(settings, token)
        except BadToken:
            return _invalid_link(settings, None)
        locale = await asyncio.to_thread(_locale_of_case, settings, complaint_id)
        return _survey_page(settings, locale, token, complaint_id, score)

    @app.post(
        "/s/{token}",
        response_class=HTMLResponse,
        responses=PAGE_ERRORS,
        openapi_extra=form_body(
            {
                "score": {"type": "string", "enum": ["1", "2", "3", "4", "5"]},
                "comment": {"type": "string", "maxLength": 2000},
            },
            required=["score"],
        ),
    )
    async def survey_answer(token: LinkToken, request: Request) -> HTMLResponse:
        try:
            complaint_id = read_survey_token(settings, token)
        except BadToken:
            return _invalid_link(settings, None)
        form = await _form(request)
        locale = await asyncio.to_thread(_locale_of_case, settings, complaint_id)
        w = pages.words(locale)
        raw = form.get("score", "")
        if raw not in ("1", "2", "3", "4", "5"):  # the form again, saying what to do
            return _survey_page(settings, locale, token, complaint_id, None, w["survey.choose"])
        change = partial(
            complaints.rate,
            complaint_id=complaint_id,
            score=int(raw),
            comment=_printable_text(form.get("comment", ""))[:2000],
        )
        try:
            await _case_change(settings, complaint_id, change, request)
        except HTTPException as exc:
            if exc.status_code == 409:
                early = "not resolved" in str(exc.detail)
                said = w["survey.early" if early else "survey.answered"]
                return _recipient_page(settings, locale, w["survey.title"], said)
            raise
        return _recipient_page(settings, locale, w["survey.title"], w["survey.thanks"])

    @app.get(
        "/service/report",
        dependencies=Authorised,
        response_model=ServiceReport,
        responses=errors(401),
    )
    async def service_report_json(since: datetime | None = None) -> dict[str, Any]:
        """Service indicators (the JSON of `clientela service report --json`)."""
        return await asyncio.to_thread(_service_report, settings, since)

    @app.get(
        "/service/report.html",
        dependencies=Authorised,
        response_class=HTMLResponse,
        responses=errors(401, html=True),
    )
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


def _recipient_page(
    settings: Settings, locale: str | None, title: str, *paragraphs: str, **form: Any
) -> HTMLResponse:
    status = form.pop("status", 200)
    html_text = pages.render(settings.templates_dir, locale, title, *paragraphs, **form)
    return HTMLResponse(html_text, status_code=status)


def _invalid_link(settings: Settings, locale: str | None) -> HTMLResponse:
    w = pages.words(locale)
    page = _recipient_page(settings, locale, w["invalid.title"], w["invalid.body"])
    page.status_code = 404
    return page


def _survey_page(
    settings: Settings,
    locale: str | None,
    token: str,
    complaint_id: int,
    score: int | None,
    *notes: str,
    status: int = 200,
) -> HTMLResponse:
    w = pages.words(locale)
    return _recipient_page(
        settings,
        locale,
        w["survey.title"],
        w["survey.ask"].format(id=complaint_id),
        w["survey.scale"],
        *notes,
        form="survey",
        action=f"/s/{token}",
        score=score,
        comment_label=w["survey.comment"],
        button=w["survey.send"],
        status=status,
    )


def _printable_text(text: str) -> str:
    return "".join(c for c in text if c in "\n\t" or (ord(c) >= 32 and ord(c) != 127))


def _locale_of(settings: Settings, customer_id: str) -> str | None:
    with session_scope(settings.db_url) as session:
        found = session.exec(
            select(Customer.locale).where(Customer.external_id == customer_id)
        ).first()
        return found


def _locale_of_case(settings: Settings, complaint_id: int) -> str | None:
    with session_scope(settings.db_url) as session:
        return session.exec(
            select(Customer.locale).join(Complaint).where(Complaint.id == complaint_id)
        ).first()


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
            await settle_deliveries(app)
        except Exception as exc:  # a sweep that fails is tried again at the next tick
            logging.getLogger(__name__).warning(
                "sweep (orders, cases, journeys, deliveries) failed; again in %.0f s: %r",
                every,
                exc,
            )


async def settle_deliveries(app: FastAPI) -> dict[str, int]:
    """Delivery reports kept until their message was recorded are applied; an SMS whose
    report never came (``delivery_report_wait``) is looked up with the provider."""
    settings: Settings = app.state.settings

    def kept_and_stale() -> tuple[int, list[tuple[int, str]]]:
        with session_scope(settings.db_url) as session:
            applied = delivery.apply_kept(session)
        with session_scope(settings.db_url) as session:
            return applied, delivery.stale_sms(session, settings.delivery_report_wait)

    applied, stale = await asyncio.to_thread(kept_and_stale)
    looked = settled = 0
    if stale:
        transport = SmsTransport(settings)
        try:
            for _, sid in stale:
                status, code = await transport.status(sid)
                looked += 1
                if status in delivery.DELIVERED | delivery.UNDELIVERED:
                    await asyncio.to_thread(_record_status, settings, sid, status, code)
                    settled += 1
        finally:
            await transport.close()
    return {"applied": applied, "looked_up": looked, "settled": settled}


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


def _plain_page(text: str) -> str:
    return (
        "<!doctype html><html><body style='font-family: sans-serif'>"
        f"<p>{html.escape(text)}</p></body></html>"
    )


def _unsubscribe(
    settings: Settings, customer_id: str, channel: str, campaign: str | None
) -> tuple[str, bool]:
    """Withdraw the channel's consent; (the customer's locale, whether anything changed).
    Only the first click is recorded in the customer's history."""
    with session_scope(settings.db_url) as session:
        customer = get_customer(session=session, external_id=customer_id)
        assert customer.id is not None
        held = session.exec(
            select(Consent).where(Consent.customer_id == customer.id, Consent.channel == channel)
        ).first()
        if held is not None and not held.granted:
            return customer.locale, False
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
        return customer.locale, True


def _record_status(settings: Settings, sid: str, status: str, code: int | None) -> None:
    with session_scope(settings.db_url) as session:
        record_sms_status(session=session, sid=sid, status=status, error_code=code)


def _view(settings: Settings, customer_id: str) -> dict[str, Any]:
    with session_scope(settings.db_url) as session:
        return customer_view(session=session, external_id=customer_id)


def app_from_env() -> FastAPI:
    """Entry point for uvicorn (``--factory``)."""
    return create_app()
