"""Record the histories the replay test checks:
``python -m tests.histories.record TAG [welcome] [campaign] [complaint] [rules]``.

Run it when a workflow gains a new shape that running executions will have, and commit the
JSON. Old files stay: executions started under them may still be running somewhere.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from clientela.devstack.smtp_catcher import SmtpCatcher
from clientela.journeys.router import Happening, enter, signal_event
from clientela.settings import Settings
from tests.conftest import TEMPORAL_BIN, free_port
from tests.factories import make_customer
from worker import build_worker
from workflows import search
from workflows.journey import JourneyWorkflow

HERE = Path(__file__).parent


def save(path: Path, text: str) -> None:
    """Write a history once: a saved one stands for executions that may still be running."""
    if path.exists():
        print(f"{path.name} exists; kept as it is (use a new tag for a new shape)")
        return
    path.write_text(text)


async def main(tag: str, what: set[str]) -> None:
    home = Path(tempfile.mkdtemp())
    catcher = SmtpCatcher(home / "outbox", port=free_port()).start()
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL_BIN), search_attributes=search.ALL
    )
    settings = Settings(
        home=home,
        temporal_address=env.client.service_client.config.target_host,
        task_queue="record",
        catcher_port=catcher.port,
        journey_time_scale=2 / (2 * 24 * 3600),  # the welcome's two days last two seconds
        sms_hours="00:00-24:00",
    )
    try:
        async with build_worker(env.client, settings):
            if "complaint" in what:
                await record_complaint(env, settings, tag, home)
            for name, respond in (("responded", True), ("silent", False)):
                if "welcome" not in what:
                    break
                cid = make_customer(settings.db_url, external_id=f"H-{name}")
                [entry] = await enter(
                    env.client, settings, cid, Happening(kind="event", event="signup", key="s")
                )
                if respond:
                    await asyncio.sleep(0.5)
                    await signal_event(env.client, settings, cid, "click", "email")
                handle = env.client.get_workflow_handle_for(JourneyWorkflow.run, entry.workflow_id)
                await handle.result()
                history = await handle.fetch_history()
                save(HERE / f"journey-welcome-{tag}-{name}.json", history.to_json())
            if "campaign" in what:
                await record_campaign(env, settings, tag, home)
            if "rules" in what:
                await record_rules(env, settings, tag)
    finally:
        catcher.stop()
        await env.shutdown()


async def record_campaign(
    env: WorkflowEnvironment, settings: Settings, tag: str, home: Path
) -> None:
    """A campaign approved, sent, tracked and closed."""
    from clientela.campaigns import lifecycle
    from rules.model import load
    from tests.test_campaign_workflow import wait_stage
    from tests.test_rules_apply import apply_directly

    for i in range(6):
        make_customer(settings.db_url, external_id=f"HC-{i}", locale="en")
    apply_directly(settings.db_url)
    spec = home / "campaign.yaml"
    spec.write_text(
        "id: history\nname: History\nowner: me\n"
        "target_kpi: {metric: conversion_rate, uplift: 1}\nbudget: 10\n"
        "cost_per_message: {email: 0.01}\nchannel: email\ntemplate: spring_offer\n"
        "control: {share: 0.2}\nresponse_window: 60\npilot: {share: 0.5}\n"
        "proof: {emails: [qa@example.com]}\nstakeholders: [lead@example.com]\n"
    )
    rules = load(HERE.parent.parent / "rules" / "crm.yaml")
    _, handle = await lifecycle.create(env.client, settings, spec, rules)
    await wait_stage(env.client, "history", "awaiting_approval")
    await lifecycle.decide(env.client, "history", "approve", by="recorder")
    await wait_stage(env.client, "history", "tracking")
    await lifecycle.control(env.client, "history", "close")
    await handle.result()
    history = await handle.fetch_history()
    save(HERE / f"campaign-{tag}-done.json", history.to_json())


async def record_rules(env: WorkflowEnvironment, settings: Settings, tag: str) -> None:
    """``rules apply`` of the shipped rules over a small base cut into two slices."""
    from clientela.rules_apply import start_apply
    from rules.model import load

    for i in range(12):
        make_customer(
            settings.db_url,
            external_id=f"HR-{i}",
            attributes={"monthly_income": 20 + 15 * i, "basic_charge": 30, "usage": 25 + 9 * i},
        )
    rules = load(HERE.parent.parent / "rules" / "crm.yaml")
    handle = await start_apply(
        env.client, settings.model_copy(update={"rules_slices": 2}), rules, page_size=4
    )
    await handle.result()
    history = await handle.fetch_history()
    save(HERE / f"rules-apply-{tag}-done.json", history.to_json())


async def record_complaint(
    env: WorkflowEnvironment, settings: Settings, tag: str, home: Path
) -> None:
    """A complaint left unanswered (reminded, escalated), then resolved and rated."""
    from clientela.customers import realtime
    from clientela.db import session_scope
    from clientela.journeys.runs import start_case, tell_case
    from clientela.service import cases as complaints
    from clientela.timeutil import utcnow
    from tests.test_complaints import quick_rules
    from tests.test_rules_apply import apply_directly
    from workflows.complaint import ComplaintCase

    cid = make_customer(settings.db_url, external_id="HK-1", locale="en")
    apply_directly(settings.db_url, quick_rules(home, response_h=0.0015, resolution_h=0.01))
    with session_scope(settings.db_url) as session:
        outcome = realtime.complaint(
            session, customer_id=cid, code="BILLING", description="", today=utcnow().date()
        )
    assert outcome.case is not None
    complaint_id, uid = outcome.case
    wid = await start_case(env.client, settings, complaint_id, uid)
    handle = env.client.get_workflow_handle_for(ComplaintCase.run, wid)
    for _ in range(100):
        if "escalated:response" in (await handle.query("status"))["steps"]:
            break
        await asyncio.sleep(0.2)
    for change in (
        lambda s: complaints.resolve(s, complaint_id, by="recorder"),
        lambda s: complaints.rate(s, complaint_id, score=3),
    ):
        with session_scope(settings.db_url) as session:
            change(session)
        await tell_case(env.client, complaint_id, uid)
        await asyncio.sleep(1)
    await handle.result()
    history = await handle.fetch_history()
    save(HERE / f"complaint-{tag}-rated.json", history.to_json())


if __name__ == "__main__":
    # python -m tests.histories.record TAG [welcome] [campaign] [complaint] [rules] (default: all)
    chosen = set(sys.argv[2:]) or {"welcome", "campaign", "complaint", "rules"}
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "v1", chosen))
