"""Date journeys: who is greeted in which hourly slot, once a year, caught up after a gap."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta

from temporalio.client import Client, ScheduleBackfill, ScheduleOverlapPolicy

from clientela.db import session_scope
from clientela.devstack.smtp_catcher import SmtpCatcher, read_outbox
from clientela.journeys import dates
from clientela.journeys.router import ensure_date_schedule
from clientela.settings import Settings
from tests.factories import make_customer
from workflows.dates import SCHEDULE_ID, DateJourneys

# 2027-03-10 08:00 UTC is 09:00 in Madrid (CET) and 03:00 in New York (EST).
SLOT = datetime(2027, 3, 10, 8, tzinfo=UTC)


def due_ids(settings: Settings, slot: datetime, occasion: str = "birthday") -> set[str]:
    with session_scope(settings.db_url) as session:
        return {o.customer_id for o in dates.due(session, slot, 9, occasion)}


def test_greeted_at_nine_in_their_own_zone(settings: Settings) -> None:
    madrid = make_customer(settings.db_url, timezone="Europe/Madrid", birthday="1990-03-10")
    york = make_customer(settings.db_url, timezone="America/New_York", birthday="1985-03-10")
    other = make_customer(settings.db_url, timezone="Europe/Madrid", birthday="1990-03-11")
    assert due_ids(settings, SLOT) == {madrid}
    # Six hours later it is nine in New York (EDT from 14 March; still EST on the 10th: 14:00).
    assert due_ids(settings, SLOT + timedelta(hours=6)) == {york}
    assert due_ids(settings, SLOT + timedelta(days=1)) == {other}  # the next day, its turn


def test_leap_day_birthdays_on_28_february_in_other_years(settings: Settings) -> None:
    leap = make_customer(settings.db_url, timezone="UTC", birthday="2000-02-29")
    plain = make_customer(settings.db_url, timezone="UTC", birthday="1999-02-28")
    at_nine = datetime(2027, 2, 28, 9, tzinfo=UTC)
    assert due_ids(settings, at_nine) == {leap, plain}
    assert due_ids(settings, datetime(2028, 2, 28, 9, tzinfo=UTC)) == {plain}
    assert due_ids(settings, datetime(2028, 2, 29, 9, tzinfo=UTC)) == {leap}


def test_signup_anniversaries_from_the_first_year_on(settings: Settings) -> None:
    old = make_customer(settings.db_url, timezone="UTC", signup_date="2024-05-02")
    new = make_customer(settings.db_url, timezone="UTC", signup_date="2027-05-02")
    slot = datetime(2027, 5, 2, 9, tzinfo=UTC)
    assert due_ids(settings, slot, "signup_anniversary") == {old}
    assert new not in due_ids(settings, slot, "signup_anniversary")


async def test_a_slot_run_twice_greets_once(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher
) -> None:
    cid = make_customer(
        settings.db_url, timezone="Europe/Madrid", birthday="1990-03-10", locale="en"
    )
    for _ in range(2):  # the schedule fires twice, or someone runs the slot by hand
        await client.execute_workflow(
            DateJourneys.run,
            SLOT.isoformat(),
            id=f"dates-{uuid.uuid4().hex[:8]}",
            task_queue=settings.task_queue,
        )
    handle = client.get_workflow_handle(f"journey-birthday-{cid}-2027")
    await asyncio.wait_for(handle.result(), timeout=30)
    subjects = [m["subject"] for m in read_outbox(settings.outbox_dir)]
    assert subjects == [f"Happy birthday, Ana{cid[1:].lstrip('0')}!"]


async def test_missed_hours_are_caught_up_by_the_schedule(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher
) -> None:
    # Customers greeted at 09:00 local in three zones: three different UTC hours today.
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    customers = []
    for hours_ago in (1, 2, 3):
        slot = now - timedelta(hours=hours_ago)
        offset = 9 - slot.hour  # the zone where this slot is 09:00
        offset = (offset + 12) % 24 - 12
        zone = f"Etc/GMT{-offset:+d}" if offset else "UTC"
        local_day = slot.astimezone(dates.zone_of(zone)).date()
        birthday = date(1990, local_day.month, min(local_day.day, 28))
        if local_day.day > 28:
            continue  # keep the test clear of month ends
        customers.append(
            make_customer(settings.db_url, timezone=zone, birthday=birthday.isoformat())
        )
    schedule = f"{SCHEDULE_ID}-{uuid.uuid4().hex[:6]}"
    quick = settings.model_copy(update={"date_catchup": timedelta(hours=6)})
    await ensure_date_schedule(client, quick, schedule_id=schedule, paused=True)
    handle = client.get_schedule_handle(schedule)
    try:
        # The workers were down for the last three hours: those slots are run now, twice.
        for _ in range(2):
            await handle.backfill(
                ScheduleBackfill(
                    start_at=now - timedelta(hours=3, minutes=1),
                    end_at=now - timedelta(minutes=59),
                    overlap=ScheduleOverlapPolicy.ALLOW_ALL,
                )
            )
        year = now.year
        for cid in customers:
            greeting = client.get_workflow_handle(f"journey-birthday-{cid}-{year}")
            for _ in range(100):
                try:
                    await asyncio.wait_for(greeting.result(), timeout=30)
                    break
                except Exception:  # not started yet: the backfilled run is still queued
                    await asyncio.sleep(0.2)
        recipients = [m["to"][0] for m in read_outbox(settings.outbox_dir)]
        assert len(recipients) == len(set(recipients)) == len(customers)
    finally:
        await handle.delete()


def test_dates_from_an_imported_attribute(settings: Settings) -> None:
    """``date: attr.<name>``: an attribute holding YYYY-MM-DD or MM-DD, in the customer's zone."""
    full = make_customer(settings.db_url, attributes={"renewal": "2024-03-10"})
    short = make_customer(settings.db_url, attributes={"renewal": "03-10"})
    make_customer(settings.db_url, attributes={"renewal": "2024-03-11"})
    make_customer(settings.db_url, attributes={"contract": "2024-03-10"})
    make_customer(settings.db_url)
    assert due_ids(settings, SLOT, "attr.renewal") == {full, short}


