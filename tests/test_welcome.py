"""The welcome journey on the real Temporal dev server, catcher and sink."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.client import Client

from clientela.devstack.sms_sink import SmsSink
from clientela.devstack.smtp_catcher import SmtpCatcher, read_outbox
from clientela.journeys import journey_status, signal_response, start_welcome
from clientela.settings import Settings
from tests.factories import make_customer
from workflows import search
from workflows.welcome import WelcomeJourney, WelcomeStatus


def quick(settings: Settings, follow_up: float = 1.0) -> Settings:
    return settings.model_copy(update={"welcome_follow_up": timedelta(seconds=follow_up)})


async def finished(client: Client, wid: str) -> WelcomeStatus:
    handle = client.get_workflow_handle_for(WelcomeJourney.run, wid)
    return await asyncio.wait_for(handle.result(), timeout=60)


async def test_welcome_then_reminder_when_no_response(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher
) -> None:
    cid = make_customer(settings.db_url, preferred_channel="email", locale="en", first_name="Sam")
    wid, started = await start_welcome(client, quick(settings), cid)
    assert (wid, started) == (f"welcome-{cid}", True)
    result = await finished(client, wid)
    assert result.welcome.state == "sent" and result.follow_up.state == "sent"
    assert result.responded is False
    subjects = [m["subject"] for m in read_outbox(settings.outbox_dir)]
    assert subjects == ["Welcome, Sam!", "Sam, your account is ready when you are"]


async def test_response_signal_changes_the_follow_up(
    client: Client, settings: Settings, worker: None, sms_sink: SmsSink
) -> None:
    cid = make_customer(settings.db_url, preferred_channel="sms", locale="en", first_name="Kim")
    wid, _ = await start_welcome(client, quick(settings, follow_up=30), cid)
    handle = client.get_workflow_handle(wid)
    for _ in range(100):  # wait until the welcome went out
        if sms_sink.messages:
            break
        await asyncio.sleep(0.1)
    assert await signal_response(client, cid, "reply", "sms") is True
    result = await finished(client, wid)
    assert result.responded and result.response_kinds == ["reply"]
    bodies = [m["body"] for m in sms_sink.messages]
    assert bodies[0].startswith("Welcome Kim!")
    assert bodies[1].startswith("Thanks Kim!")
    status = await journey_status(client, "welcome", cid)
    assert status["stage"] == "done" and status["execution"] == "COMPLETED"
    desc = await handle.describe()
    assert desc.typed_search_attributes.get(search.CUSTOMER_ID) == cid
    assert desc.typed_search_attributes.get(search.JOURNEY) == "welcome"


async def test_second_trigger_never_starts_a_second_journey(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher
) -> None:
    cid = make_customer(settings.db_url, preferred_channel="email")
    _, first = await start_welcome(client, quick(settings, 0.2), cid)
    _, while_running = await start_welcome(client, quick(settings, 0.2), cid)
    await finished(client, f"welcome-{cid}")
    _, after_finish = await start_welcome(client, quick(settings, 0.2), cid)
    assert (first, while_running, after_finish) == (True, False, False)
    assert len(read_outbox(settings.outbox_dir)) == 2


async def test_signal_without_a_journey_is_reported(client: Client, settings: Settings) -> None:
    assert await signal_response(client, "nobody", "click", "email") is False


async def test_customer_without_consent_gets_nothing(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher
) -> None:
    cid = make_customer(settings.db_url, email_consent=False, sms_consent=False)
    wid, _ = await start_welcome(client, quick(settings, 0.2), cid)
    result = await finished(client, wid)
    assert result.welcome.state == "suppressed" and result.follow_up.state == "suppressed"
    assert read_outbox(settings.outbox_dir) == []


async def test_a_welcome_sms_in_quiet_hours_waits_until_they_end(
    client: Client, settings: Settings, sms_sink: SmsSink
) -> None:
    from tests.test_campaign_execution import opening_soon
    from worker import build_worker

    zone, hours = opening_soon()
    quiet = quick(settings).model_copy(update={"sms_hours": hours})
    cid = make_customer(settings.db_url, timezone=zone, preferred_channel="sms", email=None)
    async with build_worker(client, quiet):
        wid, _ = await start_welcome(client, quiet, cid)
        handle = client.get_workflow_handle_for(WelcomeJourney.run, wid)
        for _ in range(50):
            status = await handle.query(WelcomeJourney.status)
            if status.waiting_until:
                break
            await asyncio.sleep(0.1)
        assert status.waiting_until and sms_sink.messages == []  # nothing before the hours
        result = await handle.result()
    assert result.welcome is not None and result.welcome.state == "sent"
    assert result.welcome.channel == "sms" and len(sms_sink.messages) == 2  # welcome, follow-up
