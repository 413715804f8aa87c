"""Executing a campaign: proofs, variants, the pilot and its go/no-go, caps and quiet hours."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlmodel import select
from temporalio.client import Client

from activities.contracts import DEFERRED, MessageRequest
from clientela.campaigns import lifecycle
from clientela.db import session_scope
from clientela.devstack.sms_sink import SmsSink
from clientela.devstack.smtp_catcher import Fault, SmtpCatcher, read_outbox
from clientela.messaging.sending import Sender
from clientela.settings import Settings
from clientela.timeutil import QuietHours, as_utc, zone_of
from models import Campaign, Message
from tests.factories import make_customer, make_staff
from tests.test_campaign_workflow import (
    RULES,
    approved,
    closed,
    members_of,
    tiered_customers,
    wait_stage,
)
from tests.test_rules_apply import apply_directly
from worker import build_worker

SPEC = """\
id: {id}
name: Execution test
owner: me
target_kpi: {{metric: conversion_rate, uplift: 1}}
budget: 10
cost_per_message: {{email: 0.01, sms: 0.05}}
channel: {channel}
template: spring_offer
control: {{share: 0.2}}
response_window: 60
"""


def write(tmp_path: Path, campaign_id: str, extra: str = "", channel: str = "email") -> Path:
    path = tmp_path / f"{campaign_id}.yaml"
    path.write_text(SPEC.format(id=campaign_id, channel=channel) + extra)
    return path


def subjects_by_recipient(settings: Settings) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for message in read_outbox(settings.outbox_dir):
        out.setdefault(message["to"][0], []).append(message["subject"])
    return out


async def test_proofs_variants_and_an_automatic_pilot(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    tiered_customers(settings.db_url, 40, locale="en")
    cid = f"c-pilot-{uuid.uuid4().hex[:8]}"
    spec = write(
        tmp_path,
        cid,
        "proof: {emails: [qa@example.com]}\n"
        "stakeholders: [Lead@example.com]\n"
        "pilot: {share: 0.3, max_failure_rate: 0.1}\n"
        "variants: [{name: offer, template: spring_offer}, "
        "{name: reminder, template: welcome_reminder}]\n",
    )
    preview, handle = await approved(client, settings, spec, cid)
    assert set(preview.by_variant) == {"offer", "reminder"} and preview.pilot > 0
    status = await lifecycle.status(client, cid)
    final = await closed(client, cid, handle)

    sent = subjects_by_recipient(settings)
    # Proofs: each variant's template in each of its locales, once, to the proof list.
    assert len(sent.pop("qa@example.com")) == 4  # 2 templates x (en, es)
    # At the close the report goes to the stakeholders, and its page is written.
    assert sent.pop("Lead@example.com") == ["Campaign report: Execution test"]
    assert final.stage == "done" and final.reported == {"sent": 1}
    page = await asyncio.to_thread(Path(final.report_path).read_text)
    assert page.startswith("<!doctype html>") and "arm main" in page
    await _the_stakeholders_link_opens_the_report(client, settings, cid)
    members = members_of(settings.db_url, cid)
    treated = {e: m for m, e in members if m.group == "treated"}
    assert sorted(sent) == sorted(f"{e.lower()}" for e in _emails(settings, treated))
    assert all(len(subjects) == 1 for subjects in sent.values())  # each exactly once
    with session_scope(settings.db_url) as session:
        rows = session.exec(select(Message).where(Message.campaign == cid)).all()
        history = session.get(Campaign, cid).spec["history"]  # type: ignore[union-attr]
    member_rows = [r for r in rows if r.key.endswith(":message")]
    templates = Counter(r.template for r in member_rows)
    assert set(templates) == {"spring_offer", "welcome_reminder"}
    by_member = {r.key.split(":")[2]: r.template for r in member_rows}
    for external_id, member in treated.items():
        expected = "spring_offer" if member.variant == "offer" else "welcome_reminder"
        assert by_member[external_id] == expected
    assert status.pilot_check is not None and status.pilot_check.passed
    assert status.pilot_check.handed == status.pilot == preview.pilot
    assert any(note.startswith("pilot: 0 of") and note.endswith(": go") for note in history)


async def _the_stakeholders_link_opens_the_report(
    client: Client, settings: Settings, cid: str
) -> None:
    """The link in the stakeholders' email opens the report without the API key (which the
    API requires once it has one); the API's own report page still needs the key."""
    import email
    import email.policy
    import re

    from clientela.messaging.links import report_token
    from tests.serving import api

    [entry] = [m for m in read_outbox(settings.outbox_dir) if m["to"] == ["Lead@example.com"]]
    raw = (settings.outbox_dir / entry["file"]).read_bytes()
    text = email.message_from_bytes(raw, policy=email.policy.default).get_body(("plain",))
    link = re.search(r"https?://\S+/r/[A-Za-z0-9_=-]+", text.get_content())  # type: ignore[union-attr]
    assert link is not None
    keyed = settings.model_copy(update={"api_key": "k3y-for-this-test"})
    async with api(client, keyed) as http:
        opened = await http.get(link[0].removeprefix(settings.recipient_base_url))
        assert opened.status_code == 200 and "arm main" in opened.text
        assert (await http.get(f"/campaigns/{cid}/report.html")).status_code == 401
        expired = report_token(settings, cid, valid_until=1)
        gone = await http.get(f"/r/{expired}")
        assert gone.status_code == 404 and "expired" in gone.text
        forged = await http.get(f"/r/{report_token(settings, cid)[:-2]}xx")
        assert forged.status_code == 404


