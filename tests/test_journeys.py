"""Journeys defined in data: triggers, conditions, branches, re-entry, caps, versions."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from temporalio.client import Client
from temporalio.worker import Replayer

from clientela.devstack.smtp_catcher import SmtpCatcher, read_outbox
from clientela.journeys.router import Happening, enter, signal_event
from clientela.settings import Settings
from tests.factories import make_customer
from tests.test_rules_apply import apply_directly
from tests.test_welcome import finished
from worker import WORKFLOWS

DAY = 24 * 3600.0

CUSTOM = """\
name: nudge
owner: test
trigger: {{event: visit}}
reentry: {reentry}
steps:
  - id: hello
    send: {{template: {template}, channel: email}}
  - id: listen
    wait_for: {{events: [click], timeout: 1d}}
  - branch:
      - {{if: "event:click", goto: thanks}}
      - {{if: "tier == 'A'", goto: vip}}
    else: bye
  - id: thanks
    send: {{template: welcome_engaged, channel: email}}
  - exit: clicked
  - id: vip
    exit: a tier A customer who did not click
  - id: bye
    exit: did not click
"""


def custom(
    tmp_path: Path,
    settings: Settings,
    reentry: str = "{policy: every_time}",
    template: str = "welcome",
    seconds_per_day: float = 1.0,
) -> Settings:
    """Settings whose journeys folder holds only the ``nudge`` journey above."""
    folder = tmp_path / "journeys"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nudge.yaml").write_text(CUSTOM.format(reentry=reentry, template=template))
    return settings.model_copy(
        update={"journeys_dir": folder, "journey_time_scale": seconds_per_day / DAY}
    )


def visit(key: str) -> Happening:
    return Happening(kind="event", event="visit", key=key)


async def test_branches_on_an_event_and_on_a_rule_condition(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    s = custom(tmp_path, settings, seconds_per_day=1.5)
    clicker = make_customer(settings.db_url, locale="en")
    vip = make_customer(settings.db_url, locale="en", attributes={"monthly_income": 150})
    plain = make_customer(settings.db_url, locale="en")
    apply_directly(settings.db_url)  # vip is tier A, the others tier C
    runs = {}
    for cid in (clicker, vip, plain):
        [entry] = await enter(client, s, cid, visit("v1"))
        assert entry.started and entry.workflow_id == f"journey-nudge-{cid}-v1"
        runs[cid] = entry.workflow_id
    await asyncio.sleep(0.5)
    assert await signal_event(client, s, clicker, "click", "email") == [runs[clicker]]
    results = {cid: await finished(client, wid) for cid, wid in runs.items()}
    assert results[clicker].exit_reason == "clicked"
    assert results[clicker].trail[2] == "step3: event:click -> thanks"
    assert results[vip].exit_reason == "a tier A customer who did not click"
    assert results[plain].exit_reason == "did not click"
    assert results[plain].trail[2] == "step3: else -> bye"
    # The thank-you would be a second email this week: tier C's cap holds it back.
    thanks = results[clicker].messages[1]
    assert (thanks.state, thanks.reason) == (
        "suppressed",
        "email: contact cap of tier C: 1 per week",
    )


async def test_re_entry_policies(
    client: Client, settings: Settings, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    cid = make_customer(settings.db_url, locale="en")
    every = custom(tmp_path, settings)
    first = await enter(client, every, cid, visit("a"))
    again = await enter(client, every, cid, visit("a"))  # the same happening twice
    other = await enter(client, every, cid, visit("b"))
    assert [e.started for e in first + again + other] == [True, False, True]
    once = custom(tmp_path / "once", settings, "{policy: once}")
    assert [e.started for e in await enter(client, once, cid, visit("c"))] == [True]
    assert [e.started for e in await enter(client, once, cid, visit("d"))] == [False]
    per = custom(tmp_path / "per", settings, "{policy: once_per, period: 365d}")
    [a] = await enter(client, per, cid, visit("e"))
    [b] = await enter(client, per, cid, visit("f"))
    assert a.started and not b.started and b.reason == "already in it (re-entry policy)"
    assert a.workflow_id.startswith(f"journey-nudge-{cid}-p")
    for entry in first + other + [a]:  # nothing runs them here: end them
        await client.get_workflow_handle(entry.workflow_id).terminate()
    await client.get_workflow_handle(f"journey-nudge-{cid}").terminate()


async def test_an_entry_condition_keeps_customers_out(
    client: Client, settings: Settings, tmp_path: Path
) -> None:
    s = custom(tmp_path, settings)
    nudge = tmp_path / "journeys" / "nudge.yaml"
    nudge.write_text(nudge.read_text().replace("owner: test", "owner: test\nwhen: tier == 'A'"))
    cid = make_customer(settings.db_url, locale="en")
    apply_directly(settings.db_url)  # tier C
    [entry] = await enter(client, s, cid, visit("x"))
    assert not entry.started and entry.reason == "when: tier == 'A'"


async def test_a_running_journey_keeps_the_version_it_started_with(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    s = custom(tmp_path, settings, template="welcome", seconds_per_day=30)
    early = make_customer(settings.db_url, locale="en", first_name="Early")
    late = make_customer(settings.db_url, locale="en", first_name="Late")
    [first] = await enter(client, s, early, visit("k"))
    await asyncio.sleep(0.5)  # the first journey is waiting for a click
    nudge = tmp_path / "journeys" / "nudge.yaml"  # a marketer edits the definition
    nudge.write_text(CUSTOM.format(reentry="{policy: every_time}", template="cross_sell"))
    [second] = await enter(client, s, late, visit("k"))
    await asyncio.sleep(0.5)
    for cid in (early, late):
        await signal_event(client, s, cid, "click", "email")
    old = await finished(client, first.workflow_id)
    new = await finished(client, second.workflow_id)
    assert old.version != new.version
    subjects = {m["subject"] for m in read_outbox(s.outbox_dir)}
    assert {"Welcome, Early!", "Late, something that goes with your purchase"} <= subjects
    # Its history replays against today's code, whatever the file says now.
    history = await client.get_workflow_handle(first.workflow_id).fetch_history()
    await Replayer(workflows=WORKFLOWS).replay_workflow(history)


async def test_a_journey_and_a_campaign_share_the_contact_caps(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    from tests.test_campaign_workflow import approved, closed, write_spec

    s = custom(tmp_path, settings)
    cid = make_customer(settings.db_url, locale="en")
    apply_directly(settings.db_url)  # tier C: one email a week
    campaign = f"c-cap-{uuid.uuid4().hex[:8]}"
    spec = write_spec(tmp_path, campaign)
    spec.write_text(spec.read_text().replace("control: {share: 0.2}", "control: {share: 0}"))
    _, handle = await approved(client, settings, spec, campaign)
    await closed(client, campaign, handle)
    [entry] = await enter(client, s, cid, visit("after-campaign"))
    result = await finished(client, entry.workflow_id)
    [held] = result.messages[:1]
    assert (held.state, held.reason) == ("suppressed", "email: contact cap of tier C: 1 per week")
    assert len(read_outbox(settings.outbox_dir)) == 1  # the campaign's only


async def test_an_entry_held_with_its_event_is_started_by_the_sweeper_once(
    client: Client, settings: Settings, worker: None
) -> None:
    """The API records a sign-up and its journey entry in one transaction; if it stops before
    starting the journey, the sweeper starts it a minute later, once."""
    from datetime import timedelta

    from sqlmodel import select

    from api.app import create_app
    from api.routes.events import ProfileEvent, _realtime, _upsert
    from api.sweep import resume_journeys
    from clientela.db import session_scope
    from models import JourneyOutbox
    from models.schemas import CustomerIn

    app = create_app(settings, client)
    data = CustomerIn(
        external_id=f"S-{uuid.uuid4().hex[:6]}", email="sol@example.com", email_consent=True
    )
    created, held = _upsert(settings, data)  # committed; then the process stopped
    assert created and len(held) == 1
    assert await resume_journeys(app) == []  # too recent: its own request may be starting it
    with session_scope(settings.db_url) as session:
        for row in session.exec(select(JourneyOutbox)).all():
            row.created_at -= timedelta(minutes=2)
            session.add(row)
    entries = await resume_journeys(app)
    assert [(e.journey, e.workflow_id, e.started) for e in entries] == [
        ("welcome", f"journey-welcome-{data.external_id}", True)
    ]
    assert await resume_journeys(app) == []
    with session_scope(settings.db_url) as session:
        assert session.exec(select(JourneyOutbox)).all() == []
    # What lets nobody into any journey writes nothing to the outbox.
    _, nothing = _realtime(
        settings, ProfileEvent(type="profile", external_id=data.external_id, locale="es")
    )
    assert nothing == []
