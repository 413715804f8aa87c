"""What links in messages open: unsubscribe, preferences, the survey, the shared report."""

from __future__ import annotations

import asyncio
import html
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse
from sqlmodel import select

from api.deps import SettingsDep, form_body, read_form
from api.models import Problem
from api.routes.campaigns import report_data
from api.routes.complaints import case_change
from clientela.campaigns import html as report_html
from clientela.customers.records import (
    UnknownCustomer,
    consents,
    get_customer,
    record_interaction,
    set_consent,
    set_topic,
    topics_off,
)
from clientela.db import session_scope
from clientela.messaging import pages
from clientela.messaging.links import (
    BadToken,
    read_preferences_token,
    read_report_token,
    read_survey_token,
    read_token,
)
from clientela.service import cases as complaints
from clientela.settings import Settings
from models import Complaint, Consent, Customer, Direction

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


router = APIRouter(tags=["recipients"])


@router.get("/u/{token}", response_class=HTMLResponse, responses=PAGE_ERRORS)
async def unsubscribe_page(settings: SettingsDep, token: LinkToken) -> HTMLResponse:
    """What an unsubscribe link opens: one button, so that link scanners change nothing."""
    try:
        customer_id, channel, _ = read_token(settings, token)
    except BadToken:
        return invalid_link(settings)
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


@router.post(
    "/u/{token}",
    response_class=HTMLResponse,
    responses=PAGE_ERRORS,
    openapi_extra=form_body({"List-Unsubscribe": {"type": "string", "enum": ["One-Click"]}}),
)
async def unsubscribe(settings: SettingsDep, token: LinkToken) -> HTMLResponse:
    """Withdraw consent for the channel (also RFC 8058 one-click, from mail clients).
    A second click changes nothing and records nothing more."""
    try:
        customer_id, channel, campaign = read_token(settings, token)
        locale, changed = await asyncio.to_thread(
            _unsubscribe, settings, customer_id, channel, campaign
        )
    except (BadToken, UnknownCustomer):
        return invalid_link(settings)
    w = pages.words(locale)
    said = w["unsubscribe.done" if changed else "unsubscribe.already"]
    return _recipient_page(
        settings,
        locale,
        w["unsubscribe.title"],
        said.format(channel=w[channel]),
        w["unsubscribe.back"],
    )


@router.get("/p/{token}", response_class=HTMLResponse, responses=PAGE_ERRORS)
async def preferences_page(settings: SettingsDep, token: LinkToken) -> HTMLResponse:
    """The preference centre a link in every email opens: channels and topics, in the
    customer's language. Opening it changes nothing."""
    try:
        customer_id = read_preferences_token(settings, token)
        view = await asyncio.to_thread(_preferences, settings, customer_id, None, "")
    except (BadToken, UnknownCustomer):
        return invalid_link(settings)
    return _preferences_page(settings, token, view)


@router.post(
    "/p/{token}",
    response_class=HTMLResponse,
    responses=PAGE_ERRORS,
    openapi_extra=form_body(
        {
            "wording": {"type": "string", "maxLength": 64},
            "channel.email": {"type": "string", "enum": ["on"]},
            "channel.sms": {"type": "string", "enum": ["on"]},
            "topic.offers": {"type": "string", "enum": ["on"]},
        }
    ),
)
async def preferences_save(
    settings: SettingsDep, token: LinkToken, request: Request
) -> HTMLResponse:
    """Save the choices: each change in the consent log (source ``preference centre``, with
    the version of the wording the page showed), effective for the next message. A box left
    unticked is a no."""
    try:
        customer_id = read_preferences_token(settings, token)
    except BadToken:
        return invalid_link(settings)
    form = await read_form(request)
    wording = _printable_text(form.get("wording", ""))[:64]
    try:
        view = await asyncio.to_thread(_preferences, settings, customer_id, form, wording)
    except UnknownCustomer:
        return invalid_link(settings)
    return _preferences_page(settings, token, view, saved=True)


@router.get("/r/{token}", response_class=HTMLResponse, responses=PAGE_ERRORS)
async def shared_report_page(settings: SettingsDep, token: LinkToken) -> HTMLResponse:
    """A campaign's report page through the signed, expiring link its stakeholders get
    by email (no API key needed; it shows the report's aggregates, never a customer)."""
    try:
        campaign_id = read_report_token(settings, token)
    except BadToken as exc:
        return HTMLResponse(_plain_page(str(exc)), status_code=404)
    return HTMLResponse(report_html.render(await report_data(settings, campaign_id)))


