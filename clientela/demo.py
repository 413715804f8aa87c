"""``clientela demo``: the main job on the embedded defaults, end to end on the real stack."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import col, select
from temporalio.client import WorkflowExecutionStatus

from clientela import ROOT
from clientela.customers import import_customers
from clientela.db import session_scope
from clientela.devstack import stack
from clientela.devstack.smtp_catcher import read_outbox
from clientela.rules_apply import ApplyRunning, apply_progress, start_apply
from clientela.sample import sample_rows, write_sample_csv
from clientela.sending import tier_channels
from clientela.settings import Settings
from clientela.temporal import connect
from models import Customer, Message
from rules.model import load

RULES = ROOT / "rules" / "crm.yaml"


@dataclass
class DemoReport:
    customers_file: Path
    imported: int = 0
    rejected: int = 0
    signups: list[str] = field(default_factory=list)
    journeys_started: int = 0
    journeys_finished: int = 0
    responses: int = 0
    messages: Counter[tuple[str, str]] = field(default_factory=Counter)
    outbox_files: int = 0
    sms_stored: int = 0
    stack_started: bool = False
    tiers: dict[str, int] = field(default_factory=dict)
    rules_version: str = ""


def run_demo(
    settings: Settings,
    *,
    customers: int,
    signups: int,
    follow_up_seconds: float,
    log: Callable[[str], None] = print,
) -> DemoReport:
    if not stack.is_up(settings):
        log("Starting the stack (Temporal, SMTP catcher, SMS sink, API, worker)...")
        os.environ.setdefault("CLIENTELA_WELCOME_FOLLOW_UP", f"PT{follow_up_seconds:g}S")
        stack.start_detached(settings)
        started = True
    else:
        log("The stack is already running; using it.")
        started = False

    run = datetime.now(UTC).strftime("%y%m%d%H%M%S")
    rows = sample_rows(customers, prefix=f"D{run}-", seed=int(run))
    path = write_sample_csv(settings.home / "demo" / f"customers-{run}.csv", rows)
    report = DemoReport(customers_file=path, stack_started=started)
    with session_scope(settings.db_url) as session:
        result = import_customers(session=session, path=path)
    report.imported, report.rejected = result.imported, len(result.errors)
    log(f"Imported {result.imported} generated customers from {path}")
    report.tiers, report.rules_version = asyncio.run(_apply_rules(settings))
    log(
        f"Tiered the base with rules/crm.yaml (version {report.rules_version}): "
        + ", ".join(f"{t} {n}" for t, n in sorted(report.tiers.items()))
    )

    chosen = _sign_up_mix(settings, rows, signups, random.Random(run))
    api = f"http://{settings.api_host}:{settings.api_port}"
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    with httpx.Client(base_url=api, timeout=30, headers=headers) as http:
        for row in chosen:
            body = {
                "type": "signup",
                "external_id": row["external_id"],
                "first_name": row["first_name"],
                "email_consent": row["email_consent"] == "true",
                "sms_consent": row["sms_consent"] == "true",
            }
            r = http.post("/events", json=body)
            r.raise_for_status()
            report.signups.append(row["external_id"])
            report.journeys_started += int(r.json()["journey"]["started"])
        log(f"Signed up {len(chosen)} customers through POST {api}/events")
        # A third of them respond to the welcome, which changes their follow-up.
        time.sleep(2)
        for cid in report.signups[::3]:
            r = http.post("/events", json={"type": "click", "customer_id": cid})
            report.responses += int(r.status_code == 202)
    log(f"{report.responses} of them clicked; waiting for the journeys to finish...")
    report.journeys_finished = asyncio.run(
        _wait_finished(settings, report.signups, within=follow_up_seconds + 60)
    )
    # Delivery reports for SMS arrive a moment after the send; give them a few seconds.
    deadline = time.monotonic() + 5
    while True:
        report.messages = _message_counts(settings, f"D{run}-")
        if report.messages[("sms", "sent")] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    report.outbox_files = len(read_outbox(settings.outbox_dir))
    store = settings.sms_dir / "messages.jsonl"
    report.sms_stored = sum(1 for _ in store.open()) if store.is_file() else 0
    return report


def _message_counts(settings: Settings, key_part: str) -> Counter[tuple[str, str]]:
    with session_scope(settings.db_url) as session:
        rows = session.exec(
            select(Message.channel, Message.state).where(
                col(Message.journey) == "welcome", col(Message.key).contains(key_part)
            )
        ).all()
    return Counter((channel, state) for channel, state in rows)


def _sign_up_mix(
    settings: Settings, rows: list[dict[str, Any]], signups: int, rng: random.Random
) -> list[dict[str, Any]]:
    """A random draw in which about a third prefer SMS and may get it, so both channels show."""
    by_id = {r["external_id"]: r for r in rows}
    with session_scope(settings.db_url) as session:
        texting = [
            customer.external_id
            for customer in session.exec(
                select(Customer).where(col(Customer.external_id).in_(list(by_id)))
            ).all()
            if customer.preferred_channel == "sms"
            and by_id[customer.external_id]["sms_consent"] == "true"
            and (allowed := tier_channels(session=session, customer=customer)) is not None
            and "sms" in allowed[1]
        ]
    picked = rng.sample(texting, min(len(texting), signups // 3))
    rest = [r["external_id"] for r in rows if r["external_id"] not in picked]
    picked += rng.sample(rest, min(len(rest), signups - len(picked)))
    return [by_id[cid] for cid in picked]


async def _apply_rules(settings: Settings) -> tuple[dict[str, int], str]:
    """Run `rules apply` with the shipped rule file and wait for it."""
    rules = load(RULES)
    client = await connect(settings)
    # Someone else's apply of the same rule set may be running: then wait for that one.
    with contextlib.suppress(ApplyRunning):
        await start_apply(client, settings, rules, started_by="demo")
    while True:
        progress, finished = await apply_progress(client, rules.name)
        if finished:
            return progress.tiers, progress.version
        await asyncio.sleep(0.5)


async def _wait_finished(settings: Settings, customer_ids: list[str], within: float) -> int:
    client = await connect(settings)
    deadline = time.monotonic() + within
    done: set[str] = set()
    while time.monotonic() < deadline:
        for cid in customer_ids:
            if cid in done:
                continue
            desc = await client.get_workflow_handle(f"welcome-{cid}").describe()
            if desc.status != WorkflowExecutionStatus.RUNNING:
                done.add(cid)
        if len(done) == len(customer_ids):
            break
        await asyncio.sleep(1)
    return len(done)
