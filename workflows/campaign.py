"""A campaign from approval to report: approve or reject, build the list, send, track.

Stages: awaiting_approval -> [scheduled] -> preparing -> [proof] -> [pilot -> (pilot_review)]
-> sending -> [waiting: deferred SMS wait for the end of quiet hours] -> tracking -> reporting
(the report page, emailed to the stakeholders) -> done; or rejected, or cancelled.

Marketers move it with updates (approve, reject, go) and signals (pause, resume,
cancel, close); operators read ``status`` and the ``Stage`` search attribute.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.campaigns import (
        CampaignRef,
        PageInput,
        PageResult,
        PilotCheck,
        Prepared,
        Reported,
        StageInput,
    )
    from activities.contracts import DEFERRED
    from workflows import search


def workflow_id(campaign_id: str) -> str:
    return f"campaign-{campaign_id}"


def pages_queue(task_queue: str) -> str:
    """The task queue of ``campaign_send_page``: each worker process polls it apart from the
    workflows, so that a campaign's lanes are taken by whichever processes are free."""
    return f"{task_queue}-pages"


@dataclass
class PilotPlan:
    approval: str = "auto"  # auto: go on when the check passes; manual: always ask
    wait_seconds: float = 0  # time for bounces and delivery reports before the check


@dataclass
class CampaignInput:
    campaign_id: str
    estimated_cost: float
    budget: float
    response_window_seconds: float
    page_size: int = 500
    heartbeat_timeout_seconds: float = 30
    proof: bool = False  # send proofs to the internal list first
    pilot: PilotPlan | None = None
    lanes: int = 1  # page activities in flight at once
    # Where the pages go: a task queue every worker process polls for pages alone, so that
    # lanes spread over the processes there are (on the workflow's own queue the worker that
    # runs the workflow would take them all). Empty: the workflow's queue (older runs).
    pages_queue: str = ""
    start_at: str = ""  # ISO 8601: after approval, the list is built and sent from then
    # Carried across continue-as-new:
    stage: str = "awaiting_approval"
    cursors: list[int] = field(default_factory=list)  # per lane: the last id sent
    lanes_done: list[bool] = field(default_factory=list)
    sent: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    prepared: Prepared | None = None
    decided_by: str = ""
    wave: str = "pilot"
    retry_at: str = ""
    pilot_check: PilotCheck | None = None
    proofs: dict[str, int] = field(default_factory=dict)
    report_path: str = ""
    reported: dict[str, int] = field(default_factory=dict)


@dataclass
class Decision:
    by: str
    reason: str = ""


@dataclass
class CampaignStatus:
    campaign_id: str
    stage: str
    paused: bool
    decided_by: str
    estimated_cost: float
    budget: float
    treated: int
    control: int
    excluded: int
    sent: int
    counts: dict[str, int]
    pilot: int = 0
    pilot_check: PilotCheck | None = None
    proofs: dict[str, int] = field(default_factory=dict)
    waiting_until: str = ""
    report_path: str = ""
    reported: dict[str, int] = field(default_factory=dict)


RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))


