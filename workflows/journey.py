"""One workflow runs any journey definition (``journeys/*.yaml``), step by step.

The definition travels in the workflow's input, so a running journey keeps the version it
started with whatever happens to the file. Workflow ids carry the re-entry policy:
``journey-<name>-<customer>`` (once), ``...-<period>`` (once per period), ``...-<event>``
(every time). Events reach a running journey by the ``event`` signal.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.contracts import (
        ConditionInput,
        LocalTimeInput,
        MessageOutcome,
        MessageRequest,
    )
    from workflows import search

    # (Passed through: the sandbox would define the dataclasses again for every run.)
    from workflows.journey_data import JourneyEvent as JourneyEvent
    from workflows.journey_data import JourneyInput as JourneyInput
    from workflows.journey_data import JourneyStatus as JourneyStatus
    from workflows.messages import send_one


SEND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
)
QUICK = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))


def step_id(step: dict[str, Any], index: int) -> str:
    return str(step.get("id") or f"step{index + 1}")


def stage_of(journey: str, sid: str) -> str:
    """The ``Stage`` search attribute of a journey at a step."""
    return f"{journey}:{sid}"


def first_stage(journey: str, definition: dict[str, Any]) -> str:
    """The ``Stage`` a journey starts at (its first step)."""
    steps = definition.get("steps") or [{}]
    return stage_of(journey, step_id(steps[0], 0))


def seconds(value: Any) -> float:
    """A duration of the definition's data (seconds, see ``Journey.as_data``)."""
    return float(value)


@workflow.defn(name="Journey")
class JourneyWorkflow:
    @workflow.init
    def __init__(self, p: JourneyInput) -> None:
        self._p = p
        self._status = JourneyStatus(name=p.name, version=p.version, customer_id=p.customer_id)
        self._events: list[str] = []
        self._stage = ""

    @workflow.run
    async def run(self, p: JourneyInput) -> JourneyStatus:
        if p.attributes_at_start:
            known = workflow.info().typed_search_attributes
            self._stage = known.get(search.STAGE) or ""
            missing = [
                key.value_set(value)
                for key, value in ((search.CUSTOMER_ID, p.customer_id), (search.JOURNEY, p.name))
                if known.get(key) != value
            ]
            if missing:
                workflow.upsert_search_attributes(missing)
        else:
            workflow.upsert_search_attributes(
                [
                    search.CUSTOMER_ID.value_set(p.customer_id),
                    search.JOURNEY.value_set(p.name),
                ]
            )
        steps: list[dict[str, Any]] = p.definition["steps"]
        ids = [step_id(s, i) for i, s in enumerate(steps)]
        i = 0
        while i < len(steps):
            step, sid = steps[i], ids[i]
            self._at(sid)
            if "send" in step:
                outcome = await self._send(sid, step["send"])
                self._status.messages.append(outcome)
                note = f"{outcome.state} on {outcome.channel or '-'}"
                self._trail(sid, note + (f" ({outcome.reason})" if outcome.reason else ""))
            elif "wait" in step:
                await workflow.sleep(seconds(step["wait"]) * p.time_scale)
                self._trail(sid, "waited")
            elif "wait_until" in step:
                until = await workflow.execute_activity(
                    "journey_local_time",
                    LocalTimeInput(p.customer_id, str(step["wait_until"])),
                    result_type=str,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=QUICK,
                )
                delay = (datetime.fromisoformat(until) - workflow.now()) * p.time_scale
                self._status.waiting_until = until
                await workflow.sleep(max(delay, timedelta(0)))
                self._status.waiting_until = ""
                self._trail(sid, f"waited until {until}")
            elif "wait_for" in step:
                await self._wait_for(sid, step["wait_for"])
            elif "branch" in step:
                target = await self._branch(sid, step)
                if target is not None:
                    i = ids.index(target)
                    continue
            elif "exit" in step:
                self._status.exit_reason = str(step["exit"])
                self._trail(sid, f"exit: {step['exit']}")
                break
            i += 1
        self._status.done = True
        self._at("done")
        return self._status

    async def _send(self, sid: str, send: dict[str, Any]) -> MessageOutcome:
        p = self._p
        channel = send.get("channel", "preferred")
        request = MessageRequest(
            key=f"journey:{p.name}:{p.customer_id}:{p.entry}:{sid}",
            customer_id=p.customer_id,
            template=send["template"],
            channel=None if channel == "preferred" else channel,
            journey=p.name,
            context={
                "trigger": p.trigger,
                # The triggering event, for templates: {{ event.properties.cart }}.
                "event": {
                    "name": p.trigger.get("event", ""),
                    "properties": p.trigger.get("properties") or {},
                },
            },
            tracking=bool(p.definition.get("tracking", True)),
            topic=p.definition.get("topic"),
        )

        def waiting(outcome: MessageOutcome | None) -> None:
            self._status.waiting_until = outcome.retry_at if outcome else ""
            if outcome:
                self._trail(sid, outcome.reason)

        return await send_one(request, p.heartbeat_timeout_seconds, waiting)

    async def _wait_for(self, sid: str, spec: dict[str, Any]) -> None:
        """Until one of the events arrives (after this step began), or the timeout."""
        wanted, seen = set(spec["events"]), len(self._events)
        try:
            await workflow.wait_condition(
                lambda: any(e in wanted for e in self._events[seen:]),
                timeout=timedelta(seconds=seconds(spec["timeout"]) * self._p.time_scale),
            )
            self._trail(sid, "event came")
        except TimeoutError:
            self._trail(sid, "timed out")

    async def _branch(self, sid: str, step: dict[str, Any]) -> str | None:
        for route in step["branch"]:
            test = route["if"]
            if test == "responded":
                holds = bool(self._events)
            elif test.startswith("event:"):
                holds = test[6:] in self._events
            elif test.startswith("sent:"):  # that send step's message went out
                holds = any(
                    m.key.endswith(f":{test[5:]}") and m.state in ("sent", "delivered")
                    for m in self._status.messages
                )
            else:
                holds = await workflow.execute_activity(
                    "journey_condition",
                    ConditionInput(
                        self._p.customer_id,
                        test,
                        dict(self._p.definition.get("trigger", {}).get("properties") or {}),
                        dict(self._p.trigger.get("properties") or {}),
                    ),
                    result_type=bool,
                    start_to_close_timeout=timedelta(seconds=30),
                    retry_policy=QUICK,
                )
            if holds:
                self._trail(sid, f"{test} -> {route['goto']}")
                return str(route["goto"])
        target = step.get("else")
        self._trail(sid, f"else -> {target}" if target else "no route: next step")
        return str(target) if target else None

    def _at(self, sid: str) -> None:
        self._status.step = sid
        stage = stage_of(self._p.name, sid)
        if not self._p.attributes_at_start or stage != self._stage:
            workflow.upsert_search_attributes([search.STAGE.value_set(stage)])
            self._stage = stage
        workflow.set_current_details(
            f"**journey:** {self._p.name} (version {self._p.version})  \n**step:** {sid}"
            + (f"  \n**last:** {self._status.trail[-1]}" if self._status.trail else "")
        )

    def _trail(self, sid: str, note: str) -> None:
        self._status.trail.append(f"{sid}: {note}")

    @workflow.signal
    def event(self, event: JourneyEvent) -> None:
        self._events.append(event.kind)
        self._status.events.append(event.kind)

    @workflow.query
    def status(self) -> JourneyStatus:
        return self._status
