"""Model training as a workflow: ``clientela models train NAME``, or a model's schedule."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.models import TrainInput, TrainResult


def workflow_id(name: str) -> str:
    """One training of a model at a time."""
    return f"model-train-{name}"


def schedule_id(name: str) -> str:
    return f"model-retrain-{name}"


@workflow.defn(name="ModelTraining")
class ModelTraining:
    @workflow.run
    async def run(self, params: TrainInput) -> TrainResult:
        return await workflow.execute_activity(
            "models_train",
            params,
            result_type=TrainResult,
            start_to_close_timeout=timedelta(hours=4),
            heartbeat_timeout=timedelta(minutes=10),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=5),
                maximum_interval=timedelta(minutes=2),
                maximum_attempts=5,
            ),
        )
