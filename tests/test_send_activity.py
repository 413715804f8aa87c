"""The batch send activity: resume from heartbeat, retry only what is pending."""

from __future__ import annotations

import dataclasses
import logging

import pytest
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory
from temporalio.testing import ActivityEnvironment

from activities.contracts import MessageRequest, SendMessagesInput
from activities.messaging import MessagingActivities
from clientela.devstack.smtp_catcher import Fault, SmtpCatcher, read_outbox
from clientela.settings import Settings
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
