"""Date journeys: who is greeted in which hourly slot, once a year, caught up after a gap."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta

from temporalio.client import Client, ScheduleBackfill, ScheduleOverlapPolicy

from clientela import dates
from clientela.db import session_scope
from clientela.devstack.smtp_catcher import SmtpCatcher, read_outbox
from clientela.journey_router import ensure_date_schedule
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
