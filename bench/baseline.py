"""The bare baseline: a workflow that runs one activity and nothing else."""

from __future__ import annotations

import time
from datetime import timedelta

from temporalio import activity, workflow

#: When each baseline activity ran, by key (the baseline's "message out").
touched: dict[str, float] = {}


@activity.defn(name="bench_touch")
async def touch(key: str) -> None:
    touched[key] = time.time()


@workflow.defn(name="BenchOneActivity")
class OneActivity:
    @workflow.run
    async def run(self, key: str) -> None:
        await workflow.execute_activity(
            "bench_touch", key, start_to_close_timeout=timedelta(seconds=30)
        )
