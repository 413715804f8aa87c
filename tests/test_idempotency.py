"""A worker killed in the middle of sending: after a restart each message is out exactly once."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlmodel import select
from temporalio.client import Client

from clientela.db import session_scope
from clientela.devstack.smtp_catcher import SmtpCatcher, read_outbox
from clientela.messaging.channels.email import message_id_for
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


async def _sending(
    client: Client,
    settings: Settings,
    tmp_path: Path,
    cid: str,
    worker: subprocess.Popen[bytes],
    log: Path,
) -> Any:
    """Create and approve the campaign; return its handle once 40 emails are out."""
    from clientela.campaigns import lifecycle
    from tests.test_campaign_workflow import RULES, wait_stage, write_spec

    _, handle = await lifecycle.create(client, settings, write_spec(tmp_path, cid), RULES)
    await wait_stage(client, cid, "awaiting_approval")
    await lifecycle.decide(client, cid, "approve", by="ana")
    deadline = time.monotonic() + 60
    while len(read_outbox(settings.outbox_dir)) < 40:
        assert time.monotonic() < deadline, log.read_text()  # noqa: ASYNC240 - the message of a failure
        assert worker.poll() is None, log.read_text()  # noqa: ASYNC240
        await asyncio.sleep(0.02)
    return handle


async def _finished_by_another_worker(
    client: Client, settings: Settings, cid: str, handle: Any, log: Path
) -> Any:
    """A second worker takes the campaign to its end; its final status."""
    from clientela.campaigns import lifecycle
    from tests.test_campaign_workflow import wait_stage

    second = start_worker(settings, log)
    try:
        await wait_stage(client, cid, "tracking")
        await lifecycle.control(client, cid, "close")
        return await asyncio.wait_for(handle.result(), timeout=120)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)


async def test_killed_worker_mid_campaign_sends_each_member_exactly_once(
    client: Client, settings: Settings, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    from tests.test_campaign_workflow import (
        members_of,
        tiered_customers,
    )

    # Small pages in two lanes and a slow server: the kill lands with pages half sent.
    settings = settings.model_copy(update={"campaign_page_size": 15, "campaign_lanes": 2})
    catcher.handler.delay_seconds = 0.05
    tiered_customers(settings.db_url, 150, locale="en")
    cid = f"c-kill-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "worker.log"
    first = start_worker(settings, log)
    try:
        handle = await _sending(client, settings, tmp_path, cid, first, log)
        first.send_signal(signal.SIGKILL)
        first.wait()
        killed_at = len(read_outbox(settings.outbox_dir))
    finally:
        if first.poll() is None:
            first.kill()

    final = await _finished_by_another_worker(client, settings, cid, handle, log)

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


async def test_a_worker_stopped_mid_campaign_finishes_its_pages_and_hands_back_the_rest(
    client: Client, settings: Settings, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    """SIGTERM (a deploy, a scale-down) in the middle of sending: the worker stops taking
    work, lets the pages it holds finish within its grace, and exits cleanly; another worker
    sends the rest. Each member gets the campaign once, and nothing is left in doubt."""
    from tests.test_campaign_workflow import (
        members_of,
        tiered_customers,
    )

    settings = settings.model_copy(
        update={
            "campaign_page_size": 15,
            "campaign_lanes": 2,
            "worker_shutdown_grace": timedelta(seconds=20),
        }
    )
    catcher.handler.delay_seconds = 0.05
    tiered_customers(settings.db_url, 150, locale="en")
    cid = f"c-stop-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "worker.log"
    first = start_worker(settings, log)
    try:
        handle = await _sending(client, settings, tmp_path, cid, first, log)
        first.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(first.wait, 60)
        stopped_at = len(read_outbox(settings.outbox_dir))
    finally:
        if first.poll() is None:
            first.kill()
    assert code == 0, log.read_text()
    assert "Traceback" not in log.read_text()

    final = await _finished_by_another_worker(client, settings, cid, handle, log)

    treated = [e for m, e in members_of(settings.db_url, cid) if m.group == "treated"]
    assert stopped_at < len(treated) == final.treated == 120  # the second worker sent the rest
    outbox_ids = [m["message_id"] for m in read_outbox(settings.outbox_dir)]
    assert len(outbox_ids) == len(set(outbox_ids)), "a member got the campaign twice"
    expected = {message_id_for(f"campaign:{cid}:{e}:message", settings.mail_from) for e in treated}
    assert set(outbox_ids) == expected
    with session_scope(settings.db_url) as session:
        rows = session.exec(select(Message).where(Message.campaign == cid)).all()
    # Graceful: every message handed over was answered before the worker left, so none had
    # to be reconciled or sent by a second attempt.
    assert len(rows) == 120 and {r.state for r in rows} == {"sent"}
    assert all(r.attempts == 1 for r in rows)
    assert final.counts == {"sent": 120}


async def _kill_mid_pages(
    client: Client, settings: Settings, catcher: SmtpCatcher, tmp_path: Path, kills: int
) -> tuple[str, list[str], int]:
    """A campaign to 240 treated members through a relay that cannot be asked, its worker
    SIGKILLed ``kills`` times while pages are being sent, then run to the end. Returns the
    campaign id, the treated members and how many messages the kills could have caught in
    flight (per kill: every lane's ``send_concurrency`` slots)."""
    from clientela.campaigns import lifecycle
    from tests.test_campaign_workflow import RULES, members_of, wait_stage, write_spec
    from tests.test_rules_apply import apply_directly

    catcher.handler.delay_seconds = 0.03
    for _ in range(300):
        make_customer(settings.db_url, locale="en")
    apply_directly(settings.db_url)
    cid = f"c-relay-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "worker.log"
    worker = start_worker(settings, log)
    try:
        _, handle = await lifecycle.create(client, settings, write_spec(tmp_path, cid), RULES)
        await wait_stage(client, cid, "awaiting_approval")
        await lifecycle.decide(client, cid, "approve", by="ana")
        for k in range(kills):
            target = 30 + 50 * k  # each kill lands with a page half sent
            deadline = time.monotonic() + 90
            while len(read_outbox(settings.outbox_dir)) < target:
                assert time.monotonic() < deadline, log.read_text()
                assert worker.poll() is None, log.read_text()
                await asyncio.sleep(0.01)
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            worker = start_worker(settings, log)
        await wait_stage(client, cid, "tracking")
        await lifecycle.control(client, cid, "close")
        await asyncio.wait_for(handle.result(), timeout=120)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    treated = [e for m, e in members_of(settings.db_url, cid) if m.group == "treated"]
    return cid, treated, kills * settings.campaign_lanes * settings.send_concurrency


async def test_a_worker_killed_mid_page_loses_no_more_than_was_in_flight(
    client: Client, settings: Settings, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    """Against a plain relay (no way to ask what it received), with the default policy: what
    was never handed over is sent after the restart, what was truly in flight is failed as
    in doubt (never twice), and the ledger says exactly what the server received."""
    settings = settings.model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": catcher.port,
            "campaign_page_size": 40,
            "campaign_lanes": 2,
            "send_concurrency": 3,
        }
    )
    assert not settings.uses_catcher
    cid, treated, bound = await _kill_mid_pages(client, settings, catcher, tmp_path, kills=3)
    assert len(treated) == 240
    received = [m["message_id"] for m in read_outbox(settings.outbox_dir)]
    assert len(received) == len(set(received)), "a member got the campaign twice"
    with session_scope(settings.db_url) as session:
        rows = session.exec(select(Message).where(Message.campaign == cid)).all()
    assert len(rows) == 240
    by_id = {message_id_for(r.key, settings.mail_from): r for r in rows}
    sent = {i for i, r in by_id.items() if r.state == "sent"}
    in_doubt = {i for i, r in by_id.items() if r.state == "failed" and "in doubt" in r.reason}
    assert sent | in_doubt == set(by_id), {r.state for r in rows}
    assert len(in_doubt) <= bound, f"{len(in_doubt)} in doubt; at most {bound} were in flight"
    assert sent <= set(received), "recorded as sent but never received"
    assert set(received) - sent <= in_doubt, "received but recorded as not sent"
    # The kills interrupted pages: messages claimed but never handed over went again.
    assert any(r.attempts > 1 and r.state == "sent" for r in rows)


