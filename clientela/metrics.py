"""Prometheus metrics, every series named ``clientela_*`` (prometheus-client).

Each process counts what it does itself: a worker the messages it sends, their latency
and the providers' errors; the API the events it accepts and the journeys it starts. Both
expose their own: the API at ``/metrics``, a worker on ``CLIENTELA_WORKER_METRICS_PORT``.
What is in the database (ledger rows by state) and in Temporal (journeys running) is read
when the API is scraped, so that it is counted once however many workers there are.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger(__name__)

MESSAGES = Counter(
    "clientela_messages",
    "Messages whose send attempt ended, by channel and outcome (sent, failed, ...)",
    ["channel", "outcome"],
)
SEND_SECONDS = Histogram(
    "clientela_send_seconds",
    "Time the provider took to take a message (SMTP transaction, Twilio API call)",
    ["channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PROVIDER_ERRORS = Counter(
    "clientela_provider_errors",
    "Errors from the mail relay or Twilio, by class: permanent (the message fails), "
    "transient (it is tried again), in_doubt (reconciled before any resend)",
    ["channel", "error_class"],
)
LEDGER_LOCK_WAITS = Counter(
    "clientela_ledger_lock_waits",
    "Times a worker's ledger write found the SQLite database locked by another process and "
    "waited (many a second: the processes are taking turns for SQLite's one writer; "
    "PostgreSQL has no such limit)",
)
EVENTS = Counter("clientela_events_accepted", "Events accepted by POST /events", ["type"])
JOURNEYS_STARTED = Counter(
    "clientela_journeys_started", "Journeys started, by journey", ["journey"]
)
LEDGER = Gauge(
    "clientela_ledger_messages",
    "Rows of the message ledger, by state (read when scraped)",
    ["state"],
)
JOURNEYS_RUNNING = Gauge(
    "clientela_journeys_running", "Journeys running now, in Temporal (read when scraped)"
)


def read_ledger(db_url: str) -> None:
    """Ledger rows by state, from the database."""
    from sqlmodel import func, select

    from clientela.db import session_scope
    from models import Message

    with session_scope(db_url) as session:
        rows = session.exec(select(Message.state, func.count()).group_by(Message.state)).all()
    LEDGER.clear()
    for state, n in rows:
        LEDGER.labels(state=state).set(n)


async def read_journeys(client: Any) -> None:
    """Running journeys, from Temporal's visibility (a count, not a listing)."""
    found = await client.count_workflows("WorkflowType = 'Journey' AND ExecutionStatus = 'Running'")
    JOURNEYS_RUNNING.set(found.count)
