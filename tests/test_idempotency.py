"""A worker killed in the middle of sending: after a restart each message is out exactly once."""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import timedelta
from pathlib import Path

from sqlmodel import select
from temporalio.client import Client

from clientela.channels.email import message_id_for
from clientela.db import session_scope
from clientela.devstack.smtp_catcher import SmtpCatcher, read_outbox
from clientela.journeys import start_welcome
from clientela.settings import Settings
from models import Message
from tests.factories import make_customer
from tests.processes import start_worker
from workflows.welcome import WelcomeJourney

JOURNEYS = 40


async def test_killed_worker_sends_each_message_exactly_once(
    client: Client, settings: Settings, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"welcome_follow_up": timedelta(seconds=1)})
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
            await start_welcome(client, settings, cid)
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
                    client.get_workflow_handle_for(WelcomeJourney.run, f"welcome-{c}").result()
                    for c in customers
                )
            ),
            timeout=180,
        )
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)

    assert all(r.welcome.state == r.follow_up.state == "sent" for r in results)
    outbox_ids = [m["message_id"] for m in read_outbox(settings.outbox_dir)]
    expected = [
        message_id_for(f"welcome:{c}:{step}", settings.mail_from)
        for c in customers
        for step in ("welcome", "follow_up")
    ]
    duplicates = {i for i in outbox_ids if outbox_ids.count(i) > 1}
    assert not duplicates, f"sent twice: {duplicates}"
    assert sorted(outbox_ids) == sorted(expected)
    with session_scope(settings.db_url) as session:
        rows = session.exec(select(Message)).all()
    assert len(rows) == 2 * JOURNEYS and {r.state for r in rows} == {"sent"}
    # The kill interrupted sends in flight: those messages needed a second attempt.
    assert any(r.attempts > 1 for r in rows)
