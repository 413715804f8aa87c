"""What the journey interpreter asks of the database: local times and rule conditions."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import datetime, time, timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.contracts import ConditionInput, LocalTimeInput
from clientela.customers.records import UnknownCustomer, get_customer
from clientela.db import session_scope
from clientela.journeys import dates
from clientela.journeys import router as journey_router
from clientela.journeys.spec import facts_of
from clientela.settings import Settings
from clientela.timeutil import utcnow, zone_of

#: Journeys the date run starts concurrently.
STARTS_AT_ONCE = 16


class JourneyActivities:
    def __init__(self, settings: Settings, client: Client | None = None) -> None:
        self.settings = settings
        self.client = client

    @activity.defn(name="date_journeys")
    async def date_journeys(self, slot: str) -> dict[str, int]:
        """Start the journeys of the customers whose date it is in this slot (once a year
        each: a slot run twice starts nothing new), and of those who reach a journey's days
        without a purchase (once per spell)."""
        assert self.client is not None, "date journeys need the worker's Temporal client"
        when = datetime.fromisoformat(slot)
        book = await asyncio.to_thread(journey_router.BOOK.journeys, self.settings)
        by_trigger: dict[tuple[str, int], list[Any]] = {}
        for journey in book.values():
            trigger = journey.spec.trigger
            if trigger.date:
                by_trigger.setdefault((trigger.date, 0), []).append(journey)
            elif trigger.no_purchase_for:
                days = trigger.no_purchase_for.days
                by_trigger.setdefault(("no_purchase_for", days), []).append(journey)
        counts: Counter[str] = Counter()
        client = self.client
        for (occasion, days), journeys in by_trigger.items():
            found = await asyncio.to_thread(self._due, when, occasion, days)
            # Started STARTS_AT_ONCE at a time: each start is a round trip to the server.
            for i in range(0, len(found), STARTS_AT_ONCE):
                entries = await asyncio.gather(
                    *(
                        journey_router.enter_date(client, self.settings, journey, occ)
                        for occ in found[i : i + STARTS_AT_ONCE]
                        for journey in journeys
                    )
                )
                for entry in entries:
                    counts[f"{entry.journey} {'started' if entry.started else 'not started'}"] += 1
                activity.heartbeat(i)
        return dict(counts)

    def _due(self, when: datetime, occasion: str, days: int) -> list[Any]:
        hour = self.settings.date_hour
        with session_scope(self.settings.db_url) as session:
            if occasion == "no_purchase_for":
                return dates.lapsed(session, when, hour, days)
            return dates.due(session, when, hour, occasion)

    @activity.defn(name="journey_local_time")
    def local_time(self, params: LocalTimeInput) -> str:
        """The next moment (UTC, ISO 8601) it is ``at`` where the customer lives."""
        with session_scope(self.settings.db_url) as session:
            try:
                customer = get_customer(session=session, external_id=params.customer_id)
            except UnknownCustomer as exc:
                raise ApplicationError(str(exc), non_retryable=True) from None
            zone = zone_of(customer.timezone)
        now = utcnow().astimezone(zone)
        wanted = time.fromisoformat(params.at)
        moment = datetime.combine(now.date(), wanted, tzinfo=zone)
        if moment <= now:
            moment = datetime.combine(now.date() + timedelta(days=1), wanted, tzinfo=zone)
        return moment.astimezone(utcnow().tzinfo).isoformat()

    @activity.defn(name="journey_condition")
    def condition(self, params: ConditionInput) -> bool:
        """Whether a rule condition holds for the customer now (unknown counts as no)."""
        with session_scope(self.settings.db_url) as session:
            return facts_of(session, params.customer_id).holds(
                params.condition, params.event, params.properties
            )
