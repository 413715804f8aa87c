"""Order fulfilment: the order becomes a transaction on the customer, who is decided again."""

from __future__ import annotations

from dataclasses import dataclass

from temporalio import activity
from temporalio.exceptions import ApplicationError

from clientela.customers import realtime
from clientela.db import session_scope
from clientela.settings import Settings
from clientela.timeutil import utcnow
from models import Customer, Order, Transaction


@dataclass
class Fulfilled:
    order_id: int
    customer_id: str
    value: str
    currency: str
    tier: str | None
    already: bool = False  # an earlier attempt had fulfilled it


class OrderActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn(name="fulfil_order")
    def fulfil(self, order_id: int) -> Fulfilled:
        """Record the order's transaction once, and re-decide the customer's tier."""
        with session_scope(self.settings.db_url) as session:
            order = session.get(Order, order_id, with_for_update=True)
            if order is None:
                raise ApplicationError(f"no order {order_id}", non_retryable=True)
            customer = session.get(Customer, order.customer_id)
            assert customer is not None
            already = order.state == "fulfilled"
            if not already:
                transaction = Transaction(
                    customer_id=order.customer_id,
                    amount=order.value,
                    currency=order.currency,
                    product=f"order {order.id}"
                    + (f" ({order.campaign})" if order.campaign else ""),
                )
                session.add(transaction)
                session.flush()
                order.state, order.fulfilled_at = "fulfilled", utcnow()
                order.transaction_id = transaction.id
                session.add(order)
                session.flush()
                realtime.redecide(session, customer, "order fulfilled")
            return Fulfilled(
                order_id=order_id,
                customer_id=customer.external_id,
                value=f"{order.value:.2f}",
                currency=order.currency,
                tier=customer.tier,
                already=already,
            )
