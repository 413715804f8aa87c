"""Starting, signalling and inspecting journeys (shared by the API and the CLI)."""

from __future__ import annotations

import contextlib
from dataclasses import asdict
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from clientela.settings import Settings
from workflows import search
from workflows.welcome import ResponseSignal, WelcomeInput, WelcomeJourney, WelcomeStatus
from workflows.welcome import workflow_id as welcome_id

JOURNEYS = {"welcome": welcome_id}


class UnknownJourney(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"no journey named {name!r}; journeys: {', '.join(sorted(JOURNEYS))}")


class JourneyNotFound(LookupError):
    pass


def journey_workflow_id(journey: str, customer_id: str) -> str:
    if journey not in JOURNEYS:
        raise UnknownJourney(journey)
    return JOURNEYS[journey](customer_id)


async def start_welcome(
    client: Client, settings: Settings, customer_id: str, tier: str | None = None
) -> tuple[str, bool]:
    """Start the customer's welcome journey; (workflow id, False) if it ever ran before."""
    wid = welcome_id(customer_id)
    try:
        await client.start_workflow(
            WelcomeJourney.run,
            WelcomeInput(
                customer_id=customer_id,
                tier=tier,
                follow_up_after_seconds=settings.welcome_follow_up.total_seconds(),
                send_heartbeat_timeout_seconds=settings.heartbeat_timeout.total_seconds(),
            ),
            id=wid,
            task_queue=settings.task_queue,
            # One welcome per customer, ever: a finished journey is not started again.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=f"Welcome journey of customer {customer_id}",
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(search.CUSTOMER_ID, customer_id),
                    SearchAttributePair(search.JOURNEY, "welcome"),
                ]
            ),
        )
    except WorkflowAlreadyStartedError:
        return wid, False
    return wid, True


async def signal_response(client: Client, customer_id: str, kind: str, channel: str) -> bool:
    """Tell the customer's running welcome journey that they responded; False if none runs."""
    handle = client.get_workflow_handle(welcome_id(customer_id))
    try:
        await handle.signal(WelcomeJourney.respond, ResponseSignal(kind=kind, channel=channel))
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def journey_status(client: Client, journey: str, customer_id: str) -> dict[str, Any]:
    wid = journey_workflow_id(journey, customer_id)
    handle = client.get_workflow_handle_for(WelcomeJourney.run, wid)
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise JourneyNotFound(f"no {journey} journey for customer {customer_id!r}") from None
        raise
    execution = desc.status.name if desc.status else "UNKNOWN"
    if desc.status == WorkflowExecutionStatus.COMPLETED:
        status: WelcomeStatus = await handle.result()
    else:
        status = await handle.query(WelcomeJourney.status)
    return {"workflow_id": wid, "execution": execution, **asdict(status)}


async def start_fulfilment(client: Client, settings: Settings, order_id: int, uid: str) -> str:
    """Start the order's fulfilment workflow (``order-<id>-<uid>``); again, it is a no-op."""
    from workflows.order import OrderFulfilment, workflow_id

    with contextlib.suppress(WorkflowAlreadyStartedError):
        await client.start_workflow(
            OrderFulfilment.run,
            order_id,
            id=workflow_id(order_id, uid),
            task_queue=settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=f"Fulfil order {order_id}",
        )
    return workflow_id(order_id, uid)
