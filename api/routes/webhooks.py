"""Providers' callbacks: Twilio's signed status reports."""

from __future__ import annotations

import asyncio
import re

from fastapi import APIRouter, HTTPException, Request, Response
from twilio.request_validator import RequestValidator

from api.deps import SettingsDep, form_body, read_form
from api.limits import field_error
from api.models import errors
from clientela.db import session_scope
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
