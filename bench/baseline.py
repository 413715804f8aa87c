"""The bare baseline: a workflow that runs one activity and nothing else.

In the benchmark's own process, ``touch`` notes when each activity ran in ``touched``. As a
worker process of its own (``python -m bench.baseline --address A --queue Q --log FILE``, as
the project's worker runs beside its API), each activity appends ``key<TAB>time`` to the log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from datetime import timedelta
from pathlib import Path

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


def read_log(path: Path) -> dict[str, float]:
    """When each activity of a baseline worker process ran, by key."""
    if not path.exists():
        return {}
    seen = {}
    for line in path.read_text().splitlines():
        key, _, at = line.partition("\t")
        if at:
            seen[key] = float(at)
    return seen


async def _serve(address: str, queue: str, log: Path) -> None:
    from temporalio.client import Client
    from temporalio.worker import Worker

    from bench import baseline  # the workflow by its module's name, not as __main__

    out = log.open("a", buffering=1)  # a line at a time, so the benchmark sees it at once

    @activity.defn(name="bench_touch")
    async def touch_logged(key: str) -> None:
        out.write(f"{key}\t{time.time()}\n")

    client = await Client.connect(address)
    async with Worker(
        client,
        task_queue=queue,
        workflows=[baseline.OneActivity],
        activities=[touch_logged],
        max_concurrent_activities=50,
    ):
        await asyncio.Event().wait()  # until the benchmark terminates the process


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="a worker process for the bare baseline")
    parser.add_argument("--address", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.address, args.queue, args.log))
