"""Replies to our SMS: STOP and START change consent (logged), HELP is answered in the
customer's language, anything else is a response in their history; signed, and once."""

from __future__ import annotations

from typing import Any

from sqlmodel import select
from temporalio.client import Client
from twilio.request_validator import RequestValidator

from clientela.customers.records import consents
from clientela.db import session_scope
from clientela.settings import Settings
from models import Customer, Interaction, Suppression
from tests.factories import make_customer
from tests.serving import api

PATH = "/webhooks/twilio/inbound"


def signed(settings: Settings, params: dict[str, str]) -> dict[str, Any]:
    url = f"{settings.recipient_base_url}{PATH}"
    signature = RequestValidator(settings.twilio_credentials[1]).compute_signature(url, params)
    return {"data": params, "headers": {"X-Twilio-Signature": signature}}


def history(settings: Settings, external_id: str) -> list[tuple[str, str]]:
    with session_scope(settings.db_url) as session:
        rows = session.exec(
            select(Interaction.kind, Interaction.outcome)
            .join(Customer)
            .where(Customer.external_id == external_id)
            .order_by(Interaction.id)
        ).all()
        return [(k, o) for k, o in rows]


def sms_consent(settings: Settings, external_id: str) -> bool | None:
    with session_scope(settings.db_url) as session:
        customer = session.exec(select(Customer).where(Customer.external_id == external_id)).one()
        assert customer.id is not None
        row = consents(session=session, customer_id=customer.id).get("sms")
        return row.granted if row else None


async def test_keywords_change_consent_once_and_help_is_answered(
    client: Client, settings: Settings, sms_sink: object
) -> None:
    cid = make_customer(settings.db_url, phone="+34600111222", sms_consent=True, locale="es")
    before = history(settings, cid)
    async with api(client, settings) as http:
        r = await http.post(
            PATH,
            **signed(settings, {"MessageSid": "SM1", "From": "+34600111222", "Body": " stop "}),
        )
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/xml")
        assert "<Message>" not in r.text
        assert sms_consent(settings, cid) is False
        again = await http.post(
            PATH, **signed(settings, {"MessageSid": "SM1", "From": "+34600111222", "Body": "STOP"})
        )
        assert again.status_code == 200
        assert history(settings, cid)[len(before) :] == [
            ("consent", "withdrawn"),
            ("keyword", "stop"),
        ]
        r = await http.post(
            PATH,
            **signed(settings, {"MessageSid": "SM2", "From": "+34600111222", "Body": "Unstop"}),
        )
        assert sms_consent(settings, cid) is True
        r = await http.post(
            PATH, **signed(settings, {"MessageSid": "SM3", "From": "+34600111222", "Body": "HELP"})
        )
        assert "<Message>Clientela: responda STOP" in r.text
        # Twilio's own reading of the keyword wins.
        r = await http.post(
            PATH,
            **signed(
                settings,
                {
                    "MessageSid": "SM4",
                    "From": "+34600111222",
                    "Body": "para ya",
                    "OptOutType": "STOP",
                },
            ),
        )
        assert sms_consent(settings, cid) is False
        # Anything else is a response in the history.
        r = await http.post(
            PATH,
            **signed(
                settings,
                {"MessageSid": "SM5", "From": "+34600111222", "Body": "Thanks, see you Friday"},
            ),
        )
        assert r.status_code == 200, r.text
    assert history(settings, cid)[-1] == ("reply", "responded")


async def test_an_unknown_number_that_opts_out_is_suppressed(
    client: Client, settings: Settings, sms_sink: object
) -> None:
    async with api(client, settings) as http:
        await http.post(
            PATH, **signed(settings, {"MessageSid": "SM9", "From": "+15550001111", "Body": "STOP"})
        )
        with session_scope(settings.db_url) as session:
            row = session.exec(select(Suppression).where(Suppression.address == "+15550001111"))
            assert [s.channel for s in row] == ["sms"]
        await http.post(
            PATH,
            **signed(settings, {"MessageSid": "SM10", "From": "+15550001111", "Body": "start"}),
        )
        with session_scope(settings.db_url) as session:
            left = session.exec(select(Suppression).where(Suppression.address == "+15550001111"))
            assert list(left) == []


async def test_unsigned_or_malformed_replies_are_refused(
    client: Client, settings: Settings, sms_sink: object
) -> None:
    cid = make_customer(settings.db_url, phone="+34600999888", sms_consent=True)
    async with api(client, settings) as http:
        forged = await http.post(
            PATH,
            data={"MessageSid": "SMx", "From": "+34600999888", "Body": "STOP"},
            headers={"X-Twilio-Signature": "x"},
        )
        assert forged.status_code == 403
        assert sms_consent(settings, cid) is True
        bad = await http.post(PATH, **signed(settings, {"MessageSid": "SM 1", "From": "600"}))
        assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "MessageSid"
        bad = await http.post(PATH, **signed(settings, {"MessageSid": "SM11", "From": "600"}))
        assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "From"


async def test_the_dev_sink_replies_as_a_phone_would(
    settings: Settings, sms_sink: object, temporal_env: object
) -> None:
    import asyncio

    from tests.conftest import free_port
    from tests.processes import run_cli, start_api

    served = settings.model_copy(update={"api_port": free_port()})
    cid = make_customer(served.db_url, phone="+34600333444", sms_consent=True, locale="en")
    process, _base = await asyncio.to_thread(start_api, served, served.home / "api.log")
    env = {"CLIENTELA_API_PORT": str(served.api_port)}
    try:
        stop = await asyncio.to_thread(
            run_cli, served, "sms", "reply", "+34600333444", "Stop", env=env
        )
        assert stop.returncode == 0, stop.stderr
        assert sms_consent(served, cid) is False
        helped = await asyncio.to_thread(
            run_cli, served, "sms", "reply", "+34600333444", "help", env=env
        )
        assert "Answer: Clientela: reply STOP" in helped.stdout
    finally:
        process.terminate()
        process.wait(10)
    down = await asyncio.to_thread(
        run_cli, served, "sms", "reply", "+34600333444", "START", env=env
    )
    assert down.returncode == 1 and "cannot be reached" in down.stderr
