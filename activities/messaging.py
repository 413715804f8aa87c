"""The send activity: a batch of messages through the ledger protocol, heartbeating."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

from sqlmodel import col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.contracts import (
    MessageOutcome,
    SendMessagesInput,
    SendMessagesResult,
)
from clientela.channels import InDoubt, Transient
from clientela.db import session_scope
from clientela.sending import Sender
from clientela.settings import Settings
from clientela.templating import Templates
from models import Message


class MessagingActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.templates = Templates(settings.templates_dir, settings.default_locale)

    @activity.defn(name="send_messages")
    async def send_messages(self, batch: SendMessagesInput) -> SendMessagesResult:
        """Send every message of the batch at most once; retry asks again for the rest."""
        return await self.deliver_all(batch)

    async def deliver_all(self, batch: SendMessagesInput) -> SendMessagesResult:
        """The body of every sending activity: heartbeats its progress, resumes from it."""
        info = activity.info()
        attempt_id = f"{info.workflow_run_id}/{info.activity_id}/{info.attempt}"
        # Messages before the resume point were all final in an earlier attempt.
        resume = int(info.heartbeat_details[0]) if info.heartbeat_details else 0
        outcomes: list[MessageOutcome | None] = [None] * len(batch.messages)
        if resume:
            earlier = await asyncio.to_thread(
                self._final_outcomes, [m.key for m in batch.messages[:resume]]
            )
            for i, m in enumerate(batch.messages[:resume]):
                outcomes[i] = earlier.get(m.key)
        sender = Sender(self.settings, attempt_id, self.templates)
        pending: list[str] = []
        retry_after: float | None = None
        done_prefix = resume
        try:
            for i in range(resume, len(batch.messages)):
                req = batch.messages[i]
                try:
                    outcomes[i] = await sender.deliver(req)
                except Transient as exc:
                    pending.append(f"{req.key}: {exc.reason}")
                    if exc.retry_after:
                        retry_after = max(retry_after or 0.0, exc.retry_after)
                except InDoubt as exc:
                    pending.append(f"{req.key}: {exc.reason}")
                if not pending:
                    done_prefix = i + 1
                activity.heartbeat(done_prefix)
        finally:
            await sender.close()
        if pending:
            raise ApplicationError(
                f"{len(pending)} of {len(batch.messages)} messages not sent yet; "
                f"first: {pending[0]}",
                type="MessagesPending",
                next_retry_delay=timedelta(seconds=retry_after) if retry_after else None,
            )
        final = [o for o in outcomes if o is not None]
        counts = Counter(o.state for o in final)
        return SendMessagesResult(counts=dict(counts), outcomes=final if batch.detail else [])

    def _final_outcomes(self, keys: list[str]) -> dict[str, MessageOutcome]:
        with session_scope(self.settings.db_url) as session:
            rows = session.exec(select(Message).where(col(Message.key).in_(keys))).all()
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
