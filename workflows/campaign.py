"""A campaign from approval to report: approve or reject, build the list, send, track.

Stages: awaiting_approval -> (rejected) | preparing -> sending -> tracking -> done, or
cancelled. Marketers move it with updates (approve, reject) and signals (pause, resume,
cancel, close); operators read ``status`` and the ``Stage`` search attribute.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.campaigns import CampaignRef, PageInput, PageResult, Prepared, StageInput
    from workflows import search


def workflow_id(campaign_id: str) -> str:
    return f"campaign-{campaign_id}"


@dataclass
class CampaignInput:
    campaign_id: str
    estimated_cost: float
    budget: float
    response_window_seconds: float
    page_size: int = 500
    heartbeat_timeout_seconds: float = 30
    # Carried across continue-as-new:
    stage: str = "awaiting_approval"
    after_member: int = 0
    sent: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    prepared: Prepared | None = None
    decided_by: str = ""


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


RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1))


@workflow.defn(name="Campaign")
class CampaignWorkflow:
    def __init__(self) -> None:
        self._p: CampaignInput | None = None
        self._decision: tuple[str, Decision] | None = None
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
            await self._enter("preparing", f"approved by {decision.by}")
            p.prepared = await workflow.execute_activity(
                "campaign_prepare",
                CampaignRef(p.campaign_id),
                result_type=Prepared,
                start_to_close_timeout=timedelta(hours=1),
                retry_policy=RETRY,
            )
            await self._enter("sending")
        pages = 0
        while p.stage == "sending":
            await workflow.wait_condition(lambda: not self._paused or self._cancelled)
            if self._cancelled:
                await self._enter("cancelled", f"cancelled after {p.sent} messages")
                return self.status()
            page: PageResult = await workflow.execute_activity(
                "campaign_send_page",
                PageInput(p.campaign_id, p.after_member, p.page_size),
                result_type=PageResult,
                start_to_close_timeout=timedelta(hours=1),
                heartbeat_timeout=timedelta(seconds=p.heartbeat_timeout_seconds),
                retry_policy=RETRY,
            )
            p.after_member, p.sent = page.last_member, p.sent + page.sent
            for state, n in page.counts.items():
                p.counts[state] = p.counts.get(state, 0) + n
            if page.done:
                break
            pages += 1
            if workflow.info().is_continue_as_new_suggested() or pages >= 200:
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(p)
        await self._enter("tracking", window_days=p.response_window_seconds / 86400)
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: self._closed or self._cancelled,
                timeout=timedelta(seconds=p.response_window_seconds),
            )
        await self._enter("done", "response window closed")
        return self.status()

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
        )
