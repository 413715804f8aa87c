"""Erasing a customer: everything held on them goes, and what was running for them stops.

Running journeys and open complaint cases are cancelled first (so nothing acts on a record
that is gone), then the customer and every row that refers to them (consent, history,
messages, purchases, orders, campaign memberships, decisions, cases) are deleted in one
transaction, with the pending journey triggers. The audit trail keeps that it happened and
how many rows went, never who the customer was beyond their id.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import delete, func
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from clientela.customers.records import get_customer
from clientela.db import session_scope
from clientela.journeys.runs import journey_list
from clientela.people import audit
from clientela.service.cases import workflow_id
from clientela.settings import Settings
from models import Complaint, Interaction, JourneyOutbox, Message, Transaction


def _open_cases(db_url: str, external_id: str) -> list[str]:
    """The workflows of the customer's cases that are not closed (raises UnknownCustomer)."""
    with session_scope(db_url) as session:
        customer = get_customer(session=session, external_id=external_id)
        rows = session.exec(
            select(Complaint).where(
                Complaint.customer_id == customer.id, col(Complaint.closed_at).is_(None)
            )
        ).all()
        return [workflow_id(r.id or 0, r.uid) for r in rows]


def _delete(session: Session, external_id: str, *, actor: str, stopped: int) -> dict[str, Any]:
    customer = get_customer(session=session, external_id=external_id)
    counts = {
        name: session.exec(select(func.count()).where(column == customer.id)).one()
        for name, column in (
            ("messages", Message.customer_id),
            ("interactions", Interaction.customer_id),
            ("purchases", Transaction.customer_id),
            ("complaints", Complaint.customer_id),
        )
    }
    session.execute(delete(JourneyOutbox).where(col(JourneyOutbox.customer_id) == external_id))
    session.delete(customer)  # the rest follows by the foreign keys' ON DELETE CASCADE
    audit.record(
        session,
        actor=actor,
        action="customer.erased",
        subject=f"customer:{external_id}",
        detail={**counts, "workflows_stopped": stopped},
    )
    return {"customer_id": external_id, **counts, "workflows_stopped": stopped}


async def erase_customer(
    client: Client, settings: Settings, external_id: str, *, actor: str
) -> dict[str, Any]:
    """Stop what runs for the customer, then delete everything held on them. UnknownCustomer
    when there is no such customer; Temporal unreachable leaves the record untouched."""
    from clientela.journeys.router import BOOK

    db_url = settings.db_url
    cases = await asyncio.to_thread(_open_cases, db_url, external_id)
    # The visibility store lists what runs, a moment late: a journey started just now is
    # reached by its id instead (a journey that admits a customer once has a fixed one).
    journeys = {w["workflow_id"] for w in await journey_list(client, external_id, running=True)}
    book = await asyncio.to_thread(BOOK.journeys, settings)
    journeys |= {f"journey-{name}-{external_id}" for name in book}
    stopped = 0
    for wid in sorted(journeys):
        stopped += await _stop(client, wid, cancel=True)
    for wid in cases:
        stopped += await _stop(client, wid, cancel=False)

    def run() -> dict[str, Any]:
        with session_scope(db_url) as session:
            return _delete(session, external_id, actor=actor, stopped=stopped)

    return await asyncio.to_thread(run)


async def _stop(client: Client, workflow_id: str, *, cancel: bool) -> int:
    """Cancel (a journey) or terminate (a case's clock) a workflow if it runs: 1, else 0."""
    handle = client.get_workflow_handle(workflow_id)
    try:
        if cancel:
            await handle.cancel()
        else:
            await handle.terminate("the customer was erased")
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:  # never started, or already finished
            return 0
        raise
    return 1