@workflow.defn(name="Campaign")
class CampaignWorkflow:
    @workflow.init
    def __init__(self, p: CampaignInput) -> None:
        # The input is here before any update or query can arrive, even in the first task.
        self._p: CampaignInput | None = p
        self._decision: tuple[str, Decision] | None = None
        self._go: Decision | None = None
        self._paused = False
        self._cancelled = False
        self._closed = False

    @workflow.run
    async def run(self, p: CampaignInput) -> CampaignStatus:
        self._p = p
        if p.stage == "awaiting_approval":
            await self._enter("awaiting_approval")
            await workflow.wait_condition(lambda: self._decision is not None or self._cancelled)
            if self._cancelled:
                await self._enter("cancelled", "cancelled before approval")
                return self.status()
            assert self._decision is not None
            verdict, decision = self._decision
            p.decided_by = decision.by
            if verdict == "rejected":
                await self._enter("rejected", f"rejected by {decision.by}: {decision.reason}")
                return self.status()
            if p.start_at:
                delay = datetime.fromisoformat(p.start_at) - workflow.now()
                if delay > timedelta(0):
                    await self._enter(
                        "scheduled", f"approved by {decision.by}; starts {p.start_at}"
                    )
                    with contextlib.suppress(TimeoutError):
                        await workflow.wait_condition(lambda: self._cancelled, timeout=delay)
                    if self._cancelled:
                        await self._enter("cancelled", "cancelled before its start")
                        return self.status()
            await self._enter("preparing", f"approved by {decision.by}")
            p.prepared = await workflow.execute_activity(
                "campaign_prepare",
                CampaignRef(p.campaign_id),
                result_type=Prepared,
                start_to_close_timeout=timedelta(hours=1),
                retry_policy=RETRY,
            )
            if p.proof:
                await self._enter("proof")
                p.proofs = await workflow.execute_activity(
                    "campaign_proof",
                    CampaignRef(p.campaign_id),
                    result_type=dict[str, int],
                    start_to_close_timeout=timedelta(minutes=30),
                    heartbeat_timeout=timedelta(seconds=p.heartbeat_timeout_seconds),
                    retry_policy=RETRY,
                )
            if p.pilot is not None and p.prepared.pilot > 0:
                await self._enter("pilot", f"pilot wave of {p.prepared.pilot}")
            else:
                p.wave = "main"
                await self._enter("sending")
        if p.stage == "pilot":
            if not await self._send_wave("pilot"):
                return self.status()
            if not await self._pilot_gate():
                return self.status()
            p.wave = "main"
            await self._enter("sending")
        if p.stage == "sending":
            if not await self._send_wave("main"):
                return self.status()
            if p.counts.get(DEFERRED, 0):
                p.wave = "deferred"
                await self._enter("waiting", f"{p.counts[DEFERRED]} messages wait for quiet hours")
        if p.stage == "waiting":
            while p.counts.get(DEFERRED, 0) > 0:
                delay = datetime.fromisoformat(p.retry_at) - workflow.now()
                if delay > timedelta(0):
                    with contextlib.suppress(TimeoutError):
                        await workflow.wait_condition(lambda: self._cancelled, timeout=delay)
                p.retry_at = ""
                if not await self._send_wave("deferred"):
                    return self.status()
        await self._enter("tracking", window_days=p.response_window_seconds / 86400)
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self._closed or self._cancelled,
                timeout=timedelta(seconds=p.response_window_seconds),
            )
        if workflow.patched("report-at-close"):
            await self._enter("reporting", "response window closed")
            reported: Reported = await workflow.execute_activity(
                "campaign_report",
                CampaignRef(p.campaign_id),
                result_type=Reported,
                start_to_close_timeout=timedelta(minutes=30),
                heartbeat_timeout=timedelta(seconds=p.heartbeat_timeout_seconds),
                retry_policy=RETRY,
            )
            p.report_path, p.reported = reported.path, reported.emailed
            await self._enter("done", f"report at {reported.path}; emailed {reported.emailed}")
        else:
            await self._enter("done", "response window closed")
        return self.status()

    async def _send_wave(self, wave: str) -> bool:
        """Send a wave in ``lanes`` parallel sequences of pages; False if cancelled on the way.

        Lane i takes the members (or, for deferred messages, ledger rows) whose id is i modulo
        ``lanes``, each lane a cursor; so several workers can send one campaign. After a few
        hundred pages the lanes stop at a page boundary and the workflow continues as new.
        """
        p = self._p
        assert p is not None
        if not p.cursors:
            p.cursors = [0] * p.lanes
            p.lanes_done = [False] * p.lanes
        pages = 0

        async def lane(i: int) -> None:
            nonlocal pages
            while not p.lanes_done[i]:
                await workflow.wait_condition(lambda: not self._paused or self._cancelled)
                if (
                    self._cancelled
                    or pages >= 200
                    or workflow.info().is_continue_as_new_suggested()
                ):
                    return
                page: PageResult = await workflow.execute_activity(
                    "campaign_send_page",
                    PageInput(p.campaign_id, p.cursors[i], p.page_size, wave, i, p.lanes),
                    task_queue=p.pages_queue or None,
                    result_type=PageResult,
                    start_to_close_timeout=timedelta(hours=1),
                    heartbeat_timeout=timedelta(seconds=p.heartbeat_timeout_seconds),
                    retry_policy=RETRY,
                )
                p.cursors[i] = page.last_member
                if wave == "deferred":  # these were counted as deferred when first tried
                    p.counts[DEFERRED] = p.counts.get(DEFERRED, 0) - page.sent
                else:
                    p.sent += page.sent
                for state, n in page.counts.items():
                    p.counts[state] = p.counts.get(state, 0) + n
                if page.retry_at:
                    p.retry_at = min(p.retry_at or page.retry_at, page.retry_at)
                p.lanes_done[i] = page.done
                pages += 1

        await asyncio.gather(*(lane(i) for i in range(p.lanes)))
        if self._cancelled:
            await self._enter("cancelled", f"cancelled after {p.sent} messages")
            return False
        if all(p.lanes_done):
            p.cursors, p.lanes_done = [], []
            return True
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(p)

    async def _pilot_gate(self) -> bool:
        """Go on after the pilot when its check passes (auto) or when a marketer says go."""
        p = self._p
        assert p is not None and p.pilot is not None
        if p.pilot.wait_seconds > 0:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self._cancelled, timeout=timedelta(seconds=p.pilot.wait_seconds)
                )
        check: PilotCheck = await workflow.execute_activity(
            "campaign_pilot_check",
            CampaignRef(p.campaign_id),
            result_type=PilotCheck,
            start_to_close_timeout=timedelta(minutes=5),
            retry_policy=RETRY,
        )
        p.pilot_check = check
        verdict = (
            f"pilot: {check.failed} of {check.handed} failed ({check.failure_rate:.1%}, "
            f"threshold {check.threshold:.1%})"
        )
        if check.passed and p.pilot.approval == "auto" and not self._cancelled:
            await self._enter("sending", f"{verdict}: go")
            return True
        await self._enter("pilot_review", f"{verdict}: waiting for go or cancel")
        await workflow.wait_condition(lambda: self._go is not None or self._cancelled)
        if self._cancelled:
            await self._enter("cancelled", f"cancelled after the pilot ({verdict})")
            return False
        assert self._go is not None
        await self._enter("sending", f"go after the pilot, by {self._go.by}")
        return True

    async def _enter(self, stage: str, note: str = "", window_days: float | None = None) -> None:
        assert self._p is not None
        self._p.stage = stage
        workflow.upsert_search_attributes([search.STAGE.value_set(f"campaign:{stage}")])
        workflow.set_current_details(f"**stage:** {stage}  \n{note}")
        await workflow.execute_activity(
            "campaign_stage",
            StageInput(self._p.campaign_id, stage, note, window_days),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RETRY,
        )

    # -- marketers ---------------------------------------------------------------------------

    @workflow.update
    def approve(self, decision: Decision) -> str:
        self._decision = ("approved", decision)
        return "approved"

    @approve.validator
    def _can_approve(self, decision: Decision) -> None:
        assert self._p is not None
        if self._p.stage != "awaiting_approval" or self._decision is not None:
            raise ApplicationError(f"the campaign is {self._p.stage}, not awaiting approval")
        if not decision.by.strip():
            raise ApplicationError("say who approves: --by NAME")
        if self._p.estimated_cost > self._p.budget:
            raise ApplicationError(
                f"estimated cost {self._p.estimated_cost:.2f} is over the budget "
                f"{self._p.budget:.2f}: raise the budget or narrow the audience"
            )

    @workflow.update
    def reject(self, decision: Decision) -> str:
        self._decision = ("rejected", decision)
        return "rejected"

    @reject.validator
    def _can_reject(self, decision: Decision) -> None:
        assert self._p is not None
        if self._p.stage != "awaiting_approval" or self._decision is not None:
            raise ApplicationError(f"the campaign is {self._p.stage}, not awaiting approval")
        if not decision.by.strip() or not decision.reason.strip():
            raise ApplicationError("say who rejects and why: --by NAME --reason TEXT")

    @workflow.update
    def go(self, decision: Decision) -> str:
        """After the pilot: send to everyone else."""
        self._go = decision
        return "go"

    @go.validator
    def _can_go(self, decision: Decision) -> None:
        assert self._p is not None
        if self._p.stage != "pilot_review" or self._go is not None:
            raise ApplicationError(f"the campaign is {self._p.stage}, not waiting after its pilot")
        if not decision.by.strip():
            raise ApplicationError("say who decides: --by NAME")

    @workflow.signal
    def pause(self) -> None:
        self._paused = True

    @workflow.signal
    def resume(self) -> None:
        self._paused = False

    @workflow.signal
    def cancel(self) -> None:
        self._cancelled = True

    @workflow.signal
    def close(self) -> None:
        """End the response window now."""
        self._closed = True

    @workflow.query
    def status(self) -> CampaignStatus:
        p = self._p
        assert p is not None
        prepared = p.prepared or Prepared(0, 0, 0)
        waiting = p.retry_at if p.stage == "waiting" else ""
        return CampaignStatus(
            campaign_id=p.campaign_id,
            stage=p.stage,
            paused=self._paused,
            decided_by=p.decided_by,
            estimated_cost=p.estimated_cost,
            budget=p.budget,
            treated=prepared.treated,
            control=prepared.control,
            excluded=prepared.excluded,
            sent=p.sent,
            counts=dict(p.counts),
            pilot=prepared.pilot,
            pilot_check=p.pilot_check,
            proofs=dict(p.proofs),
            waiting_until=waiting,
            report_path=p.report_path,
            reported=dict(p.reported),
        )
