"""The welcome journey (journeys/welcome.yaml) on the real Temporal dev server, catcher and sink."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import Client

from clientela.devstack.sms_sink import SmsSink
from clientela.devstack.smtp_catcher import SmtpCatcher, read_outbox
from clientela.journeys.router import Happening, enter, signal_event
from clientela.journeys.runs import journey_status
from clientela.settings import Settings
from tests.factories import make_customer
from workflows import search
from workflows.journey import JourneyStatus, JourneyWorkflow

TWO_DAYS = 2 * 24 * 3600.0


def quick(settings: Settings, follow_up: float = 1.0) -> Settings:
    """Journey waits shrunk so that the welcome's two days last ``follow_up`` seconds."""
    return settings.model_copy(update={"journey_time_scale": follow_up / TWO_DAYS})


async def sign_up(client: Client, settings: Settings, customer_id: str) -> tuple[str, bool]:
    """What POST /events does for a sign-up: the journeys it triggers; (welcome id, started)."""
    entries = await enter(
        client, settings, customer_id, Happening(kind="event", event="signup", key="signup")
    )
    [welcome] = [e for e in entries if e.journey == "welcome"]
    return welcome.workflow_id, welcome.started


async def finished(client: Client, wid: str) -> JourneyStatus:
    handle = client.get_workflow_handle_for(JourneyWorkflow.run, wid)
    return await asyncio.wait_for(handle.result(), timeout=60)


async def test_welcome_then_reminder_when_no_response(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher
) -> None:
    cid = make_customer(settings.db_url, preferred_channel="email", locale="en", first_name="Sam")
    wid, started = await sign_up(client, quick(settings), cid)
    assert (wid, started) == (f"journey-welcome-{cid}", True)
    result = await finished(client, wid)
    assert [m.state for m in result.messages] == ["sent", "sent"]
    assert result.events == [] and result.exit_reason == "welcomed, reminded"
    subjects = [m["subject"] for m in read_outbox(settings.outbox_dir)]
    assert subjects == ["Welcome, Sam!", "Sam, your account is ready when you are"]


async def test_a_response_changes_the_follow_up(
    client: Client, settings: Settings, worker: None, sms_sink: SmsSink
) -> None:
    cid = make_customer(settings.db_url, preferred_channel="sms", locale="en", first_name="Kim")
    fast = quick(settings, follow_up=30)
    wid, _ = await sign_up(client, fast, cid)
    handle = client.get_workflow_handle(wid)
    for _ in range(100):  # wait until the welcome went out
        if sms_sink.messages:
            break
        await asyncio.sleep(0.1)
    assert await signal_event(client, fast, cid, "reply", "sms") == [wid]
    result = await finished(client, wid)
    assert result.events == ["reply"] and result.exit_reason == "welcomed, and they responded"
    bodies = [m["body"] for m in sms_sink.messages]
    assert bodies[0].startswith("Welcome Kim!")
    assert bodies[1].startswith("Thanks Kim!")
    status = await journey_status(client, "welcome", cid)
    assert status["step"] == "done" and status["execution"] == "COMPLETED"
    assert status["trail"][2] == "responded: responded -> engaged"
    desc = await handle.describe()
    assert desc.typed_search_attributes.get(search.CUSTOMER_ID) == cid
    assert desc.typed_search_attributes.get(search.JOURNEY) == "welcome"


async def test_second_trigger_never_starts_a_second_welcome(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher
) -> None:
    cid = make_customer(settings.db_url, preferred_channel="email")
    fast = quick(settings, 0.2)
    wid, first = await sign_up(client, fast, cid)
    _, while_running = await sign_up(client, fast, cid)
    await finished(client, wid)
    _, after_finish = await sign_up(client, fast, cid)
    assert (first, while_running, after_finish) == (True, False, False)
    assert len(read_outbox(settings.outbox_dir)) == 2


async def test_an_event_without_a_journey_tells_nobody(client: Client, settings: Settings) -> None:
    assert await signal_event(client, settings, "nobody", "click", "email") == []


async def test_customer_without_consent_gets_nothing(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher
) -> None:
    cid = make_customer(settings.db_url, email_consent=False, sms_consent=False)
    wid, _ = await sign_up(client, quick(settings, 0.2), cid)
    result = await finished(client, wid)
    assert [m.state for m in result.messages] == ["suppressed", "suppressed"]
    assert result.messages[0].reason == "email: no consent; sms: no consent"
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
        wid, _ = await sign_up(client, quiet, cid)
        handle = client.get_workflow_handle_for(JourneyWorkflow.run, wid)
        for _ in range(50):
            status = await handle.query(JourneyWorkflow.status)
            if status.waiting_until:
                break
            await asyncio.sleep(0.1)
        assert status.waiting_until and sms_sink.messages == []  # nothing before the hours
        result = await handle.result()
    assert [(m.state, m.channel) for m in result.messages] == [("sent", "sms"), ("sent", "sms")]
    assert any(line.startswith("welcome: quiet hours") for line in result.trail)
    assert len(sms_sink.messages) == 2


@pytest.mark.parametrize("sandbox", ["fast", "strict"])
async def test_the_journey_module_is_imported_once_or_for_every_run(
    client: Client,
    settings: Settings,
    catcher: SmtpCatcher,
    monkeypatch: pytest.MonkeyPatch,
    sandbox: str,
) -> None:
    """A worker (``fast``) runs journeys with the module it imported itself; the tests'
    workers (``strict``) import it again for each run, so Temporal's sandbox checks every
    call the journey's code makes. Both run a welcome, a response and its follow-up alike."""
    import workflows.journey
    from worker import build_worker

    real = workflows.journey.stage_of
    # Seen by the run only if it uses this process's module.
    monkeypatch.setattr(workflows.journey, "stage_of", lambda j, s: f"outside:{real(j, s)}")
    mode = quick(settings, follow_up=30).model_copy(update={"workflow_sandbox": sandbox})
    cid = make_customer(settings.db_url, preferred_channel="email", locale="en", first_name="Ada")
    async with build_worker(client, mode):
        wid, _ = await sign_up(client, mode, cid)
        for _ in range(100):  # until the welcome went out
            if read_outbox(settings.outbox_dir):
                break
            await asyncio.sleep(0.1)
        assert await signal_event(client, mode, cid, "click", "email") == [wid]
        result = await finished(client, wid)
        desc = await client.get_workflow_handle(wid).describe()
    assert result.exit_reason == "welcomed, and they responded"
    subjects = [m["subject"] for m in read_outbox(settings.outbox_dir)]
    assert subjects == ["Welcome, Ada!", "Ada, here is what to try next"]
    stage = desc.typed_search_attributes.get(search.STAGE)
    assert stage == ("outside:welcome:done" if sandbox == "fast" else "welcome:done")
