"""Sending one message from a workflow, waiting out the customer's quiet hours."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.contracts import (
        DEFERRED,
        MessageOutcome,
        MessageRequest,
        SendMessagesInput,
        SendMessagesResult,
    )

SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
)


async def send_one(
    request: MessageRequest,
    heartbeat_seconds: float,
    waiting: Callable[[MessageOutcome | None], None],
) -> MessageOutcome:
    """The message's final outcome. A message deferred by quiet hours waits in the ledger and
    is asked for again when they end; ``waiting`` hears of the wait (None when it is over)."""
    while True:
        result: SendMessagesResult = await workflow.execute_activity(
            "send_messages",
            SendMessagesInput(messages=[request]),
            result_type=SendMessagesResult,
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=timedelta(seconds=heartbeat_seconds),
            retry_policy=SEND_RETRY,
        )
        outcome = result.outcomes[0]
        if outcome.state != DEFERRED:
            return outcome
        waiting(outcome)
        await workflow.sleep(
            max(datetime.fromisoformat(outcome.retry_at) - workflow.now(), timedelta(0))
            + timedelta(seconds=1)
        )
        waiting(None)
