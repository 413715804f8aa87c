"""Customer look-ups for workflows."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.contracts import CustomerBrief
from clientela.customers import UnknownCustomer, get_customer
from clientela.db import session_scope
from clientela.settings import Settings


class CustomerActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn(name="load_customer")
    async def load_customer(self, customer_id: str) -> CustomerBrief:
        return await asyncio.to_thread(self._load, customer_id)

    def _load(self, customer_id: str) -> CustomerBrief:
        with session_scope(self.settings.db_url) as session:
            try:
                c = get_customer(session=session, external_id=customer_id)
            except UnknownCustomer as exc:
                raise ApplicationError(
                    str(exc), type="UnknownCustomer", non_retryable=True
                ) from None
            return CustomerBrief(
                customer_id=c.external_id,
                tier=c.tier,
                locale=c.locale,
                preferred_channel=c.preferred_channel,
            )
