"""Order fulfilment, started by a conversion: fulfil the order, then confirm it to the customer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.contracts import (
        MessageOutcome,
        MessageRequest,
        SendMessagesInput,
        SendMessagesResult,
    )
    from activities.orders import Fulfilled
    from workflows import search


def workflow_id(order_id: int, uid: str) -> str:
    return f"order-{order_id}-{uid}"


@dataclass
class OrderResult:
    fulfilled: Fulfilled
    confirmation: MessageOutcome


RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=5))


@workflow.defn(name="OrderFulfilment")
class OrderFulfilment:
    @workflow.run
    async def run(self, order_id: int) -> OrderResult:
        workflow.upsert_search_attributes([search.STAGE.value_set("order:fulfilling")])
        fulfilled: Fulfilled = await workflow.execute_activity(
            "fulfil_order",
            order_id,
            result_type=Fulfilled,
            start_to_close_timeout=timedelta(minutes=5),
            retry_policy=RETRY,
        )
        workflow.upsert_search_attributes(
            [
                search.CUSTOMER_ID.value_set(fulfilled.customer_id),
                search.STAGE.value_set("order:confirming"),
            ]
        )
        sent: SendMessagesResult = await workflow.execute_activity(
            "send_messages",
            SendMessagesInput(
                messages=[
                    MessageRequest(
                        key=f"order:{order_id}:confirmation",
                        customer_id=fulfilled.customer_id,
                        template="order_confirmation",
                        service=True,
                        context={
                            "order": {
                                "id": order_id,
                                "value": fulfilled.value,
                                "currency": fulfilled.currency,
                            }
                        },
                    )
                ]
            ),
            result_type=SendMessagesResult,
            start_to_close_timeout=timedelta(minutes=5),
            heartbeat_timeout=timedelta(seconds=30),
            retry_policy=RETRY,
        )
        workflow.upsert_search_attributes([search.STAGE.value_set("order:done")])
        return OrderResult(fulfilled, sent.outcomes[0])
