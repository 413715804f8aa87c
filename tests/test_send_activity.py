"""The batch send activity: resume from heartbeat, retry only what is pending."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from sqlmodel import col, select
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.testing import ActivityEnvironment

import activities.messaging
from activities.contracts import MessageRequest, SendMessagesInput
from activities.messaging import MessagingActivities
from clientela.db import session_scope
from clientela.devstack.smtp_catcher import Fault, SmtpCatcher, read_outbox
from clientela.messaging.channels.email import message_id_for
from clientela.messaging.sending import Sender
from clientela.settings import Settings
from models import Message
from tests.factories import make_customer


def batch(customers: list[str], channel: str = "email") -> SendMessagesInput:
    return SendMessagesInput(
        messages=[
            MessageRequest(key=f"b:{c}", customer_id=c, template="welcome", channel=channel)
            for c in customers
        ]
    )


def environment(attempt: int, heartbeat: list[int] | None = None) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info, attempt=attempt, heartbeat_details=heartbeat or [], workflow_run_id="run"
    )
    return env


async def test_resume_skips_what_an_earlier_attempt_finished(
    settings: Settings, catcher: SmtpCatcher
) -> None:
    customers = [make_customer(settings.db_url) for _ in range(5)]
    activities = MessagingActivities(settings)
    beats: list[tuple] = []
    first = environment(1)
    first.on_heartbeat = lambda *details: beats.append(details)
    await first.run(activities.send_messages, batch(customers[:3]))
    # A batch that settles every message completes: its result says so, no last heartbeat.
    assert beats == []
    # An attempt that heartbeated three settled messages is retried over the whole batch:
    # it starts after the three finished messages...
    result = await environment(2, heartbeat=[3]).run(activities.send_messages, batch(customers))
    # ...still reports all five, and sent each once.
    assert [o.key for o in result.outcomes] == [f"b:{c}" for c in customers]
    assert result.counts == {"sent": 5}
    assert len(read_outbox(settings.outbox_dir)) == 5


async def test_a_transient_failure_retries_only_the_pending_messages(
    settings: Settings, catcher: SmtpCatcher, caplog: pytest.LogCaptureFixture
) -> None:
    customers = [make_customer(settings.db_url) for _ in range(4)]
    busy = make_customer(settings.db_url, email="busy@example.com")
    customers.insert(1, busy)
    catcher.handler.faults.append(Fault(pattern="busy@", code=421, message="busy", times=1))
    activities = MessagingActivities(settings)
    beats: list[tuple] = []
    env = environment(1)
    env.on_heartbeat = lambda *details: beats.append(details)
    with (
        caplog.at_level(logging.DEBUG),
        pytest.raises(ApplicationError, match="1 of 5 messages not sent yet") as err,
    ):
        await env.run(activities.send_messages, batch(customers))
    assert err.value.type == "MessagesPending" and not err.value.non_retryable
    # A transient refusal is one line with its count, and no traceback (a benign failure).
    said = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage().split(" (")[0] for r in said] == ["1 of 5 messages not sent yet"]
    assert "SMTP 421" in said[0].getMessage() and said[0].exc_info is None
    assert err.value.category == ApplicationErrorCategory.BENIGN
    assert beats[-1] == (1,)  # resume no later than the pending message
    assert len(read_outbox(settings.outbox_dir)) == 4
    result = await environment(2, heartbeat=list(beats[-1])).run(
        activities.send_messages, batch(customers)
    )
    assert result.counts == {"sent": 5}
    assert len(read_outbox(settings.outbox_dir)) == 5


def sent_once(settings: Settings, customers: list[str]) -> bool:
    """The outbox holds each customer's batch message exactly once."""
    found = sorted(e["message_id"] for e in read_outbox(settings.outbox_dir))
    return found == sorted(message_id_for(f"b:{c}", settings.mail_from) for c in customers)


def ledger(db_url: str) -> dict[str, tuple[str, str]]:
    """Each batch message's ledger row: (state, claimed by)."""
    with session_scope(db_url) as session:
        rows = session.exec(select(Message).where(col(Message.key).startswith("b:"))).all()
        return {r.key: (r.state, r.claimed_by) for r in rows}


async def test_a_batch_goes_in_chunks_each_prepared_then_sent_in_order(
    settings: Settings, catcher: SmtpCatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(activities.messaging, "CHUNK", 2)
    customers = [make_customer(settings.db_url) for _ in range(5)]
    prepared: list[int] = []
    real_prepare = Sender.prepare

    async def counted(self: Sender, reqs: list[MessageRequest]) -> list:
        prepared.append(len(reqs))
        return await real_prepare(self, reqs)

    monkeypatch.setattr(Sender, "prepare", counted)
    result = await environment(1).run(MessagingActivities(settings).send_messages, batch(customers))
    assert prepared == [2, 2, 1]
    assert [o.key for o in result.outcomes] == [f"b:{c}" for c in customers]
    assert result.counts == {"sent": 5}
    assert sent_once(settings, customers)
    assert {state for state, _ in ledger(settings.db_url).values()} == {"sent"}


async def test_an_attempt_that_fails_hands_back_the_claims_it_never_handed_over(
    settings: Settings, catcher: SmtpCatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attempt that stops after claiming a chunk and before handing it over queues its
    claims again, so the next attempt sends them at once (without the hand-back they would
    wait for the claim's lease, ``send_lease``)."""
    monkeypatch.setattr(activities.messaging, "CHUNK", 2)
    customers = [make_customer(settings.db_url) for _ in range(5)]
    real_send = Sender.send_prepared

    async def stops(self: Sender, prepared: list) -> list:
        raise RuntimeError("the worker is stopping")

    monkeypatch.setattr(Sender, "send_prepared", stops)
    with pytest.raises(RuntimeError, match="the worker is stopping"):
        await environment(1).run(MessagingActivities(settings).send_messages, batch(customers))
    rows = ledger(settings.db_url)
    # The first chunk was claimed, then handed back; nothing else was touched.
    assert sorted(rows) == sorted(f"b:{c}" for c in customers[:2])
    assert set(rows.values()) == {("queued", "")}
    assert read_outbox(settings.outbox_dir) == []
    monkeypatch.setattr(Sender, "send_prepared", real_send)
    result = await environment(2).run(MessagingActivities(settings).send_messages, batch(customers))
    assert result.counts == {"sent": 5}
    assert sent_once(settings, customers)


async def test_the_sms_client_does_not_log_each_request(
    settings: Settings, sms_sink: object, caplog: pytest.LogCaptureFixture
) -> None:
    from worker import quiet_libraries

    quiet_libraries()
    customers = [
        make_customer(settings.db_url, preferred_channel="sms", phone=f"+3465500{i:04d}")
        for i in range(3)
    ]
    with caplog.at_level(logging.INFO):
        result = await environment(1).run(
            MessagingActivities(settings).send_messages, batch(customers, "sms")
        )
    assert result.counts == {"sent": 3}
    assert [r for r in caplog.records if r.name.startswith("twilio")] == []
