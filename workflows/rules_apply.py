"""``rules apply``: re-tier the whole base with one rule version, page by page."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.rules import (
        ApplyPagesInput,
        ApplyPagesResult,
        FinishInput,
        PrepareInput,
        PrepareResult,
    )
    from workflows import search


def workflow_id(ruleset: str) -> str:
    """One apply per rule set at a time."""
    return f"rules-apply-{ruleset}"


@dataclass
class RulesApplyInput:
    digest: str
    page_size: int = 1000
    pages_per_activity: int = 5
    heartbeat_timeout_seconds: float = 60
    # Carried across continue-as-new:
    run_id: int | None = None
    today: str = ""
    total: int = 0
    after_id: int = 0
    processed: int = 0
    changed: int = 0
    tiers: dict[str, int] = field(default_factory=dict)
    # The base in slices decided in parallel, on the rules task queue (empty queue: one
    # slice on the workflow's own queue, as runs started before slices did):
    slices: int = 1
    rules_queue: str = ""
    cursors: list[int] = field(default_factory=list)  # per slice: the last id decided
    ends: list[int | None] = field(default_factory=list)  # per slice: its last id (or open)
    done: list[bool] = field(default_factory=list)
    # Rankings computed over the slices too (runs started before: in rules_prepare):
    starts: list[int] = field(default_factory=list)  # per slice: where it starts
    rank_in_slices: bool = False
    ranked: bool = False


@dataclass
class RulesProgress:
    stage: str
    version: str
    run_id: int | None
    total: int
    processed: int
    changed: int
    tiers: dict[str, int]


RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30))


@workflow.defn(name="RulesApply")
class RulesApply:
    def __init__(self) -> None:
        self._stage = "starting"
        self._params: RulesApplyInput | None = None

    @workflow.run
    async def run(self, params: RulesApplyInput) -> RulesProgress:
        self._params = params
        if not params.today:
            params.today = workflow.now().date().isoformat()
        heartbeat = timedelta(seconds=params.heartbeat_timeout_seconds)
        if params.run_id is None:
            sliced = bool(params.rules_queue) and workflow.patched("rules-rank-slices")
            self._set_stage("ranking")
            prepared: PrepareResult = await workflow.execute_activity(
                "rules_prepare",
                PrepareInput(
                    digest=params.digest, today=params.today, slices=params.slices, rank=not sliced
                ),
                result_type=PrepareResult,
                start_to_close_timeout=timedelta(hours=2),
                heartbeat_timeout=heartbeat * 10,
                retry_policy=RETRY,
            )
            params.run_id, params.total = prepared.run_id, prepared.total
            bounds = prepared.bounds or [0]
            params.cursors, params.starts = list(bounds), list(bounds)
            params.ends = [*bounds[1:], None]
            params.done = [False] * len(bounds)
            params.rank_in_slices = sliced and prepared.rankings > 0
        if params.rank_in_slices and not params.ranked:
            # Every slice stores its customers' ranking values, in parallel; then the
            # thresholds over the whole base; then the slices decide from the start.
            await self._slices(params, heartbeat, "rules_rank_pages")
            await workflow.execute_activity(
                "rules_thresholds",
                params.run_id,
                start_to_close_timeout=timedelta(minutes=30),
                retry_policy=RETRY,
            )
            params.ranked = True
            params.cursors = list(params.starts)
            params.done = [False] * len(params.starts)
        self._set_stage("deciding")
        if params.rules_queue and params.cursors and workflow.patched("rules-slices"):
            await self._slices(params, heartbeat, "rules_apply_pages")
        else:
            await self._one_by_one(params, heartbeat)
        self._set_stage("finishing")
        await workflow.execute_activity(
            "rules_finish",
            FinishInput(
                run_id=params.run_id,
                counts={"processed": params.processed, "changed": params.changed, **params.tiers},
            ),
            start_to_close_timeout=timedelta(minutes=1),
            retry_policy=RETRY,
        )
        self._set_stage("done")
        return self.progress()

    def _count(self, params: RulesApplyInput, result: ApplyPagesResult) -> None:
        params.processed += result.processed
        params.changed += result.changed
        for tier, n in result.tiers.items():
            params.tiers[tier] = params.tiers.get(tier, 0) + n

    async def _slices(self, params: RulesApplyInput, heartbeat: timedelta, step: str) -> None:
        """Rounds: each slice not done yet takes its next pages (``step``: ranks or decides
        them), all slices at once, on whichever worker processes are free; between rounds
        nothing is in flight, so the run can continue as new there."""
        assert params.run_id is not None
        calls = 0
        while not all(params.done):
            todo = [i for i, done in enumerate(params.done) if not done]
            results = await asyncio.gather(
                *(
                    workflow.execute_activity(
                        step,
                        ApplyPagesInput(
                            run_id=params.run_id,
                            after_id=params.cursors[i],
                            today=params.today,
                            page_size=params.page_size,
                            pages=params.pages_per_activity,
                            until_id=params.ends[i],
                        ),
                        result_type=ApplyPagesResult,
                        task_queue=params.rules_queue,
                        start_to_close_timeout=timedelta(hours=1),
                        heartbeat_timeout=heartbeat,
                        retry_policy=RETRY,
                    )
                    for i in todo
                )
            )
            for i, result in zip(todo, results, strict=True):
                params.cursors[i] = result.last_id
                params.done[i] = result.done
                if step == "rules_apply_pages":
                    self._count(params, result)
            calls += 1
            if not all(params.done) and (
                workflow.info().is_continue_as_new_suggested() or calls >= 500
            ):
                workflow.continue_as_new(params)

    async def _one_by_one(self, params: RulesApplyInput, heartbeat: timedelta) -> None:
        """The whole base in one run of pages (applies started before slices existed)."""
        assert params.run_id is not None
        calls = 0
        while True:
            result: ApplyPagesResult = await workflow.execute_activity(
                "rules_apply_pages",
                ApplyPagesInput(
                    run_id=params.run_id,
                    after_id=params.after_id,
                    today=params.today,
                    page_size=params.page_size,
                    pages=params.pages_per_activity,
                ),
                result_type=ApplyPagesResult,
                start_to_close_timeout=timedelta(hours=1),
                heartbeat_timeout=heartbeat,
                retry_policy=RETRY,
            )
            params.after_id = result.last_id
            self._count(params, result)
            if result.done:
                break
            calls += 1
            if workflow.info().is_continue_as_new_suggested() or calls >= 500:
                workflow.continue_as_new(params)

    def _set_stage(self, stage: str) -> None:
        self._stage = stage
        workflow.upsert_search_attributes([search.STAGE.value_set(f"rules:{stage}")])
        p = self._params
        if p is not None:
            workflow.set_current_details(
                f"**stage:** {stage}  \n**version:** {p.digest[:12]}  \n"
                f"**progress:** {p.processed} of {p.total or '?'} customers"
            )

    @workflow.query
    def progress(self) -> RulesProgress:
        p = self._params
        assert p is not None
        return RulesProgress(
            stage=self._stage,
            version=p.digest[:12],
            run_id=p.run_id,
            total=p.total,
            processed=p.processed,
            changed=p.changed,
            tiers=dict(p.tiers),
        )
