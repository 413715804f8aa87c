"""SMS through Twilio's Messages API with the twilio client (async)."""

from __future__ import annotations

from datetime import datetime, timedelta

import aiohttp
from twilio.base import values
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from clientela.messaging.channels import InDoubt, Permanent, SendAccepted, Transient
from clientela.settings import Settings

# Twilio error codes that say the number itself can never receive our messages.
SUPPRESSING_CODES = {
    21211: "invalid 'To' number",
    21610: "recipient has opted out (replied STOP)",
    21614: "number cannot receive SMS",
}
# Codes that reject this message for good without condemning the number.
PERMANENT_CODES = {21408, 21612, 21617, 30007}


def classify_twilio_error(exc: TwilioRestException) -> Transient | Permanent | InDoubt:
    code = exc.code or 0
    reason = f"Twilio {exc.status} error {code}: {exc.msg}"
    if exc.status == 429 or code == 20429:
        return Transient(reason, retry_after=None)
    if code in SUPPRESSING_CODES:
        return Permanent(f"{reason} ({SUPPRESSING_CODES[code]})", suppress=True)
    if code in PERMANENT_CODES or exc.status in (400, 401, 403, 404):
        return Permanent(reason)
    if exc.status >= 500:
        # The request reached Twilio and something broke there: it may have been created.
        return InDoubt(reason)
    return Transient(reason)


class SmsTransport:
    def __init__(self, settings: Settings) -> None:
        sid, token, sender = settings.twilio_credentials
        self.sender = sender
        self.status_callback = settings.sms_status_callback
        self._http = AsyncTwilioHttpClient(timeout=30)
        self.client = Client(sid, token, http_client=self._http)
        self.client.api.base_url = settings.twilio_base_url

    async def send(self, *, to: str, body: str) -> SendAccepted:
        try:
            message = await self.client.messages.create_async(
                to=to,
                from_=self.sender,
                body=body,
                status_callback=self.status_callback or values.unset,
            )
        except TwilioRestException as exc:
            raise classify_twilio_error(exc) from None
        except aiohttp.ClientConnectorError as exc:
            raise Transient(f"cannot reach the SMS API: {exc}") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise InDoubt(f"SMS API connection lost after the request was sent: {exc}") from None
        return SendAccepted(provider_id=message.sid or "")

    async def find(self, *, to: str, body: str, since: datetime) -> str | None:
        """The sid of a message already created to ``to`` with ``body`` since ``since``."""
        try:
            found = await self.client.messages.list_async(
                to=to, date_sent_after=since - timedelta(days=1), limit=1000
            )
        except TwilioRestException as exc:
            raise Transient(f"cannot list SMS to reconcile: {exc.msg}") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Transient(f"cannot reach the SMS API to reconcile: {exc}") from None
        earliest = since - timedelta(minutes=5)
        for message in found:
            created = message.date_created
            if (
                message.body == body
                and message.from_ == self.sender
                and (created is None or created >= earliest)
            ):
                return message.sid
        return None

    async def status(self, sid: str) -> tuple[str, int | None]:
        """The message's status as the provider holds it now, and its error code."""
        try:
            message = await self.client.messages(sid).fetch_async()
        except TwilioRestException as exc:
            raise Transient(f"cannot look up SMS {sid}: {exc.msg}") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Transient(f"cannot reach the SMS API to look up {sid}: {exc}") from None
        return str(message.status or ""), message.error_code

    async def close(self) -> None:
        await self._http.close()
