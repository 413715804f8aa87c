"""Inspecting, cancelling and signalling journeys (shared by the API and the CLI).

Starting them is ``clientela.journeys.router``'s job.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict
from typing import Any

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from clientela.settings import Settings
from workflows import search
from workflows.journey import JourneyStatus, JourneyWorkflow
from workflows.welcome import ResponseSignal, WelcomeJourney
from workflows.welcome import workflow_id as welcome_id


class JourneyNotFound(LookupError):
    pass


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


def _query(customer_id: str | None, journey: str | None, running: bool = False) -> str:
    parts = ["WorkflowType = 'Journey'"]
    if customer_id:
        parts.append(f"CustomerId = '{_quote(customer_id)}'")
    if journey:
        parts.append(f"Journey = '{_quote(journey)}'")
    if running:
        parts.append("ExecutionStatus = 'Running'")
    return " AND ".join(parts)


def _quote(value: str) -> str:
    return value.replace("\\", "").replace("'", "")


async def journey_list(
    client: Client,
    customer_id: str | None = None,
    journey: str | None = None,
    limit: int = 200,
    running: bool = False,
) -> list[dict[str, Any]]:
    """Journeys (newest first) of a customer, of a journey, or all (or only those running),
    from the visibility store."""
    found = []
    async for w in client.list_workflows(_query(customer_id, journey, running), limit=limit):
        attrs = w.typed_search_attributes
        found.append(
            {
                "workflow_id": w.id,
                "journey": attrs.get(search.JOURNEY),
                "customer_id": attrs.get(search.CUSTOMER_ID),
                "step": (attrs.get(search.STAGE) or "").partition(":")[2],
                "execution": w.status.name if w.status else "UNKNOWN",
                "started": w.start_time.isoformat() if w.start_time else None,
            }
        )
    return sorted(found, key=lambda r: r["started"] or "", reverse=True)


async def journey_status(client: Client, journey: str, customer_id: str) -> dict[str, Any]:
    """The customer's latest run of the journey: steps taken, messages, events."""
    runs = await journey_list(client, customer_id, journey, limit=50)
    if not runs:
        raise JourneyNotFound(f"no {journey} journey for customer {customer_id!r}")
    wid = runs[0]["workflow_id"]
    handle = client.get_workflow_handle_for(JourneyWorkflow.run, wid)
    desc = await handle.describe()
    execution = desc.status.name if desc.status else "UNKNOWN"
    if desc.status == WorkflowExecutionStatus.COMPLETED:
        status: JourneyStatus = await handle.result()
    elif desc.status == WorkflowExecutionStatus.RUNNING:
        status = await handle.query(JourneyWorkflow.status)
    else:
        status = JourneyStatus(name=journey, version="", customer_id=customer_id)
    return {"workflow_id": wid, "execution": execution, "runs": len(runs), **asdict(status)}


async def journey_cancel(client: Client, journey: str | None, customer_id: str) -> list[str]:
    """Cancel the customer's running journeys of that name (or all of them); the ids."""
    cancelled = []
    async for w in client.list_workflows(_query(customer_id, journey, running=True)):
        await client.get_workflow_handle(w.id).cancel()
        cancelled.append(w.id)
    return cancelled


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


async def start_case(client: Client, settings: Settings, complaint_id: int, uid: str) -> str:
    """Start the complaint's case workflow (``complaint-<id>-<uid>``); again, it is a no-op."""
    from clientela.service.cases import workflow_id
    from workflows.complaint import ComplaintCase

    wid = workflow_id(complaint_id, uid)
    with contextlib.suppress(WorkflowAlreadyStartedError):
        await client.start_workflow(
            ComplaintCase.run,
            complaint_id,
            id=wid,
            task_queue=settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=f"Complaint {complaint_id}",
        )
    return wid


async def tell_case(client: Client, complaint_id: int, uid: str) -> bool:
    """Wake the case workflow after a change written to the case; False if it is not running
    (closed, or not started yet: it reads the case when it starts)."""
    from clientela.service.cases import workflow_id

    try:
        await client.get_workflow_handle(workflow_id(complaint_id, uid)).signal("changed")
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True
