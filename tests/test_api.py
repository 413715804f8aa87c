"""HTTP intake: sign-ups start the welcome journey, responses reach it, bad input is named."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

import httpx
import pytest
from temporalio.client import Client
from twilio.request_validator import RequestValidator

from activities.contracts import MessageRequest
from api.app import create_app
from clientela.devstack.sms_sink import SmsSink
from clientela.devstack.smtp_catcher import SmtpCatcher, read_outbox
from clientela.messaging.sending import Sender
from clientela.settings import STATUS_CALLBACK_PATH, Settings
from tests.factories import make_customer
from tests.serving import api
from workflows.journey import JourneyWorkflow

#: Journeys' two days last 30 seconds, and service levels shrink alike (4 hours: 2.5 s).
FAST = 30 / (2 * 24 * 3600)


@pytest.fixture
async def http(client: Client, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    fast = settings.model_copy(update={"journey_time_scale": FAST})
    async with api(client, fast) as c:
        yield c


SIGNUP = {
    "type": "signup",
    "external_id": "W1",
    "first_name": "Marta",
    "email": "marta@example.com",
    "locale": "es",
    "email_consent": True,
}


async def test_signup_creates_customer_and_starts_journey(
    http: httpx.AsyncClient, client: Client, worker: None, catcher: SmtpCatcher
) -> None:
    cid = f"W-{uuid.uuid4().hex[:8]}"
    signup = {**SIGNUP, "external_id": cid}
    r = await http.post("/events", json=signup)
    assert r.status_code == 202, r.text
    assert r.json() == {
        "customer_id": cid,
        "created": True,
        "journeys": [
            {
                "journey": "welcome",
                "workflow_id": f"journey-welcome-{cid}",
                "started": True,
                "reason": None,
            }
        ],
    }
    again = await http.post("/events", json=signup)
    assert again.json()["created"] is False
    assert again.json()["journeys"][0]["started"] is False
    for _ in range(100):
        if read_outbox(catcher.handler.outbox):
            break
        await asyncio.sleep(0.1)
    click = await http.post(
        "/events", json={"type": "click", "customer_id": cid, "channel": "email"}
    )
    assert click.status_code == 202
    assert click.json()["journeys_told"] == [f"journey-welcome-{cid}"]
    result = await client.get_workflow_handle_for(
        JourneyWorkflow.run, f"journey-welcome-{cid}"
    ).result()
    assert result.events == ["click"] and result.exit_reason == "welcomed, and they responded"
    view = (await http.get(f"/customers/{cid}")).json()
    assert view["profile"]["first_name"] == "Marta"
    assert view["consent"]["email"]["granted"] is True
    assert view["consent"]["email"]["source"] == "signup"
    kinds = [(h["direction"], h["kind"]) for h in view["history"]]
    assert ("inbound", "click") in kinds and ("outbound", "message") in kinds
    assert [m["template"] for m in view["messages"]] == ["welcome", "welcome_engaged"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**SIGNUP, "email": "not-an-email"}, "email"),
        ({**SIGNUP, "phone": "600 123"}, "phone"),
        ({**SIGNUP, "locale": "xx"}, "locale"),
        ({**SIGNUP, "timezone": "Mars/Olympus"}, "timezone"),
        ({**SIGNUP, "birthday": "31/02/1990"}, "birthday"),
        ({k: v for k, v in SIGNUP.items() if k != "external_id"}, "external_id"),
        ({**SIGNUP, "favourite": "blue"}, "favourite"),
        ({"type": "click"}, "customer_id"),
        ({"type": "purchase!", "customer_id": "W1"}, "type"),
    ],
)
async def test_bad_events_are_422_naming_the_field(
    http: httpx.AsyncClient, body: dict, field: str
) -> None:
    r = await http.post("/events", json=body)
    assert r.status_code == 422
    # The field is named in the error's location, or in its message for a bad "type".
    named = [f"{err['loc']} {err['msg']}" for err in r.json()["detail"]]
    assert any(f"'{field}'" in text for text in named), named


async def test_response_for_unknown_customer_is_404(http: httpx.AsyncClient) -> None:
    r = await http.post("/events", json={"type": "open", "customer_id": "ghost"})
    assert r.status_code == 404 and "ghost" in r.json()["detail"]


def signed(settings: Settings, params: dict[str, str]) -> dict[str, str]:
    url = f"{settings.recipient_base_url}{STATUS_CALLBACK_PATH}"
    token = settings.twilio_credentials[1]
    return {"X-Twilio-Signature": RequestValidator(token).compute_signature(url, params)}


async def test_twilio_status_callbacks_move_the_ledger(
    http: httpx.AsyncClient, settings: Settings, sms_sink: SmsSink
) -> None:
    ok = make_customer(settings.db_url, preferred_channel="sms", phone="+34655000001")
    lost = make_customer(settings.db_url, preferred_channel="sms", phone="+34655000002")
    sender = Sender(settings, "t/1/1")
    try:
        sent_ok = await sender.deliver(MessageRequest(key="d1", customer_id=ok, template="welcome"))
        sent_lost = await sender.deliver(
            MessageRequest(key="d2", customer_id=lost, template="welcome")
        )
    finally:
        await sender.close()

    async def report(sid: str, status: str, **extra: str) -> httpx.Response:
        params = {"MessageSid": sid, "MessageStatus": status, **extra}
        return await http.post(STATUS_CALLBACK_PATH, data=params, headers=signed(settings, params))

    assert (await report(sent_ok.provider_id, "sent")).status_code == 204
    assert (await report(sent_ok.provider_id, "delivered")).status_code == 204
    assert (
        await report(sent_lost.provider_id, "undelivered", ErrorCode="30003")
    ).status_code == 204
    # A late "sent" never moves a delivered message back.
    assert (await report(sent_ok.provider_id, "sent")).status_code == 204
    states = {m["key"]: m for m in (await http.get(f"/customers/{ok}")).json()["messages"]}
    assert states["d1"]["state"] == "delivered"
    lost_row = (await http.get(f"/customers/{lost}")).json()["messages"][0]
    assert lost_row["state"] == "failed" and "error 30003" in lost_row["reason"]

    forged = {"MessageSid": sent_ok.provider_id, "MessageStatus": "failed"}
    r = await http.post(STATUS_CALLBACK_PATH, data=forged, headers={"X-Twilio-Signature": "AAAA"})
    assert r.status_code == 403
    assert (await report(sent_ok.provider_id, "exploded")).status_code == 422


async def test_api_key_is_required_when_set(client: Client, settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"api_key": "k-123456"}), client)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as anonymous:
        assert (await anonymous.get("/customers/x")).status_code == 401
        assert (await anonymous.post("/events", json=SIGNUP)).status_code == 401
        wrong = await anonymous.get("/customers/x", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        right = await anonymous.get("/customers/x", headers={"Authorization": "Bearer k-123456"})
        assert right.status_code == 404  # authorised; the customer just does not exist
        assert (await anonymous.get("/health")).status_code == 200


def test_an_exposed_api_needs_a_key() -> None:
    with pytest.raises(ValueError, match="set CLIENTELA_API_KEY"):
        Settings(api_host="0.0.0.0")
    assert Settings(api_host="0.0.0.0", api_key="k-123456").api_key == "k-123456"


async def test_purchase_complaint_and_profile_events_redecide_the_tier(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    from tests.test_rules_apply import apply_directly

    cid = make_customer(settings.db_url)
    apply_directly(settings.db_url)
    bought = await http.post(
        "/events",
        json={"type": "purchase", "customer_id": cid, "amount": "1500.00", "product": "tv"},
    )
    assert bought.status_code == 202, bought.text
    body = bought.json()
    assert (body["customer_id"], body["tier"], body["tier_changed"]) == (cid, "A", True)
    # The purchase and the move up to tier A let the customer into their journeys.
    assert {j["journey"]: j["started"] for j in body["journeys"]} == {
        "cross_sell": True,
        "tier_upgrade": True,
    }
    complained = await http.post(
        "/events", json={"type": "complaint", "customer_id": cid, "code": "BILLING-01"}
    )
    body = complained.json()
    assert body["tier"] == "A" and body["tier_changed"] is False
    assert body["complaint"]["responsible"] == "customer service"
    due = datetime.fromisoformat(body["complaint"]["due_at"])
    level = timedelta(hours=4) * FAST  # tier A's response time, at the API's time scale
    assert level - timedelta(seconds=1) < due - datetime.now(due.tzinfo) <= level
    moved = await http.post("/events", json={"type": "profile", "external_id": cid, "locale": "en"})
    assert moved.json()["tier"] == "A" and moved.json()["created"] is False
    view = (await http.get(f"/customers/{cid}")).json()
    assert [(h["to"], h["trigger"]) for h in view["tier_history"]] == [
        ("C", "rules apply"),
        ("A", "purchase"),
    ]
    assert view["transactions"][0]["amount"] == "1500.00"
    assert view["complaints"][0]["code"] == "BILLING-01"
    assert view["profile"]["locale"] == "en"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "purchase", "customer_id": "x", "amount": "abc"}, "amount"),
        ({"type": "purchase", "customer_id": "x", "amount": "1.234"}, "amount"),
        ({"type": "purchase", "customer_id": "x", "amount": 5, "currency": "euro"}, "currency"),
        ({"type": "complaint", "customer_id": "x", "code": "has space"}, "code"),
        ({"type": "profile", "external_id": "x", "email": "nope"}, "email"),
    ],
)
async def test_bad_realtime_events_are_422(http: httpx.AsyncClient, body: dict, field: str) -> None:
    r = await http.post("/events", json=body)
    assert r.status_code == 422
    assert any(field in str(err["loc"]) for err in r.json()["detail"]), r.json()


async def test_realtime_event_for_unknown_customer_is_404(http: httpx.AsyncClient) -> None:
    r = await http.post("/events", json={"type": "purchase", "customer_id": "ghost", "amount": 1})
    assert r.status_code == 404 and "ghost" in r.json()["detail"]


async def test_unsubscribe_link_withdraws_consent_before_the_next_message(
    http: httpx.AsyncClient, settings: Settings, catcher: SmtpCatcher
) -> None:
    import email
    import email.policy

    cid = make_customer(settings.db_url, preferred_channel="email", locale="en", sms_consent=False)
    sender = Sender(settings, "t/1/1")
    try:
        await sender.deliver(MessageRequest(key="u1", customer_id=cid, template="welcome"))
    finally:
        await sender.close()
    [entry] = read_outbox(settings.outbox_dir)
    raw = (settings.outbox_dir / entry["file"]).read_bytes()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = str(message["List-Unsubscribe"]).strip().strip("<>")
    path = link.removeprefix(settings.recipient_base_url)
    html_part = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert link in html_part and "Unsubscribe" in html_part
    page = await http.get(path)
    assert page.status_code == 200 and '<form method="post"' in page.text
    # Opening the page changes nothing; the one-click POST does.
    assert (await http.get(f"/customers/{cid}")).json()["consent"]["email"]["granted"] is True
    # The link says nothing about whom it is for.
    token = path.removeprefix("/u/")
    assert cid not in link and cid.encode() not in base64.urlsafe_b64decode(token + "==")
    done = await http.post(path, content=b"List-Unsubscribe=One-Click")
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    again = await http.post(path, content=b"List-Unsubscribe=One-Click")  # a second click
    assert again.status_code == 200 and "already unsubscribed" in again.text
    view = (await http.get(f"/customers/{cid}")).json()
    consent = view["consent"]["email"]
    assert (consent["granted"], consent["source"]) == (False, "unsubscribe link")
    kinds = [(h["direction"], h["kind"]) for h in view["history"]]
    assert kinds.count(("inbound", "unsubscribe")) == 1
    sender = Sender(settings, "t/1/2")
    try:
        after = await sender.deliver(MessageRequest(key="u2", customer_id=cid, template="welcome"))
    finally:
        await sender.close()
    assert after.state == "suppressed" and "email: no consent" in after.reason
    forged = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    refused = await http.post(forged)
    assert refused.status_code == 404 and "This link does not work" in refused.text
    assert (await http.get(f"/customers/{cid}")).json()["history"] == view["history"]


async def test_a_recipients_pages_speak_their_language(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    from clientela.messaging.links import token_for

    cid = make_customer(settings.db_url, locale="es", email_consent=True)
    path = f"/u/{token_for(settings, cid, 'email', None)}"
    page = await http.get(path)
    assert page.status_code == 200 and '<html lang="es">' in page.text
    assert "¿Quieres dejar de recibir estos mensajes por correo electrónico?" in page.text
    assert "Darme de baja</button>" in page.text
    done = await http.post(path)
    assert "Te has dado de baja" in done.text
    bad = await http.get("/u/" + "A" * 40)
    assert bad.status_code == 404 and "This link does not work" in bad.text


async def test_fernet_links_of_earlier_versions_still_work(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    """Unsubscribe and preference links were Fernet tokens before AES-SIV: those in people's
    mailboxes still open their pages, and each kind of link opens only its own page."""
    from clientela.messaging.links import _fernet, preferences_token, secret_key, token_for

    cid = make_customer(settings.db_url, locale="en", email_consent=True)
    fernet = _fernet(secret_key(settings))
    old_unsubscribe = fernet.encrypt(f"{cid}\x1femail\x1f".encode()).decode().rstrip("=")
    old_preferences = fernet.encrypt(f"preferences\x1f{cid}".encode()).decode().rstrip("=")
    page = await http.get(f"/p/{old_preferences}")
    assert page.status_code == 200 and "Your preferences" in page.text
    for wrong in (
        f"/u/{old_preferences}",
        f"/p/{old_unsubscribe}",
        f"/u/{preferences_token(settings, cid)}",
        f"/p/{token_for(settings, cid, 'email', None)}",
    ):
        refused = await http.get(wrong)
        assert refused.status_code == 404 and "This link does not work" in refused.text, wrong
    done = await http.post(f"/u/{old_unsubscribe}")
    assert done.status_code == 200 and "You are unsubscribed" in done.text


async def test_old_signed_unsubscribe_links_still_work(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    """Links sent before tokens were opaque are still in people's mailboxes."""
    from clientela.messaging.links import _pack

    cid = make_customer(settings.db_url, locale="en", email_consent=True)
    done = await http.post(f"/u/{_pack(settings, cid, 'email', '')}")
    assert done.status_code == 200 and "You are unsubscribed" in done.text