@router.get("/s/{token}", response_class=HTMLResponse, responses=PAGE_ERRORS)
async def survey_page(
    settings: SettingsDep, token: LinkToken, score: Annotated[int | None, Query(ge=1, le=5)] = None
) -> HTMLResponse:
    """What a survey link opens: the score to confirm, so that link scanners rate nothing."""
    try:
        complaint_id = read_survey_token(settings, token)
    except BadToken:
        return invalid_link(settings)
    locale = await asyncio.to_thread(_locale_of_case, settings, complaint_id)
    return _survey_page(settings, locale, token, complaint_id, score)


@router.post(
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
async def survey_answer(settings: SettingsDep, token: LinkToken, request: Request) -> HTMLResponse:
    try:
        complaint_id = read_survey_token(settings, token)
    except BadToken:
        return invalid_link(settings)
    form = await read_form(request)
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
        request.state.actor = "recipient:survey link"
        await case_change(
            settings, complaint_id, change, request, "complaint.rated", {"score": int(raw)}
        )
    except HTTPException as exc:
        if exc.status_code == 409:
            early = "not resolved" in str(exc.detail)
            said = w["survey.early" if early else "survey.answered"]
            return _recipient_page(settings, locale, w["survey.title"], said)
        raise
    return _recipient_page(settings, locale, w["survey.title"], w["survey.thanks"])


def _recipient_page(
    settings: Settings, locale: str | None, title: str, *paragraphs: str, **form: Any
) -> HTMLResponse:
    status = form.pop("status", 200)
    html_text = pages.render(settings.templates_dir, locale, title, *paragraphs, **form)
    return HTMLResponse(html_text, status_code=status)


def invalid_link(settings: Settings, locale: str | None = None) -> HTMLResponse:
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


def _preferences(
    settings: Settings, customer_id: str, form: dict[str, str] | None, wording: str
) -> dict[str, Any]:
    """The customer's channels and topics (after applying ``form``, when given)."""
    from clientela.messaging import topics as topic_file

    known = topic_file.load(settings.templates_dir)
    with session_scope(settings.db_url) as session:
        customer = get_customer(session=session, external_id=customer_id)
        assert customer.id is not None
        channels = [
            ch for ch, address in (("email", customer.email), ("sms", customer.phone)) if address
        ]
        if form is not None:
            for ch in channels:
                set_consent(
                    session=session,
                    customer_id=customer.id,
                    channel=ch,
                    granted=form.get(f"channel.{ch}") == "on",
                    source="preference centre",
                    wording=wording or known.wording,
                )
            for topic in known.topics:
                set_topic(
                    session=session,
                    customer_id=customer.id,
                    topic=topic,
                    subscribed=form.get(f"topic.{topic}") == "on",
                    source="preference centre",
                    wording=wording or known.wording,
                )
            session.flush()
        held = consents(session=session, customer_id=customer.id)
        off = topics_off(session=session, customer_id=customer.id)
        lang = (customer.locale or "en").split("-")[0]
        return {
            "locale": customer.locale,
            "wording": known.wording,
            "channels": [(ch, ch in held and held[ch].granted) for ch in channels],
            "topics": [(t, known.label(t, lang), t not in off) for t in known.topics],
        }


def _preferences_page(
    settings: Settings, token: str, view: dict[str, Any], saved: bool = False
) -> HTMLResponse:
    locale = view["locale"]
    w = pages.words(locale)
    said = [w["prefs.intro"]]
    if saved:
        said.append(w["prefs.saved"])
        if not any(on for _, on in view["channels"]):
            said.append(w["prefs.none"])
    return _recipient_page(
        settings,
        locale,
        w["prefs.title"],
        *said,
        form="preferences",
        action=f"/p/{token}",
        wording=view["wording"],
        channels_label=w["prefs.channels"],
        channels=[(ch, w[ch], on) for ch, on in view["channels"]],
        topics_label=w["prefs.topics"],
        topics=view["topics"],
        button=w["prefs.save"],
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
