"""Providers' callbacks: Twilio's signed status reports and replies, bounces forwarded."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from twilio.request_validator import RequestValidator

from api.deps import SettingsDep, form_body, read_form
from api.limits import field_error
from api.models import BouncesApplied, errors
from clientela.db import session_scope
from clientela.messaging import bounces
from clientela.messaging.delivery import UnknownStatus, record_sms_status
from clientela.settings import STATUS_CALLBACK_PATH, Settings

router = APIRouter(tags=["webhooks"])


@router.post(
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
async def twilio_status(settings: SettingsDep, request: Request) -> Response:
    """Twilio's status callback: signed with the account's auth token."""
    params = await read_form(request)
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
        await asyncio.to_thread(record_status, settings, sid, status, int(code) if code else None)
    except UnknownStatus as exc:
        return field_error("MessageStatus", str(exc))
    return Response(status_code=204)


def record_status(settings: Settings, sid: str, status: str, code: int | None) -> None:
    with session_scope(settings.db_url) as session:
        record_sms_status(session=session, sid=sid, status=status, error_code=code)


INBOUND_PATH = "/webhooks/twilio/inbound"


@router.post(
    INBOUND_PATH,
    response_class=Response,
    responses={
        200: {"description": "TwiML: empty, or the HELP answer", "content": {"text/xml": {}}},
        **errors(400, 403, 413, 503),
    },
    openapi_extra=form_body(
        {
            "MessageSid": {"type": "string", "maxLength": 64},
            "From": {"type": "string", "maxLength": 32},
            "Body": {"type": "string", "maxLength": 1600},
            "OptOutType": {"type": "string", "maxLength": 16},
        },
        required=["MessageSid", "From"],
    ),
)
async def twilio_inbound(settings: SettingsDep, request: Request) -> Response:
    """A reply to one of our SMS (Twilio's incoming-message webhook, signed like the status
    callback): STOP/START keywords change SMS consent, HELP is answered, anything else is a
    response that reaches the customer's journeys. A repeated ``MessageSid`` changes nothing."""
    from twilio.twiml.messaging_response import MessagingResponse

    from api.deps import client_of
    from clientela.journeys import router as journey_router
    from clientela.journeys.runs import signal_response
    from clientela.messaging import inbound

    params = await read_form(request)
    url = f"{settings.recipient_base_url}{INBOUND_PATH}"
    signature = request.headers.get("X-Twilio-Signature", "")
    if not RequestValidator(settings.twilio_credentials[1]).validate(url, params, signature):
        raise HTTPException(403, "X-Twilio-Signature does not match this request")
    sid, sender = params.get("MessageSid", ""), params.get("From", "")
    if not re.fullmatch(r"[A-Za-z0-9]{1,64}", sid):
        return field_error("MessageSid", "is required: Twilio's id of the message")
    if not re.fullmatch(r"\+[1-9][0-9]{5,14}", sender):
        return field_error("From", "is required: the sender's number in E.164 (+34...)")
    body, told = params.get("Body", "")[:1600], params.get("OptOutType", "")[:16]
    # A reply reaches journeys through Temporal: without it, refuse now (Twilio sends again).
    client = await client_of(request.app) if inbound.keyword(body, told) is None else None

    def apply() -> inbound.Handled:
        with session_scope(settings.db_url) as session:
            done, outcome = inbound.handle(
                session,
                sid=sid,
                sender=sender,
                body=body,
                opt_out_type=told,
                locale=settings.default_locale,
            )
            if outcome is not None:
                done.held = journey_router.hold_outcome(session, settings, outcome, "reply")
            return done

    done = await asyncio.to_thread(apply)
    if client is not None and done.customer_id and not done.duplicate:
        await journey_router.signal_event(client, settings, done.customer_id, "reply", "sms")
        await signal_response(client, done.customer_id, "reply", "sms")
        await journey_router.release(client, settings, done.held)
    twiml = MessagingResponse()
    if done.reply and not done.duplicate:
        twiml.message(done.reply)
    return Response(str(twiml), media_type="text/xml")


#: The form fields mail providers put a whole received message in (SendGrid's Inbound Parse
#: with "send raw", Mailgun's routes with the MIME body).
RAW_FIELDS = ("email", "body-mime")


@router.post(
    "/webhooks/bounces",
    response_model=BouncesApplied,
    responses={
        **errors(400, 413, 415),
        422: {"description": "the form lacks the message (`email` or `body-mime`)"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "message/rfc822": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {f: {"type": "string"} for f in RAW_FIELDS},
                    }
                },
            },
        }
    },
)
async def bounce_webhook(settings: SettingsDep, request: Request) -> Any:
    """A message that came to the bounce address, forwarded by a mail provider's inbound
    webhook: a delivery status notification or a feedback-loop report, applied as
    `clientela bounces process` applies it. No key is asked: a report changes something only
    when it carries the signed tag of a message we sent to the address it is about."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw: bytes
    if kind in ("message/rfc822", "text/plain", "application/octet-stream"):
        raw = await request.body()
    elif kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            form = await request.form(max_files=4, max_fields=200)
        except Exception:  # a malformed multipart body
            raise HTTPException(400, "the form could not be read") from None
        value = next((form[f] for f in RAW_FIELDS if f in form), None)
        if value is None:
            return field_error(
                RAW_FIELDS[0], "is required: the whole message as received (or body-mime)"
            )
        raw = value.encode() if isinstance(value, str) else await value.read()
    else:
        raise HTTPException(
            415,
            "send the message as message/rfc822, or as a form with `email` (SendGrid's raw "
            "Inbound Parse) or `body-mime` (Mailgun)",
        )
    if not raw.strip():
        raise HTTPException(400, "the message is empty")
    applied = await asyncio.to_thread(bounces.process, settings, raw)
    return {"applied": dict(Counter(a.kind for a in applied))}
