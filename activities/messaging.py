"""The send activity: a batch of messages through the ledger protocol, heartbeating."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import timedelta
from typing import Any

from sqlmodel import col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.contracts import (
    MessageOutcome,
    SendMessagesInput,
    SendMessagesResult,
)
from clientela.db import session_scope
from clientela.messaging.channels import SendError, Transient
from clientela.messaging.channels.email import EmailPool
from clientela.messaging.sending import Sender
from clientela.messaging.templating import Templates
from clientela.settings import Settings
from models import Message
from models.ledger import PENDING

log = logging.getLogger(__name__)

#: Messages claimed and recorded together (one transaction each way).
CHUNK = 100


async def _release(sender: Sender, current: list[Any]) -> None:
    """Hand back what this attempt claimed and did not hand over. Each is a compare-and-set
    on a claim still ``claimed`` by this attempt, so a message handed over is never touched."""
    if not current:
        return
    try:
        await sender.release(current)
    except Exception as exc:  # the claims then wait for their lease, as after a crash
        log.warning("could not hand back this attempt's claims: %r", exc)


class MessagingActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.templates = Templates(settings.templates_dir, settings.default_locale)
        self.email_pool = EmailPool(settings.send_concurrency)

    @activity.defn(name="send_messages")
    async def send_messages(self, batch: SendMessagesInput) -> SendMessagesResult:
        """Send every message of the batch at most once; retry asks again for the rest."""
        return await self.deliver_all(batch)

    async def deliver_all(self, batch: SendMessagesInput) -> SendMessagesResult:
        """The body of every sending activity: heartbeats its progress, resumes from it.

        Messages go in chunks of ``CHUNK`` (one transaction to claim, one to record each);
        the heartbeat carries how many leading messages are settled, so a retried attempt
        starts after them (a message that is settled is never touched again either way).
        If the attempt ends before a chunk's claims are handed over, they are handed back.

        (Preparing the next chunk while one is sent was measured, ``bench.campaign``: no
        gain with two worker processes, 10% slower with one, since the thread preparing it
        and the event loop sending take turns for the GIL.)
        """
        info = activity.info()
        attempt_id = f"{info.workflow_run_id}/{info.activity_id}/{info.attempt}"
        resume = int(info.heartbeat_details[0]) if info.heartbeat_details else 0
        outcomes: list[MessageOutcome | None] = [None] * len(batch.messages)
        if resume:
            earlier = await asyncio.to_thread(
                self._final_outcomes, [m.key for m in batch.messages[:resume]]
            )
            for i, m in enumerate(batch.messages[:resume]):
                outcomes[i] = earlier.get(m.key)
        # Before the resume point only messages that are not final yet (deferred ones).
        todo = [i for i in range(len(batch.messages)) if outcomes[i] is None]
        sender = Sender(self.settings, attempt_id, self.templates, self.email_pool)
        pending: list[str] = []
        retry_after: float | None = None
        settled = 0
        current: list[Any] = []  # prepared, not all sent yet
        try:
            for start in range(0, len(todo), CHUNK):
                indices = todo[start : start + CHUNK]
                current = await sender.prepare([batch.messages[i] for i in indices])
                results = await sender.send_prepared(current)
                current = []
                for i, result in zip(indices, results, strict=True):
                    if isinstance(result, SendError):
                        pending.append(f"{batch.messages[i].key}: {result.reason}")
                        if isinstance(result, Transient) and result.retry_after:
                            retry_after = max(retry_after or 0.0, result.retry_after)
                    else:
                        outcomes[i] = result
                # Heartbeat the settled prefix: a retry resumes at the first unsettled message.
                # When every message is settled the activity's completion says so, and the
                # heartbeat would be one more call to the server for every journey message.
                while settled < len(outcomes) and outcomes[settled] is not None:
                    settled += 1
                if settled < len(outcomes):
                    activity.heartbeat(settled)
        finally:
            # Claims never handed over (the attempt is ending) go back for the next one.
            await _release(sender, current)
            await sender.close()
        if pending:
            # Expected (a relay's 451, a provider's rate limit): one line here, and the
            # failure itself is benign, so the worker logs no traceback for it.
            summary = (
                f"{len(pending)} of {len(batch.messages)} messages not sent yet "
                f"(attempt {info.attempt}; tried again later); first: {pending[0]}"
            )
            activity.logger.warning(summary)
            raise ApplicationError(
                summary,
                type="MessagesPending",
                next_retry_delay=timedelta(seconds=retry_after) if retry_after else None,
                category=ApplicationErrorCategory.BENIGN,
            )
        final = [o for o in outcomes if o is not None]
        counts = Counter(o.state for o in final)
        return SendMessagesResult(counts=dict(counts), outcomes=final if batch.detail else [])

    def _final_outcomes(self, keys: list[str]) -> dict[str, MessageOutcome]:
        """Outcomes of the messages among ``keys`` whose ledger rows are final."""
        with session_scope(self.settings.db_url) as session:
            rows = session.exec(
                select(Message).where(
                    col(Message.key).in_(keys),
                    col(Message.state).not_in(PENDING),
                )
            ).all()
            return {
                r.key: MessageOutcome(
                    key=r.key,
                    state=r.state,
                    channel=r.channel,
                    reason=r.reason,
                    provider_id=r.provider_id,
                )
                for r in rows
            }
