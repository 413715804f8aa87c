"""Delivery reports that come early are kept and applied; reports that never come are
looked up with the provider."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlmodel import select
from temporalio.client import Client

from activities.contracts import MessageRequest
from api.app import create_app
from api.sweep import settle_deliveries
from clientela.db import session_scope
from clientela.devstack.sms_sink import SmsSink
from clientela.messaging.channels import SendAccepted
from clientela.messaging.sending import Prepared, Sender, _Ledger
from clientela.messaging.templating import RenderedSms
from clientela.settings import STATUS_CALLBACK_PATH, Settings
from models import Customer, DeliveryReport, Message
from tests.factories import make_customer
from tests.serving import api
from tests.test_api import signed


@pytest.fixture
async def http(client: Client, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with api(client, settings) as c:
        yield c


def row(settings: Settings, key: str) -> Message:
    with session_scope(settings.db_url) as session:
        return session.exec(select(Message).where(Message.key == key)).one()


async def test_a_report_before_the_send_is_recorded_is_applied_when_it_is(
    http: httpx.AsyncClient, settings: Settings, sms_sink: SmsSink
) -> None:
    cid = make_customer(settings.db_url, preferred_channel="sms", phone="+34655000010")
    sender = Sender(settings, "early/1/1")
    [prepared] = await _claimed(sender, cid, "early-1")
    ledger = _Ledger.of(settings)
    assert await ledger.commit(sender, [(prepared, None)]) == [True]  # handed over
    # The provider calls back before our answer is written.
    params = {"MessageSid": "SMearly0001", "MessageStatus": "delivered"}
    r = await http.post(STATUS_CALLBACK_PATH, data=params, headers=signed(settings, params))
    assert r.status_code == 204
    assert row(settings, "early-1").state == "sending"
    [outcome] = await ledger.commit(sender, [(prepared, SendAccepted("SMearly0001"))])
    assert outcome.state == "sent"  # what the provider answered; the kept report follows
    assert row(settings, "early-1").state == "delivered"
    with session_scope(settings.db_url) as session:
        assert session.exec(select(DeliveryReport)).all() == []


async def test_a_kept_report_missed_by_the_answer_is_applied_by_the_sweep(
    client: Client, settings: Settings, sms_sink: SmsSink
) -> None:
    cid = make_customer(settings.db_url, preferred_channel="sms", phone="+34655000011")
    sender = Sender(settings, "race/1/1")
    try:
        sent = await sender.deliver(
            MessageRequest(key="race-1", customer_id=cid, template="welcome")
        )
    finally:
        await sender.close()
    assert sent.state == "sent"
    with session_scope(settings.db_url) as session:  # written as the answer committed
        session.add(DeliveryReport(provider_id=sent.provider_id, status="delivered"))
    done = await settle_deliveries(create_app(settings, client))
    assert done["applied"] == 1
    assert row(settings, "race-1").state == "delivered"


async def test_a_report_that_never_comes_is_looked_up_with_the_provider(
    client: Client, settings: Settings, sms_sink: SmsSink
) -> None:
    sms_sink.undeliverable[r"\+34655000013"] = 30003
    ok = make_customer(settings.db_url, preferred_channel="sms", phone="+34655000012")
    lost = make_customer(settings.db_url, preferred_channel="sms", phone="+34655000013")
    sender = Sender(settings, "quiet/1/1")
    try:
        for key, cid in (("quiet-ok", ok), ("quiet-lost", lost)):
            await sender.deliver(MessageRequest(key=key, customer_id=cid, template="welcome"))
    finally:
        await sender.close()
    # Nobody reported (the callback address is not reachable from the sink here).
    assert {row(settings, k).state for k in ("quiet-ok", "quiet-lost")} == {"sent"}
    app = create_app(settings, client)
    assert (await settle_deliveries(app))["looked_up"] == 0  # not overdue yet
    now = settings.model_copy(update={"delivery_report_wait": timedelta(0)})
    done = await settle_deliveries(create_app(now, client))
    assert done == {"applied": 0, "looked_up": 2, "settled": 2}
    assert row(settings, "quiet-ok").state == "delivered"
    failed = row(settings, "quiet-lost")
    assert failed.state == "failed" and "error 30003" in failed.reason


async def _claimed(sender: Sender, cid: str, key: str) -> list[Prepared]:
    import asyncio

    req = MessageRequest(key=key, customer_id=cid, template="welcome")
    prepared = await asyncio.to_thread(sender._prepare_many, [req])
    assert all(isinstance(p, Prepared) for p in prepared), prepared
    assert isinstance(prepared[0].content, RenderedSms)  # type: ignore[union-attr]
    with session_scope(sender.settings.db_url) as session:
        assert session.exec(select(Customer).where(Customer.external_id == cid)).one()
    return prepared  # type: ignore[return-value]
