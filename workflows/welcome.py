"""The welcome journey: a welcome at once, a wait, and a follow-up that depends on the response."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.contracts import (
        MessageOutcome,
        MessageRequest,
    )
    from workflows import search
    from workflows.messages import send_one

JOURNEY = "welcome"


def workflow_id(customer_id: str) -> str:
    return f"welcome-{customer_id}"


@dataclass
class WelcomeInput:
    customer_id: str
    tier: str | None = None  # the customer's tier when the journey started (search attribute)
    follow_up_after_seconds: float = 2 * 24 * 3600
    send_heartbeat_timeout_seconds: float = 30


@dataclass
class ResponseSignal:
    kind: str  # open, click, reply, ...
    channel: str = ""


@dataclass
class WelcomeStatus:
    customer_id: str
    stage: str = "starting"
    responded: bool = False
    response_kinds: list[str] = field(default_factory=list)
    welcome: MessageOutcome | None = None
    follow_up: MessageOutcome | None = None
    follow_up_due: str | None = None
    waiting_until: str | None = None  # a message deferred by quiet hours goes then


SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
)


@workflow.defn(name="WelcomeJourney")
class WelcomeJourney:
    def __init__(self) -> None:
        self._status = WelcomeStatus(customer_id="")

    @workflow.run
    async def run(self, params: WelcomeInput) -> WelcomeStatus:
        self._status.customer_id = params.customer_id
        workflow.upsert_search_attributes(
            [
                search.CUSTOMER_ID.value_set(params.customer_id),
                search.JOURNEY.value_set(JOURNEY),
                search.TIER.value_set(params.tier or "unassigned"),
            ]
        )
        self._stage("welcome")
        self._status.welcome = await self._send(params, "welcome", "welcome")

        self._stage("waiting")
        due = workflow.now() + timedelta(seconds=params.follow_up_after_seconds)
        self._status.follow_up_due = due.isoformat()
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self._status.responded,
                timeout=timedelta(seconds=params.follow_up_after_seconds),
            )

        self._stage("follow_up")
        template = "welcome_engaged" if self._status.responded else "welcome_reminder"
        self._status.follow_up = await self._send(params, "follow_up", template)
        self._stage("done")
        return self._status

    async def _send(self, params: WelcomeInput, step: str, template: str) -> MessageOutcome:
        request = MessageRequest(
            key=f"{JOURNEY}:{params.customer_id}:{step}",
            customer_id=params.customer_id,
            template=template,
            journey=JOURNEY,
        )

        def waiting(outcome: MessageOutcome | None) -> None:
            self._status.waiting_until = outcome.retry_at if outcome else None
            if outcome:
                workflow.set_current_details(f"**{step}:** {outcome.reason}")

        return await send_one(request, params.send_heartbeat_timeout_seconds, waiting)

    def _stage(self, stage: str) -> None:
        self._status.stage = stage
        workflow.upsert_search_attributes([search.STAGE.value_set(f"{JOURNEY}:{stage}")])
        # What an operator reads on the workflow's page in the Web UI.
        details = f"**stage:** {stage}"
        if stage == "waiting":
            details += f"  \n**follow-up due:** {self._status.follow_up_due}"
        if self._status.welcome:
            welcome = self._status.welcome
            details += f"  \n**welcome:** {welcome.state} on {welcome.channel or '-'}"
            if welcome.reason:
                details += f" ({welcome.reason})"
        workflow.set_current_details(details)

    @workflow.signal
    def respond(self, signal: ResponseSignal) -> None:
        self._status.responded = True
        self._status.response_kinds.append(signal.kind)
        workflow.set_current_details(
            f"**stage:** {self._status.stage}  \n**responded:** {signal.kind}"
        )

    @workflow.query
    def status(self) -> WelcomeStatus:
        return self._status