async def test_resending_what_was_in_flight_loses_nothing(
    client: Client, settings: Settings, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    """With ``email_in_doubt=resend`` every member receives the campaign; the few that were
    in flight at a kill may arrive twice, with the same Message-ID (receivers drop those)."""
    settings = settings.model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": catcher.port,
            "campaign_page_size": 40,
            "campaign_lanes": 2,
            "send_concurrency": 3,
            "email_in_doubt": "resend",
        }
    )
    cid, treated, bound = await _kill_mid_pages(client, settings, catcher, tmp_path, kills=2)
    received = [m["message_id"] for m in read_outbox(settings.outbox_dir)]
    expected = {message_id_for(f"campaign:{cid}:{e}:message", settings.mail_from) for e in treated}
    assert set(received) == expected, "a member never received the campaign"
    twice = len(received) - len(set(received))
    assert twice <= bound
    with session_scope(settings.db_url) as session:
        rows = session.exec(select(Message).where(Message.campaign == cid)).all()
    assert {r.state for r in rows} == {"sent"} and len(rows) == 240


async def test_a_campaigns_lanes_go_to_both_worker_processes(
    client: Client, settings: Settings, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    """Two worker processes: the pages of one campaign are taken by both (not all by the
    process that runs its workflow), and each member gets the campaign once."""
    from clientela.campaigns import lifecycle
    from tests.test_campaign_workflow import (
        RULES,
        members_of,
        tiered_customers,
        wait_stage,
        write_spec,
    )

    settings = settings.model_copy(update={"campaign_page_size": 10, "campaign_lanes": 2})
    catcher.handler.delay_seconds = 0.02  # pages that take a while: both processes are asked
    tiered_customers(settings.db_url, 150, locale="en")
    cid = f"c-two-{uuid.uuid4().hex[:8]}"
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    workers = [start_worker(settings, log) for log in logs]
    try:
        _, handle = await lifecycle.create(client, settings, write_spec(tmp_path, cid), RULES)
        await wait_stage(client, cid, "awaiting_approval")
        await lifecycle.decide(client, cid, "approve", by="ana")
        await wait_stage(client, cid, "tracking")
        await lifecycle.control(client, cid, "close")
        final = await asyncio.wait_for(handle.result(), timeout=120)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(30)
    treated = [e for m, e in members_of(settings.db_url, cid) if m.group == "treated"]
    assert final.counts == {"sent": 120} and len(treated) == 120
    outbox_ids = [m["message_id"] for m in read_outbox(settings.outbox_dir)]
    assert sorted(outbox_ids) == sorted(
        message_id_for(f"campaign:{cid}:{e}:message", settings.mail_from) for e in treated
    )
    # Each process logs the pages it sent: both sent some, and together all 120 messages.
    sent = [
        [int(n) for n in re.findall(r"page sent: lane \d of 2, (\d+) messages", log.read_text())]
        for log in logs
    ]
    assert all(sent) and sum(map(sum, sent)) == 120, sent
