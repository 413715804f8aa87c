"""A local HTTP server that speaks the part of Twilio's Messages API Clientela uses.

``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` creates a message (form fields ``To``,
``From`` or ``MessagingServiceSid``, ``Body``), ``GET .../Messages.json`` lists them (filters
``To``, ``From``, ``DateSent``, ``DateSent>``, ``DateSent<``, ``PageSize``) and
``GET .../Messages/{Sid}.json`` fetches one. Requests need HTTP Basic auth with the configured
account sid and token. Answers and errors have Twilio's shape, and Twilio's documented test
numbers give Twilio's errors (+15005550001 invalid, +15005550004 opted out, ...). Every
message is appended to ``messages.jsonl`` so a restart keeps them.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from twilio.request_validator import RequestValidator

from clientela.settings import SINK_ACCOUNT_SID, sink_auth_token

API = "/2010-04-01/Accounts/{account}"
log = logging.getLogger(__name__)
E164 = re.compile(r"^\+[1-9]\d{6,14}$")

#: Twilio's test numbers (https://www.twilio.com/docs/iam/test-credentials) and their errors.
MAGIC_TO = {
    "+15005550001": (21211, "The 'To' number +15005550001 is not a valid phone number."),
    "+15005550002": (21612, "The 'To' phone number is not currently reachable via SMS."),
    "+15005550003": (21408, "Permission to send an SMS has not been enabled for the region."),
    "+15005550004": (21610, "Attempt to send to unsubscribed recipient"),
    "+15005550009": (21614, "'To' number is not a valid mobile number"),
}
MAGIC_FROM = {
    "+15005550001": (21212, "The 'From' number +15005550001 is not a valid phone number."),
    "+15005550007": (21606, "The 'From' phone number is not owned by your account."),
}


@dataclass
class SmsFault:
    """Answer with an error for recipients matching ``pattern``, ``times`` times (None: always)."""

    pattern: str
    status: int
    code: int
    message: str = "fault injected"
    times: int | None = None


def _error(status: int, code: int, message: str) -> web.Response:
    return web.json_response(
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
        status=status,
    )


def _rfc2822(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


class SmsSink:
    def __init__(
        self,
        directory: Path,
        account_sid: str = SINK_ACCOUNT_SID,
        auth_token: str = "",
    ) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.account_sid = account_sid
        self.auth_token = auth_token or sink_auth_token(directory)
        self.faults: list[SmsFault] = []
        #: Recipients (regex) whose messages are accepted but then reported undelivered,
        #: with Twilio's error code (e.g. 30003, unreachable handset).
        self.undeliverable: dict[str, int] = {}
        self.callbacks_sent: list[dict[str, str]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.messages: list[dict[str, Any]] = self._load()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def store(self) -> Path:
        return self.directory / "messages.jsonl"

    def _load(self) -> list[dict[str, Any]]:
        if not self.store.is_file():
            return []
        with self.store.open(encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    def app(self) -> web.Application:
        app = web.Application()
        base = API
        app.router.add_post(base + "/Messages.json", self.create)
        app.router.add_get(base + "/Messages.json", self.list)
        app.router.add_get(base + "/Messages/{sid}.json", self.fetch)
        return app

    def _authorised(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if not header.startswith("Basic ") or not secrets.compare_digest(header[6:], expected):
            return _error(401, 20003, "Authentication Error - invalid username")
        if request.match_info["account"] != self.account_sid:
            return _error(404, 20404, "The requested resource was not found")
        return None

    def _resource(self, message: dict[str, Any]) -> dict[str, Any]:
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{message['sid']}.json"
        return {
            **{k: v for k, v in message.items() if not k.startswith("_")},
            "uri": uri,
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
        }

    async def create(self, request: web.Request) -> web.Response:
        if (denied := self._authorised(request)) is not None:
            return denied
        form = await request.post()
        to = str(form.get("To", "")).strip()
        sender = str(form.get("From", "")).strip()
        service = str(form.get("MessagingServiceSid", "")).strip()
        body = str(form.get("Body", ""))
        if not to:
            return _error(400, 21604, "A 'To' phone number is required.")
        if not sender and not service:
            return _error(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required.")
        if not body:
            return _error(400, 21602, "Message body is required.")
        if len(body) > 1600:
            return _error(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        for fault in self.faults:
            if fault.times != 0 and re.search(fault.pattern, to):
                if fault.times is not None:
                    fault.times -= 1
                return _error(fault.status, fault.code, fault.message)
        if sender in MAGIC_FROM:
            return _error(400, *MAGIC_FROM[sender])
        if to in MAGIC_TO:
            return _error(400, *MAGIC_TO[to])
        if not E164.match(to):
            return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        now = datetime.now(UTC)
        message = {
            "sid": "SM" + secrets.token_hex(16),
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "to": to,
            "from": sender or None,
            "messaging_service_sid": service or None,
            "body": body,
            "status": "queued",
            "direction": "outbound-api",
            "num_segments": str(max(1, -(-len(body) // 153) if len(body) > 160 else 1)),
            "num_media": "0",
            "price": None,
            "price_unit": "USD",
            "error_code": None,
            "error_message": None,
            "date_created": _rfc2822(now),
            "date_updated": _rfc2822(now),
            "date_sent": None,
            "_created": now.isoformat(),
        }
        created = self._resource(message)
        code = next((c for p, c in self.undeliverable.items() if re.search(p, to)), None)
        final = "undelivered" if code else "delivered"
        # The sink settles at once: later reads show the final status.
        stored = {
            **message,
            "status": final,
            "date_sent": _rfc2822(now),
            "error_code": code,
        }
        with self._lock:
            self.messages.append(stored)
            with self.store.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(stored) + "\n")
        callback = str(form.get("StatusCallback", "")).strip()
        if callback:
            task = asyncio.create_task(self._report(callback, stored))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return web.json_response(created, status=201)

    async def _report(self, url: str, message: dict[str, Any]) -> None:
        """POST Twilio-style, signed status callbacks: sent, then the final status."""
        validator = RequestValidator(self.auth_token)
        async with aiohttp.ClientSession() as http:
            for status in ("sent", message["status"]):
                params = {
                    "AccountSid": self.account_sid,
                    "ApiVersion": "2010-04-01",
                    "From": message["from"] or "",
                    "MessageSid": message["sid"],
                    "SmsSid": message["sid"],
                    "MessageStatus": status,
                    "SmsStatus": status,
                    "To": message["to"],
                }
                if status == "undelivered":
                    params["ErrorCode"] = str(message["error_code"])
                signature = validator.compute_signature(url, params)
                try:
                    async with http.post(
                        url, data=params, headers={"X-Twilio-Signature": signature}
                    ) as response:
                        self.callbacks_sent.append({**params, "_http": str(response.status)})
                except aiohttp.ClientError as exc:
                    log.warning("status callback to %s failed: %s", url, exc)
                    return

    async def list(self, request: web.Request) -> web.Response:
        if (denied := self._authorised(request)) is not None:
            return denied
        q = request.query
        found = list(self.messages)
        if "To" in q:
            found = [m for m in found if m["to"] == q["To"]]
        if "From" in q:
            found = [m for m in found if m["from"] == q["From"]]
        for key, test in (
            ("DateSent", lambda d, v: d.date() == v.date()),
            ("DateSent>", lambda d, v: d >= v),
            ("DateSent<", lambda d, v: d <= v),
        ):
            if key in q:
                try:
                    bound = _parse_date(q[key])
                except ValueError:
                    return _error(400, 20001, f"Invalid {key}: {q[key]!r}")
                found = [m for m in found if test(datetime.fromisoformat(m["_created"]), bound)]
        found.reverse()  # newest first, as Twilio lists them
        size = min(int(q.get("PageSize", "50")), 1000)
        page = [self._resource(m) for m in found[:size]]
        uri = request.path_qs
        return web.json_response(
            {
                "messages": page,
                "page": 0,
                "page_size": size,
                "start": 0,
                "end": max(0, len(page) - 1),
                "uri": uri,
                "first_page_uri": uri,
                "next_page_uri": None,
                "previous_page_uri": None,
            }
        )

    async def fetch(self, request: web.Request) -> web.Response:
        if (denied := self._authorised(request)) is not None:
            return denied
        sid = request.match_info["sid"]
        for m in self.messages:
            if m["sid"] == sid:
                return web.json_response(self._resource(m))
        return _error(404, 20404, f"The requested resource /Messages/{sid}.json was not found")

    # -- running -----------------------------------------------------------------------------

    async def serve(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    def start(self, host: str = "127.0.0.1", port: int = 0) -> SmsSink:
        """Serve on a background thread (tests, and the stack supervisor's child)."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            try:
                self._loop.run_until_complete(self.serve(host, port))
            except BaseException as exc:  # reported to the starting thread
                errors.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="sms-sink", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        loop = self._loop

        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            loop.stop()

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        if self._thread is not None:
            self._thread.join(10)


def _parse_date(value: str) -> datetime:
    value = value.strip()
    if len(value) == 10:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path(".clientela/sms"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s sms %(levelname)s %(message)s")
    sink = SmsSink(args.dir)
    logging.info("SMS sink on %s:%d, store %s", args.host, args.port, sink.store)
    web.run_app(sink.app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()


def simulate_reply(
    settings: Any, sender: str, body: str, *, timeout: float = 30
) -> tuple[int, str]:
    """A reply from ``sender``, delivered to the API's incoming-message webhook as Twilio
    would deliver it (its fields, a new MessageSid, the sink's signature): (status, body)."""
    import httpx

    path = "/webhooks/twilio/inbound"
    account, token, number = settings.twilio_credentials
    params = {
        "MessageSid": "SM" + secrets.token_hex(16),
        "AccountSid": account,
        "From": sender,
        "To": number,
        "Body": body,
        "NumMedia": "0",
    }
    signature = RequestValidator(token).compute_signature(
        f"{settings.recipient_base_url}{path}", params
    )
    r = httpx.post(
        f"http://{settings.api_host}:{settings.api_port}{path}",
        data=params,
        headers={"X-Twilio-Signature": signature},
        timeout=timeout,
    )
    return r.status_code, r.text
