"""Starting and following ``rules apply`` (shared by the CLI and the demo)."""

from __future__ import annotations

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from activities.rules import rules_queue
from clientela.db import session_scope
from clientela.settings import Settings
from rules import service
from rules.model import Rules
from workflows.rules_apply import RulesApply, RulesApplyInput, RulesProgress, workflow_id


class ApplyRunning(RuntimeError):
    pass


async def start_apply(
    client: Client, settings: Settings, rules: Rules, *, started_by: str = "", page_size: int = 1000
) -> WorkflowHandle[RulesApply, RulesProgress]:
    """Store the rule version and start re-tiering the base with it."""
    with session_scope(settings.db_url) as session:
        service.register(session, rules, created_by=started_by)
    try:
        return await client.start_workflow(
            RulesApply.run,
            RulesApplyInput(
                digest=rules.digest,
                page_size=page_size,
                heartbeat_timeout_seconds=settings.heartbeat_timeout.total_seconds(),
                slices=settings.rules_slices,
                rules_queue=rules_queue(settings.task_queue),
            ),
            id=workflow_id(rules.name),
            task_queue=settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            static_summary=f"Apply rule set {rules.name} version {rules.version}",
        )
    except WorkflowAlreadyStartedError:
        raise ApplyRunning(
            f"{workflow_id(rules.name)} is already running; follow it with "
            "`clientela rules status` or wait for it to finish"
        ) from None


async def apply_progress(client: Client, ruleset: str) -> tuple[RulesProgress, bool]:
    """(progress, finished) of the latest apply of a rule set."""
    handle = client.get_workflow_handle_for(RulesApply.run, workflow_id(ruleset))
    desc = await handle.describe()
    if desc.status == WorkflowExecutionStatus.COMPLETED:
        return await handle.result(), True
    if desc.status != WorkflowExecutionStatus.RUNNING:
        raise RuntimeError(
            f"{workflow_id(ruleset)} ended {desc.status.name if desc.status else ''}"
        )
    return await handle.query(RulesApply.progress), False
