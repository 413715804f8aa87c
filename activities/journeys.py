"""What the journey interpreter asks of the database: local times and rule conditions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError

from clientela.customers import UnknownCustomer, get_customer
from clientela.db import session_scope
from clientela.journey_spec import facts_of
from clientela.settings import Settings
from clientela.timeutil import utcnow, zone_of


@dataclass
class LocalTimeInput:
    customer_id: str
    at: str  # HH:MM in the customer's time zone


@dataclass
class ConditionInput:
    customer_id: str
    condition: str


class JourneyActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

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
            return facts_of(session, params.customer_id).holds(params.condition)
