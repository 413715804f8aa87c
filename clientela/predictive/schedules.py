"""Training on a schedule: a Temporal schedule per model spec that asks for ``retrain``."""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from activities.models import TrainInput
from clientela.predictive import spec as model_spec
from clientela.settings import Settings
from workflows.models import ModelTraining, schedule_id, workflow_id


def _schedule(settings: Settings, name: str, every: timedelta) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            ModelTraining.run,
            TrainInput(name=name, requested_by="schedule"),
            id=workflow_id(name),
            task_queue=settings.task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        # A training still running when the next is due: the next is skipped.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_model_schedules(client: Client, settings: Settings) -> list[str]:
    """Create or update the schedule of every model that asks to be retrained; a model
    that no longer asks loses its schedule. Returns the names scheduled."""
    scheduled = []
    for name in model_spec.names(settings.predictive_dir):
        try:
            spec = model_spec.load(settings.predictive_dir, name)
        except ValueError:
            continue  # `clientela models check` reports it; training refuses it
        handle = client.get_schedule_handle(schedule_id(name))
        try:
            await handle.describe()
            exists = True
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            exists = False
        if spec.retrain is None:
            if exists:
                await handle.delete()
            continue
        wanted = _schedule(settings, name, spec.retrain)
        if exists:

            def replace(_: ScheduleUpdateInput, s: Schedule = wanted) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=s)

            await handle.update(replace)
        else:
            # Another worker starting at the same moment may have made it: so much the better.
            with contextlib.suppress(ScheduleAlreadyRunningError):
                await client.create_schedule(schedule_id(name), wanted)
        scheduled.append(name)
    return scheduled