def _emails(settings: Settings, by_external: dict[str, object]) -> list[str]:
    from models import Customer

    with session_scope(settings.db_url) as session:
        return [
            c.email or ""
            for c in session.exec(select(Customer)).all()
            if c.external_id in by_external
        ]


async def test_a_manual_pilot_waits_for_go(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    tiered_customers(settings.db_url, 30, locale="en")
    manual = f"c-manual-{uuid.uuid4().hex[:8]}"
    _, handle = await approved(
        client,
        settings,
        write(tmp_path, manual, "pilot: {share: 0.3, approval: manual}\n"),
        manual,
        "pilot_review",
    )
    status = await lifecycle.status(client, manual)
    assert status.pilot_check is not None and status.pilot_check.passed
    assert len(read_outbox(settings.outbox_dir)) == status.pilot == status.sent > 0
    assert await lifecycle.decide(client, manual, "go", by="luis") == "go"
    await wait_stage(client, manual, "tracking")
    final = await closed(client, manual, handle)
    assert len(read_outbox(settings.outbox_dir)) == final.sent == final.treated


async def test_a_pilot_that_bounces_waits_for_a_decision(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    tiered_customers(settings.db_url, 30, locale="en")
    # Even with automatic approval: the pilot's failure rate is over the threshold.
    catcher.handler.faults.append(Fault(pattern=".", code=550, message="5.1.1 no mailbox"))
    failing = f"c-fail-{uuid.uuid4().hex[:8]}"
    _, handle = await approved(
        client, settings, write(tmp_path, failing, "pilot: {share: 0.3}\n"), failing, "pilot_review"
    )
    status = await lifecycle.status(client, failing)
    assert status.pilot_check is not None and not status.pilot_check.passed
    assert status.pilot_check.failure_rate == 1.0
    await lifecycle.control(client, failing, "cancel")
    final = await handle.result()
    assert final.stage == "cancelled" and final.sent == status.pilot  # nothing after the pilot


async def test_contact_caps_of_the_tier_are_shared_by_every_campaign(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    # Tier C may get one email a week (rules/crm.yaml).
    tiered_customers(settings.db_url, 6, locale="en")
    first = f"c-cap1-{uuid.uuid4().hex[:8]}"
    _, handle = await approved(client, settings, write(tmp_path, first), first, "tracking")
    await lifecycle.control(client, first, "close")
    await handle.result()
    contacted = {e for m, e in members_of(settings.db_url, first) if m.group == "treated"}
    second = f"c-cap2-{uuid.uuid4().hex[:8]}"
    preview, handle = await lifecycle.create(client, settings, write(tmp_path, second), RULES)
    # Those contacted by the first campaign are excluded by the cap, in both groups.
    assert preview.excluded == {"email: contact cap of tier C: 1 per week": len(contacted)}
    members = members_of(settings.db_url, second)
    await lifecycle.control(client, second, "cancel")
    await handle.result()
    assert members == []  # the preview wrote nothing


async def test_sending_is_paced_by_the_channel_rate(
    settings: Settings, catcher: SmtpCatcher
) -> None:
    customers = [make_customer(settings.db_url, locale="en") for _ in range(6)]
    paced = settings.model_copy(update={"email_rate": 5.0})  # one every 0.2 s
    sender = Sender(paced, "t/1/1")
    started = datetime.now(UTC)
    try:
        outcomes = await sender.deliver_many(
            [MessageRequest(key=f"r{c}", customer_id=c, template="welcome") for c in customers]
        )
    finally:
        await sender.close()
    assert all(getattr(o, "state", None) == "sent" for o in outcomes)
    times = sorted(
        datetime.fromisoformat(m["received_at"]) for m in read_outbox(settings.outbox_dir)
    )
    # The k-th message may not reach the relay before its slot, k / rate after the start.
    # A loaded machine can only make a message later than its slot, so this holds under load
    # (the gaps between arrivals do not: one late hand-over shortens the gap after it).
    early = [
        (k, (t - started).total_seconds())
        for k, t in enumerate(times)
        if (t - started).total_seconds() < k * 0.2 - 0.02
    ]
    assert len(times) == 6 and not early, early


async def test_the_sender_refuses_past_a_cap(settings: Settings, catcher: SmtpCatcher) -> None:
    cid = make_customer(settings.db_url, locale="en")
    apply_directly(settings.db_url)  # tier C: one email a week
    sender = Sender(settings, "t/1/1")
    try:
        first = await sender.deliver(MessageRequest(key="k1", customer_id=cid, template="welcome"))
        second = await sender.deliver(MessageRequest(key="k2", customer_id=cid, template="welcome"))
    finally:
        await sender.close()
    assert first.state == "sent"
    assert (second.state, second.reason) == (
        "suppressed",
        "email: contact cap of tier C: 1 per week; sms: not a channel of tier C",
    )


def closed_now() -> str:
    """SMS hours (UTC) that do not include the present moment."""
    now = datetime.now(UTC)
    if now.hour >= 2:
        return f"00:00-{now.hour - 1:02d}:00"
    return f"{now.hour + 2:02d}:00-23:00"


async def test_quiet_hours_defer_an_sms_until_they_end(
    settings: Settings, sms_sink: SmsSink
) -> None:
    cid = make_customer(settings.db_url, timezone="UTC", preferred_channel="sms")
    quiet = settings.model_copy(update={"sms_hours": closed_now()})
    req = MessageRequest(key="q1", customer_id=cid, template="welcome", channel="sms")
    sender = Sender(quiet, "t/1/1")
    try:
        deferred = await sender.deliver(req)
    finally:
        await sender.close()
    expected = QuietHours.parse(quiet.sms_hours).next_opening(datetime.now(UTC), zone_of("UTC"))
    assert deferred.state == DEFERRED and deferred.reason.startswith("quiet hours: SMS waits")
    assert expected is not None
    assert abs(datetime.fromisoformat(deferred.retry_at) - expected) < timedelta(minutes=1)
    assert sms_sink.messages == []
    with session_scope(settings.db_url) as session:
        row = session.exec(select(Message).where(Message.key == "q1")).one()
        assert row.state == "queued"
    sender = Sender(settings, "t/1/2")  # any hour: the same message goes, once
    try:
        sent = await sender.deliver(req)
        again = await sender.deliver(req)
    finally:
        await sender.close()
    assert sent.state == again.state == "sent" and len(sms_sink.messages) == 1


def test_quiet_hours_are_local_to_the_customer() -> None:
    hours = QuietHours.parse("08:00-21:00")
    at = datetime(2026, 11, 22, 20, 30, tzinfo=UTC)  # 21:30 in Madrid, 15:30 in New York
    assert hours.next_opening(at, zone_of("Europe/Madrid")) == datetime(
        2026, 11, 23, 7, 0, tzinfo=UTC
    )
    assert hours.next_opening(at, zone_of("America/New_York")) is None
    early = datetime(2026, 11, 22, 5, 0, tzinfo=UTC)  # 06:00 in Madrid: opens at 08:00 today
    assert hours.next_opening(early, zone_of("Europe/Madrid")) == datetime(
        2026, 11, 22, 7, 0, tzinfo=UTC
    )
    assert QuietHours.parse("00:00-24:00").next_opening(at, zone_of("UTC")) is None


def opening_soon(seconds: int = 6) -> tuple[str, str]:
    """(time zone, SMS hours) such that in that zone the hours open ``seconds`` from now.

    The zone is one where it is about 10:00 now, so that the hours never wrap midnight.
    """
    now = datetime.now(UTC)
    offset = (10 - now.hour + 12) % 24 - 12  # UTC+offset is about 10:00 local
    zone = f"Etc/GMT{-offset:+d}" if offset else "UTC"  # Etc/GMT-2 is UTC+2
    opens = now.astimezone(zone_of(zone)) + timedelta(seconds=seconds)
    return zone, f"{opens:%H:%M:%S}-23:00"


async def test_a_campaign_waits_out_quiet_hours_then_sends_the_deferred(
    client: Client, settings: Settings, sms_sink: SmsSink, tmp_path: Path
) -> None:
    zone, hours = opening_soon()
    quiet = settings.model_copy(update={"sms_hours": hours})
    tiered_customers(  # tier A: SMS is one of its channels
        settings.db_url,
        5,
        timezone=zone,
        preferred_channel="sms",
        attributes={"monthly_income": 150},
    )
    cid = f"c-quiet-{uuid.uuid4().hex[:8]}"
    spec = write(tmp_path, cid, channel="sms")
    spec.write_text(spec.read_text().replace("control: {share: 0.2}", "control: {share: 0}"))
    async with build_worker(client, quiet):
        preview, handle = await lifecycle.create(client, quiet, spec, RULES)
        assert preview.by_channel == {"sms": 5}  # quiet hours defer, they do not exclude
        await wait_stage(client, cid, "awaiting_approval")
        await lifecycle.decide(client, cid, "approve", by="ana")
        await wait_stage(client, cid, "waiting")
        status = await lifecycle.status(client, cid)
        assert status.counts == {DEFERRED: 5} and status.waiting_until
        assert sms_sink.messages == []
        await wait_stage(client, cid, "tracking")
        await lifecycle.control(client, cid, "close")
        final = await handle.result()
    assert final.counts == {"sent": 5, DEFERRED: 0}
    assert len(sms_sink.messages) == final.sent == 5


async def test_a_scheduled_campaign_sends_from_its_start(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    tiered_customers(settings.db_url, 5, locale="en")
    cid = f"c-later-{uuid.uuid4().hex[:8]}"
    start = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    _, handle = await approved(
        client, settings, write(tmp_path, cid, f"start: '{start}'\n"), cid, "scheduled"
    )
    assert read_outbox(settings.outbox_dir) == []
    await wait_stage(client, cid, "tracking")
    final = await closed(client, cid, handle)
    assert final.sent == len(read_outbox(settings.outbox_dir)) == 4
    with session_scope(settings.db_url) as session:
        sent_at = [as_utc(m.sent_at) for m in session.exec(select(Message)).all()]
    assert min(t for t in sent_at if t) >= datetime.fromisoformat(start)


async def test_an_unsubscribe_mid_campaign_is_honoured_before_the_next_page(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    import httpx

    from api.app import create_app
    from clientela.messaging.links import token_for

    tiered_customers(settings.db_url, 30, locale="en")
    cid = f"c-unsub-{uuid.uuid4().hex[:8]}"
    spec = write(tmp_path, cid, "pilot: {share: 0.3, approval: manual}\n")
    _, handle = await approved(client, settings, spec, cid, "pilot_review")
    waiting = [
        e for m, e in members_of(settings.db_url, cid) if m.group == "treated" and not m.pilot
    ]
    leaver = waiting[0]
    app = create_app(settings, client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as h:
        r = await h.post(f"/u/{token_for(settings, leaver, 'email', cid)}")  # one-click
        assert r.status_code == 200 and "unsubscribed" in r.text
    await lifecycle.decide(client, cid, "go", by="ana")
    await wait_stage(client, cid, "tracking")
    final = await closed(client, cid, handle)
    with session_scope(settings.db_url) as session:
        rows = {r.key: r for r in session.exec(select(Message).where(Message.campaign == cid))}
    left = rows[f"campaign:{cid}:{leaver}:message"]
    assert (left.state, left.reason) == ("suppressed", "email: no consent")
    assert final.counts == {"sent": final.treated - 1, "suppressed": 1}
    assert len(read_outbox(settings.outbox_dir)) == final.treated - 1


def test_a_message_being_sent_counts_against_the_cap(settings: Settings) -> None:
    from clientela.messaging.eligibility import Facts
    from clientela.timeutil import utcnow
    from models import Customer

    cid = make_customer(settings.db_url, locale="en")
    apply_directly(settings.db_url)  # tier C: one email a week
    with session_scope(settings.db_url) as session:
        customer = session.exec(select(Customer).where(Customer.external_id == cid)).one()
        assert customer.id is not None
        assert Facts(session, [customer], utcnow()).choose_channel(customer, "email")[0]
        session.add(  # another batch has claimed a message to this customer, not yet sent
            Message(
                key="other-campaign",
                customer_id=customer.id,
                channel="email",
                template="welcome",
                state="sending",
                claimed_by="elsewhere",
                claimed_at=utcnow(),
            )
        )
        session.flush()
        facts = Facts(session, [customer], utcnow())
        assert facts.choose_channel(customer, "email") == (
            None,
            "email: contact cap of tier C: 1 per week",
        )


async def test_a_retried_message_does_not_count_against_its_own_cap(
    settings: Settings, catcher: SmtpCatcher
) -> None:
    from clientela.timeutil import utcnow
    from models import Customer

    cid = make_customer(settings.db_url, locale="en")
    apply_directly(settings.db_url)  # tier C: one email a week
    with session_scope(settings.db_url) as session:  # an attempt claimed it, then died
        customer = session.exec(select(Customer).where(Customer.external_id == cid)).one()
        assert customer.id is not None
        session.add(
            Message(
                key="retried",
                customer_id=customer.id,
                channel="email",
                template="welcome",
                state="sending",
                claimed_by="dead/1/1",
                claimed_at=utcnow() - timedelta(minutes=5),
            )
        )
    sender = Sender(settings, "t/1/2")
    try:
        outcome = await sender.deliver(
            MessageRequest(key="retried", customer_id=cid, template="welcome")
        )
    finally:
        await sender.close()
    assert outcome.state == "sent"  # reconciled (the catcher never had it), then sent once
    assert len(read_outbox(settings.outbox_dir)) == 1


def test_internal_records_are_never_capped(settings: Settings) -> None:
    from clientela.messaging.eligibility import Facts
    from clientela.timeutil import utcnow
    from models import Customer, CustomerDecision

    make_customer(settings.db_url)
    apply_directly(settings.db_url)
    make_staff(settings.db_url)
    with session_scope(settings.db_url) as session:
        staff = session.exec(
            select(Customer).where(Customer.external_id == "staff:lead@example.com")
        ).one()
        some = session.exec(select(CustomerDecision)).first()
        assert staff.id is not None and some is not None
        # A decision left from before internal records were skipped, and a report sent.
        session.add(
            CustomerDecision(
                customer_id=staff.id,
                rule_version_id=some.rule_version_id,
                tier="C",
                tier_rule="old",
            )
        )
        session.add(
            Message(
                key="report-1",
                customer_id=staff.id,
                channel="email",
                template="campaign_report",
                state="sent",
                sent_at=utcnow(),
            )
        )
        session.flush()
        chosen = Facts(session, [staff], utcnow()).choose_channel(staff, "email")
    assert chosen == ("email", "lead@example.com")
