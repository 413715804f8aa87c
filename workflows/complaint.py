"""A complaint case's clock: acknowledge the customer, remind the responsible before each due
time, escalate when a service level is breached, and after the resolution ask the customer
how satisfied they are.

The case lives in the database (``clientela.service.cases``); answers, resolutions and scores
are written there by the API or the CLI, which then signal ``changed``. The workflow reads
the case again before every step, so a lost signal only delays it until the next deadline,
and a reminder for an answer already given sends nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.complaints import CaseClock, CaseStep
    from activities.contracts import MessageOutcome, MessageRequest
    from clientela.service.cases import (
        ACKNOWLEDGED,
        CLOSED,
        ESCALATED_RESOLUTION,
        ESCALATED_RESPONSE,
        REMINDED_RESOLUTION,
        REMINDED_RESPONSE,
        SURVEYED,
    )
    from workflows import search
    from workflows.messages import send_one

RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=5))
SHORT = timedelta(minutes=2)


@dataclass
class CaseResult:
    complaint_id: int
    steps: list[str]
    satisfaction_given: bool


@workflow.defn(name="ComplaintCase")
class ComplaintCase:
    def __init__(self) -> None:
        self._changed = False
        self._clock: CaseClock | None = None
        self._stage = "opening"
        self._next: tuple[str, str] | None = None  # (step, when)
        self._sent: list[dict[str, str]] = []

    @workflow.signal
    def changed(self) -> None:
        """The case was answered, resolved or rated: read it again now."""
        self._changed = True

    @workflow.query
    def status(self) -> dict[str, Any]:
        clock = self._clock
        return {
            "stage": self._stage,
            "steps": clock.steps if clock else [],
            "next": {"step": self._next[0], "at": self._next[1]} if self._next else None,
            "messages": self._sent,
        }

    @workflow.run
    async def run(self, complaint_id: int) -> CaseResult:
        clock = await self._read(complaint_id)
        workflow.upsert_search_attributes(
            [
                search.CUSTOMER_ID.value_set(clock.customer_id),
                search.JOURNEY.value_set("complaint"),
            ]
        )
        self._set_stage("open")
        if ACKNOWLEDGED not in clock.steps:
            clock = await self._step(clock, ACKNOWLEDGED)

        # The service-level clock runs until the case is resolved.
        while not clock.resolved:
            due = self._deadlines(clock)
            self._next = (due[0][1], due[0][0].isoformat()) if due else None
            if due:
                at, step = due[0]
                timed_out = await self._wait(at - workflow.now())
                if timed_out:
                    clock = await self._step(clock, step)
                    continue
            else:
                await workflow.wait_condition(lambda: self._changed)
            clock = await self._read(complaint_id)

        self._next = None
        self._set_stage("resolved")
        if SURVEYED not in clock.steps and not clock.rated:
            clock = await self._step(clock, SURVEYED)
        if not clock.rated:
            self._set_stage("awaiting score")
            until = workflow.now() + timedelta(seconds=clock.survey_wait_s)
            while not clock.rated and not await self._wait(until - workflow.now()):
                clock = await self._read(complaint_id)
        clock = await self._step(clock, CLOSED, {"rated": clock.rated})
        self._set_stage("closed")
        return CaseResult(complaint_id, clock.steps, clock.rated)

    # -----------------------------------------------------------------------------------

    def _deadlines(self, clock: CaseClock) -> list[tuple[datetime, str]]:
        """The steps still ahead of the case, earliest first (no reminder once its due time
        has passed: the escalation comes instead)."""
        lead = timedelta(seconds=clock.remind_before_s)
        now = workflow.now()
        out = []
        phases = [(clock.resolution_due_at, REMINDED_RESOLUTION, ESCALATED_RESOLUTION)]
        if not clock.responded:
            phases.insert(0, (clock.due_at, REMINDED_RESPONSE, ESCALATED_RESPONSE))
        for due_at, remind, escalate in phases:
            if due_at is None:
                continue
            due = datetime.fromisoformat(due_at)
            if remind not in clock.steps and escalate not in clock.steps and due > now:
                out.append((due - lead, remind))
            if escalate not in clock.steps:
                out.append((due, escalate))
        return sorted(out)

    async def _wait(self, span: timedelta) -> bool:
        """Wait ``span`` or until the case changes (since it was last read); True when the
        time ran out."""
        if self._changed:
            return False
        if span <= timedelta(0):
            return True
        try:
            await workflow.wait_condition(lambda: self._changed, timeout=span)
        except TimeoutError:
            return True
        return False

    async def _read(self, complaint_id: int) -> CaseClock:
        self._changed = False  # what changes from here on wakes the next wait
        self._clock = await workflow.execute_activity(
            "complaint_clock",
            complaint_id,
            result_type=CaseClock,
            start_to_close_timeout=SHORT,
            retry_policy=RETRY,
        )
        return self._clock

    async def _step(
        self, clock: CaseClock, step: str, detail: dict[str, Any] | None = None
    ) -> CaseClock:
        """Send what the step sends (if the case still needs it), then record the step."""
        if step.startswith("escalated"):
            self._set_stage("escalated")
        outcomes: dict[str, str] = {}
        if step != CLOSED:
            requests: list[MessageRequest] = await workflow.execute_activity(
                "complaint_messages",
                CaseStep(clock.complaint_id, step),
                result_type=list[MessageRequest],
                start_to_close_timeout=SHORT,
                retry_policy=RETRY,
            )
            for request in requests:
                outcome: MessageOutcome = await send_one(request, 30.0, self._waiting)
                outcomes[request.key] = outcome.state
                self._sent.append({"step": step, "key": request.key, "state": outcome.state})
            if not requests and step not in (ACKNOWLEDGED, SURVEYED):
                return await self._read(clock.complaint_id)  # answered meanwhile: moot
        self._changed = False
        self._clock = await workflow.execute_activity(
            "complaint_mark",
            CaseStep(clock.complaint_id, step, {**(detail or {}), "messages": outcomes}),
            result_type=CaseClock,
            start_to_close_timeout=SHORT,
            retry_policy=RETRY,
        )
        return self._clock

    def _waiting(self, outcome: MessageOutcome | None) -> None:
        if outcome is not None:
            self._stage = f"waiting: {outcome.reason}"

    def _set_stage(self, stage: str) -> None:
        self._stage = stage
        workflow.upsert_search_attributes([search.STAGE.value_set(f"complaint:{stage}")])
