"""Events with properties from any source, in the Segment spec's shape: ``track`` starts
the journeys it triggers (whose conditions and templates read its properties) and reaches
those waiting for it, once per messageId; ``identify`` updates the profile."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlmodel import select
from temporalio.client import Client

from clientela.db import session_scope
from clientela.devstack.smtp_catcher import SmtpCatcher, read_outbox
from clientela.settings import Settings
from models import Customer, Interaction
from tests.factories import make_customer
from tests.serving import api
from tests.test_welcome import finished

CART = """\
name: cart
owner: test
trigger:
  event: cart_abandoned
  properties: {total: number}
reentry: {policy: every_time}
steps:
  - branch:
      - {if: "event.total >= 100 and tier != 'Z'", goto: remind}
    else: small
  - id: remind
    send: {template: cart_reminder, channel: email}
  - id: listen
    wait_for: {events: [Order Completed], timeout: 1d}
  - branch:
      - {if: "event:Order Completed", goto: bought}
    else: gone
  - id: bought
    exit: bought after the reminder
  - id: gone
    exit: did not buy
  - id: small
    exit: a small cart
"""


def cart_journey(tmp_path: Path, settings: Settings) -> Settings:
    folder = tmp_path / "journeys"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cart.yaml").write_text(CART)
    return settings.model_copy(
        update={"journeys_dir": folder, "journey_time_scale": 60.0 / 86400}  # 1d: a minute
    )


def track(user: str, event: str, message_id: str, **properties: Any) -> dict[str, Any]:
    """A track call as Segment sends it to a webhook: with its envelope and context."""
    return {
        "type": "track",
        "event": event,
        "userId": user,
        "anonymousId": "507f191e810c19729de860ea",
        "messageId": message_id,
        "properties": properties,
        "context": {"library": {"name": "analytics.js", "version": "2.11.1"}, "locale": "en-US"},
        "integrations": {"All": True},
        "timestamp": "2026-12-01T10:15:00.000Z",
        "sentAt": "2026-12-01T10:15:01.000Z",
        "version": 2,
    }


async def test_a_custom_event_starts_a_journey_whose_email_shows_its_properties(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    from tests.test_rules_apply import apply_directly

    s = cart_journey(tmp_path, settings)
    big = make_customer(s.db_url, locale="en", first_name="Marta", preferred_channel="email")
    small = make_customer(s.db_url, locale="en", preferred_channel="email")
    apply_directly(s.db_url)  # conditions read the customer's tier too
    async with api(client, s) as http:
        r = await http.post("/events", json=track(big, "cart_abandoned", "m-1",
                                                  total=149.9, item="Blue sofa"))  # fmt: skip
        assert r.status_code == 202, r.text
        body = r.json()
        assert body["recorded"] and not body["duplicate"]
        [entry] = body["journeys"]
        assert entry["started"] and entry["workflow_id"] == f"journey-cart-{big}-m-1"
        again = await http.post("/events", json=track(big, "cart_abandoned", "m-1",
                                                      total=149.9, item="Blue sofa"))  # fmt: skip
        assert again.status_code == 202
        assert again.json()["duplicate"] and again.json()["journeys"] == []
        r = await http.post("/events", json=track(small, "cart_abandoned", "m-2", total=20))
        [other] = r.json()["journeys"]
        while True:  # the reminder, as the catcher holds it
            sent = [m for m in read_outbox(s.outbox_dir) if m["subject"].startswith("Marta")]
            if sent:
                break
            await asyncio.sleep(0.1)
        [reminder] = sent
        assert reminder["subject"] == "Marta, your Blue sofa are waiting"
        raw = (s.outbox_dir / reminder["file"]).read_bytes()
        import email
        import email.policy

        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        text = parsed.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert "You left Blue sofa in your cart (149.9 USD)." in text
        # The journey waits for the purchase: a second custom event tells it.
        for _ in range(100):
            r = await http.post("/events", json=track(big, "Order Completed", "m-3", total=149.9))
            assert r.status_code == 202, r.text
            if r.json()["journeys_told"]:
                break  # told once it is waiting
            await asyncio.sleep(0.1)
        assert r.json()["journeys_told"] == [entry["workflow_id"]]
        result = await finished(client, entry["workflow_id"])
        assert result.exit_reason == "bought after the reminder"
        assert "event.total >= 100" in result.trail[0]
        assert (await finished(client, other["workflow_id"])).exit_reason == "a small cart"
    with session_scope(s.db_url) as session:
        rows = session.exec(
            select(Interaction.outcome, Interaction.detail, Interaction.occurred_at)
            .join(Customer)
            .where(Customer.external_id == big, Interaction.kind == "track")
            .order_by(Interaction.id)  # type: ignore[arg-type]
        ).all()
    assert [(o, d["properties"].get("item")) for o, d, _ in rows] == [
        ("cart_abandoned", "Blue sofa"),
        ("Order Completed", None),
    ]
    assert rows[0][2].isoformat().startswith("2026-12-01T10:15:00")


async def test_identify_updates_the_profile_and_bad_calls_are_named(
    client: Client, settings: Settings
) -> None:
    cid = make_customer(settings.db_url, locale="en")
    async with api(client, settings) as http:
        r = await http.post("/events", json={
            "type": "identify", "userId": cid, "messageId": "i-1",
            "traits": {"email": "eva.new@example.com", "firstName": "Eva", "plan": "gold",
                       "seats": 3, "address": {"city": "Lima"}},
            "context": {"ip": "8.8.8.8"},
        })  # fmt: skip
        assert r.status_code == 202, r.text
        bad = await http.post("/events", json={
            "type": "identify", "userId": cid, "traits": {"email": "not an address"},
        })  # fmt: skip
        assert bad.status_code == 422
        [problem] = bad.json()["detail"]
        assert problem["loc"][:3] == ["body", "traits", "email"]
        anonymous = await http.post("/events", json={"type": "track", "event": "x",
                                                     "anonymousId": "abc"})  # fmt: skip
        assert anonymous.status_code == 422 and "userId" in anonymous.text
        stranger = await http.post("/events", json=track("NOBODY-1", "cart_abandoned", "m-9"))
        assert stranger.status_code == 404 and "identify the customer first" in stranger.text
        huge = await http.post("/events", json=track(cid, "big", "m-10", blob="x" * 20000))
        assert huge.status_code == 422 and "at most 16384" in huge.text
        odd = await http.post("/events", json=track(cid, "bad\nname", "m-11"))
        assert odd.status_code == 422
    with session_scope(settings.db_url) as session:
        customer = session.exec(select(Customer).where(Customer.external_id == cid)).one()
    assert (customer.email, customer.first_name) == ("eva.new@example.com", "Eva")
    assert customer.attributes["plan"] == "gold" and customer.attributes["seats"] == 3
    assert "address" not in customer.attributes
