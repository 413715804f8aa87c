"""Erasing a customer: their personal data goes; the counts they were part of stay.

Running journeys and open complaint cases are stopped first (so nothing acts on a record
that is being erased). Then, in one transaction:

- the customer record becomes an anonymous shell (``erased-<random>``, no name, address,
  birthday or attributes; internal, so in no audience and never decided again), kept so that
  what referred to it still counts: campaign reports keep their totals (members, messages
  sent, responses, revenue) and the service report its cases;
- the ledger keeps each message's state, channel, template and times, with the customer id
  in its key replaced by the shell's and the address blanked; a message not sent yet is not
  sent (``suppressed``: customer erased);
- the history keeps each contact's kind, outcome, campaign, journey and time, and of its
  detail only a conversion's value; purchases keep amount and time; complaint cases keep code,
  times and score, without their words;
- consent, its log and topic choices, tier decisions and their history, pending journey
  triggers and the suppressions of the customer's addresses are deleted;
- each address becomes a tombstone (a salted hash, ``clientela.customers.tombstones``), so
  that a later import of it stays without consent until the person consents afresh.

The audit trail records the erasure under the customer's id with counts only (the proof of
it); earlier audit records about the customer name the shell instead. Temporal keeps the
histories of the customer's finished workflows until its namespace's retention ends.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

from sqlalchemy import delete, func
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from clientela.customers import tombstones
from clientela.customers.records import get_customer
from clientela.db import session_scope
from clientela.journeys.runs import journey_list
from clientela.people import audit
from clientela.service.cases import workflow_id
from clientela.settings import Settings
from clientela.timeutil import utcnow
from models import (
    AuditEvent,
    CampaignMember,
    Complaint,
    Consent,
    ConsentRecord,
    CustomerDecision,
    Interaction,
    JourneyOutbox,
    Message,
    MessageState,
    Order,
    RankingValue,
    Suppression,
    TierChange,
    TopicPreference,
    Transaction,
)
from models.ledger import PENDING


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


def _anonymise(session: Session, external_id: str, *, actor: str, stopped: int) -> dict[str, Any]:
    customer = get_customer(session=session, external_id=external_id)
    pk = customer.id
    assert pk is not None
    shell = f"erased-{uuid.uuid4().hex[:16]}"
    names = [n for n in (customer.first_name, customer.last_name) if len(n) >= 3]
    idents = [i for i in (external_id, customer.email, customer.phone, *names) if i]

    def scrub(text: str) -> str:
        for ident in idents:
            text = re.sub(re.escape(ident), "[erased]", text, flags=re.IGNORECASE)
        return text

    def rekey(key: str | None) -> str | None:
        return None if key is None else key.replace(external_id, shell)

    counts = {
        name: session.exec(select(func.count()).where(column == pk)).one()
        for name, column in (
            ("messages", Message.customer_id),
            ("interactions", Interaction.customer_id),
            ("purchases", Transaction.customer_id),
            ("complaints", Complaint.customer_id),
        )
    }
    now = utcnow()
    for message in session.exec(select(Message).where(Message.customer_id == pk)).all():
        message.key = rekey(message.key) or message.key
        message.address, message.claimed_by = "", ""
        message.reason = scrub(message.reason)
        if message.state in PENDING:
            message.state, message.reason = MessageState.suppressed, "customer erased"
        message.updated_at = now
        session.add(message)
    for contact in session.exec(select(Interaction).where(Interaction.customer_id == pk)).all():
        value = (contact.detail or {}).get("value")
        contact.detail = {} if value is None else {"value": value}
        contact.message_key = rekey(contact.message_key)
        session.add(contact)
    for purchase in session.exec(select(Transaction).where(Transaction.customer_id == pk)).all():
        purchase.product = ""
        session.add(purchase)
    for case in session.exec(select(Complaint).where(Complaint.customer_id == pk)).all():
        case.description = case.response = case.resolution = case.satisfaction_comment = ""
        session.add(case)
    for order in session.exec(select(Order).where(Order.customer_id == pk)).all():
        order.key = rekey(order.key) or order.key
        session.add(order)
    members = session.exec(select(CampaignMember).where(CampaignMember.customer_id == pk)).all()
    for member in members:
        member.address = ""
        session.add(member)
    addresses = [(ch, a) for ch, a in (("email", customer.email), ("sms", customer.phone)) if a]
    for channel, address in addresses:
        tombstones.bury(session, channel, address, "customer erased")
        session.execute(
            delete(Suppression).where(
                col(Suppression.channel) == channel, col(Suppression.address) == address
            )
        )
    for table in (Consent, ConsentRecord, TopicPreference, TierChange, RankingValue):
        session.execute(delete(table).where(col(table.customer_id) == pk))
    session.execute(delete(CustomerDecision).where(col(CustomerDecision.customer_id) == pk))
    session.execute(delete(JourneyOutbox).where(col(JourneyOutbox.customer_id) == external_id))
    for event in session.exec(
        select(AuditEvent).where(AuditEvent.subject == f"customer:{external_id}")
    ).all():
        event.subject = f"customer:{shell}"
        session.add(event)
    customer.external_id = shell
    customer.first_name = customer.last_name = ""
    customer.email = customer.phone = customer.birthday = None
    customer.attributes, customer.segments, customer.tier = {}, [], None
    customer.locale, customer.timezone, customer.internal = "", "UTC", True
    customer.updated_at = now
    session.add(customer)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="customer.erased",
        subject=f"customer:{external_id}",
        detail={**counts, "workflows_stopped": stopped, "kept_as": shell},
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
            return _anonymise(session, external_id, actor=actor, stopped=stopped)

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