def _bought(settings: Settings, customer_id: str, *days: date) -> None:
    from decimal import Decimal

    from clientela.customers.records import get_customer
    from models import Transaction

    with session_scope(settings.db_url) as session:
        customer = get_customer(session=session, external_id=customer_id)
        assert customer.id is not None
        for day in days:  # at noon Madrid time
            session.add(
                Transaction(
                    customer_id=customer.id,
                    amount=Decimal("20.00"),
                    occurred_at=datetime(day.year, day.month, day.day, 11, tzinfo=UTC),
                )
            )


def test_lapsed_customers_are_found_on_the_day_they_reach_n_days(settings: Settings) -> None:
    today = date(2027, 3, 10)  # SLOT is 09:00 of this day in Madrid
    lapsed_day = today - timedelta(days=90)
    lapsed = make_customer(settings.db_url, timezone="Europe/Madrid")
    _bought(settings, lapsed, lapsed_day - timedelta(days=40), lapsed_day)
    recent = make_customer(settings.db_url, timezone="Europe/Madrid")
    _bought(settings, recent, lapsed_day, lapsed_day + timedelta(days=30))  # bought since
    early = make_customer(settings.db_url, timezone="Europe/Madrid")
    _bought(settings, early, lapsed_day + timedelta(days=1))  # 89 days: tomorrow's turn
    never = make_customer(
        settings.db_url, timezone="Europe/Madrid", signup_date=lapsed_day.isoformat()
    )
    elsewhere = make_customer(settings.db_url, timezone="America/New_York")
    _bought(settings, elsewhere, lapsed_day)  # their 09:00 comes later
    with session_scope(settings.db_url) as session:
        found = dates.lapsed(session, SLOT, 9, 90)
        tomorrow = dates.lapsed(session, SLOT + timedelta(days=1), 9, 90)
        later = dates.lapsed(session, SLOT + timedelta(hours=6), 9, 90)
    assert {(f.customer_id, f.key) for f in found} == {
        (lapsed, lapsed_day.isoformat()),
        (never, lapsed_day.isoformat()),
    }
    assert {f.customer_id for f in tomorrow} == {early}
    assert {f.customer_id for f in later} == {elsewhere}


async def test_win_back_ends_on_a_purchase_and_nudges_those_who_stay_away(
    client: Client, settings: Settings, catcher: SmtpCatcher
) -> None:
    """The shipped win-back journey through the hourly run: one customer buys after the first
    message (the journey ends, won back), the other hears nothing more until the last nudge.
    Its two weeks last three seconds here."""
    from tests.serving import api
    from tests.test_rules_apply import apply_directly

    two_weeks = 14 * 24 * 3600
    quick = settings.model_copy(update={"journey_time_scale": 3 / two_weeks})
    lapsed_day = date(2027, 3, 10) - timedelta(days=90)
    buyer = make_customer(settings.db_url, timezone="Europe/Madrid", locale="en")
    away = make_customer(settings.db_url, timezone="Europe/Madrid", locale="es")
    for cid in (buyer, away):
        _bought(settings, cid, lapsed_day)
    apply_directly(settings.db_url)
    async with api(client, quick, worker=True) as http:
        runs = [  # run twice: each spell enters once
            await client.execute_workflow(
                DateJourneys.run,
                SLOT.isoformat(),
                id=f"dates-{uuid.uuid4().hex[:8]}",
                task_queue=quick.task_queue,
            )
            for _ in range(2)
        ]
        assert runs[0].get("win_back started") == 2, runs
        assert runs[1].get("win_back not started") == 2, runs
        key = lapsed_day.isoformat()
        handles = {
            cid: client.get_workflow_handle(f"journey-win_back-{cid}-{key}")
            for cid in (buyer, away)
        }
        for _ in range(100):  # the first message is out
            if len(read_outbox(quick.outbox_dir)) == 2:
                break
            await asyncio.sleep(0.1)
        r = await http.post(
            "/events", json={"type": "purchase", "customer_id": buyer, "amount": "35.00"}
        )
        assert r.status_code == 202 and r.json()["journeys_told"] == [
            f"journey-win_back-{buyer}-{key}"
        ]
        won = await asyncio.wait_for(handles[buyer].result(), timeout=30)
        nudged = await asyncio.wait_for(handles[away].result(), timeout=30)
    assert won["exit_reason"] == "won back" and nudged["exit_reason"] == "nudged"
    by_customer: dict[str, list[str]] = {}
    for mail in read_outbox(quick.outbox_dir):
        by_customer.setdefault(mail["to"][0], []).append(mail["subject"])
    assert by_customer == {
        f"ana{int(buyer[1:])}@example.com": [f"Ana{int(buyer[1:])}, we miss you"],
        f"ana{int(away[1:])}@example.com": [f"Ana{int(away[1:])}, te extrañamos"],
    }
    # The nudge came within the same week here (two weeks last three seconds), so the
    # tier's weekly email cap held it back, and the journey recorded why.
    last = nudged["messages"][-1]
    assert last["key"].endswith(":last_chance") and last["state"] == "suppressed"
    assert "contact cap of tier" in last["reason"] and "per week" in last["reason"]
