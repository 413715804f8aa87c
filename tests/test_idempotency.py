"""A worker killed in the middle of sending: after a restart each message is out exactly once."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path

from sqlmodel import select
from temporalio.client import Client

from clientela.channels.email import message_id_for
from clientela.db import session_scope
from clientela.devstack.smtp_catcher import SmtpCatcher, read_outbox
from clientela.settings import Settings
from models import Message
from tests.factories import make_customer
from tests.processes import start_worker
from tests.test_welcome import sign_up
from workflows.journey import JourneyWorkflow

JOURNEYS = 40


async def test_killed_worker_sends_each_message_exactly_once(
    client: Client, settings: Settings, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"journey_time_scale": 1 / (2 * 24 * 3600)})
    # A slow server keeps many messages in flight, so the kill lands in the middle of DATA.
    catcher.handler.delay_seconds = 0.15
    customers = [
        make_customer(settings.db_url, preferred_channel="email", locale="en")
        for _ in range(JOURNEYS)
    ]
    log = tmp_path / "worker.log"
    first = start_worker(settings, log)
    try:
        for cid in customers:
            await sign_up(client, settings, cid)
        deadline = time.monotonic() + 60
        while len(read_outbox(settings.outbox_dir)) < JOURNEYS // 3:
            assert time.monotonic() < deadline, log.read_text()
            assert first.poll() is None, log.read_text()
            await asyncio.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = len(read_outbox(settings.outbox_dir))
        assert killed_at < 2 * JOURNEYS, "the kill came after everything was sent"
    finally:
        if first.poll() is None:
            first.kill()

    second = start_worker(settings, log)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(
                *(
                    client.get_workflow_handle_for(
                        JourneyWorkflow.run, f"journey-welcome-{c}"
                    ).result()
                    for c in customers
                )
            ),
            timeout=180,
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)

    assert all([m.state for m in r.messages] == ["sent", "sent"] for r in results)
    outbox_ids = [m["message_id"] for m in read_outbox(settings.outbox_dir)]
    expected = [
        message_id_for(f"journey:welcome:{c}:once:{step}", settings.mail_from)
        for c in customers
        for step in ("welcome", "reminder")
    ]
    duplicates = {i for i in outbox_ids if outbox_ids.count(i) > 1}
    assert not duplicates, f"sent twice: {duplicates}"
    assert sorted(outbox_ids) == sorted(expected)
    with session_scope(settings.db_url) as session:
        rows = session.exec(select(Message)).all()
    assert len(rows) == 2 * JOURNEYS and {r.state for r in rows} == {"sent"}
    # The kill interrupted sends in flight: those messages needed a second attempt.
    assert any(r.attempts > 1 for r in rows)


async def test_killed_worker_mid_campaign_sends_each_member_exactly_once(
    client: Client, settings: Settings, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    from clientela.campaigns import lifecycle
    from tests.test_campaign_workflow import (
        RULES,
        members_of,
        tiered_customers,
        wait_stage,
        write_spec,
    )

    # Small pages in two lanes and a slow server: the kill lands with pages half sent.
    settings = settings.model_copy(update={"campaign_page_size": 15, "campaign_lanes": 2})
    catcher.handler.delay_seconds = 0.05
    tiered_customers(settings.db_url, 150, locale="en")
    cid = f"c-kill-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "worker.log"
    first = start_worker(settings, log)
    try:
        _, handle = await lifecycle.create(client, settings, write_spec(tmp_path, cid), RULES)
        await wait_stage(client, cid, "awaiting_approval")
        await lifecycle.decide(client, cid, "approve", by="ana")
        deadline = time.monotonic() + 60
        while len(read_outbox(settings.outbox_dir)) < 40:
            assert time.monotonic() < deadline, log.read_text()
            assert first.poll() is None, log.read_text()
            await asyncio.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = len(read_outbox(settings.outbox_dir))
    finally:
        if first.poll() is None:
            first.kill()

    second = start_worker(settings, log)
    try:
        await wait_stage(client, cid, "tracking")
        await lifecycle.control(client, cid, "close")
        final = await asyncio.wait_for(handle.result(), timeout=120)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)

    treated = [e for m, e in members_of(settings.db_url, cid) if m.group == "treated"]
    assert killed_at < len(treated) == final.treated == 120  # 20% of 150 held out
    outbox_ids = [m["message_id"] for m in read_outbox(settings.outbox_dir)]
    assert len(outbox_ids) == len(set(outbox_ids)), "a member got the campaign twice"
    expected = {message_id_for(f"campaign:{cid}:{e}:message", settings.mail_from) for e in treated}
    assert set(outbox_ids) == expected
    with session_scope(settings.db_url) as session:
        rows = session.exec(select(Message).where(Message.campaign == cid)).all()
    assert len(rows) == 120 and {r.state for r in rows} == {"sent"}
    assert final.counts == {"sent": 120}
