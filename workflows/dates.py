"""The hourly run of the date journeys (birthdays, anniversaries), started by a Schedule.

Each run stands for one UTC hour (its slot): the hour it was scheduled for, so a run caught
up after downtime or backfilled greets the customers of *its* hour, not of now.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey

SCHEDULED_AT = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")
SCHEDULE_ID = "clientela-dates"


@workflow.defn(name="DateJourneys")
class DateJourneys:
    @workflow.run
    async def run(self, slot: str = "") -> dict[str, int]:
        if not slot:
            at = workflow.info().typed_search_attributes.get(SCHEDULED_AT) or workflow.now()
            slot = at.replace(minute=0, second=0, microsecond=0).isoformat()
        workflow.set_current_details(f"**slot:** {slot}")
        result: dict[str, int] = await workflow.execute_activity(
            "date_journeys",
            slot,
            result_type=dict[str, int],
            start_to_close_timeout=timedelta(hours=1),
            heartbeat_timeout=timedelta(minutes=2),
            retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1)),
        )
        return result
