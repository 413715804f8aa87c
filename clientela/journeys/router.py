"""Which journeys a happening lets a customer into, and starting them once.

A happening is an event (sign-up, purchase, complaint, a response), a tier change or a
segment entry (dates come from the daily schedule). Every definition in ``journeys/`` whose
trigger matches and whose ``when`` holds for the customer starts, under a workflow id that
carries its re-entry policy, so a second trigger within the policy starts nothing:

- ``once``: ``journey-<name>-<customer>``, ever;
- ``once_per`` a period: ``journey-<name>-<customer>-p<n>``, n counting periods since 1970;
- ``every_time``: ``journey-<name>-<customer>-<key>``, the key naming the happening.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from clientela import ROOT, metrics
from clientela.customers.realtime import Outcome
from clientela.db import session_scope
from clientela.journeys.dates import Lapse, Occasion
from clientela.journeys.runs import signal_response
from clientela.journeys.spec import Journey, facts_of, load_valid
from clientela.messaging.templating import Templates
from clientela.settings import Settings
from clientela.timeutil import utcnow
from clientela.yamlfile import Problem
from models import JourneyOutbox
from rules.model import Rules, load
from rules.service import latest_run, rules_of
from workflows import search
from workflows.journey import JourneyEvent, JourneyInput, JourneyWorkflow, first_stage

log = logging.getLogger(__name__)

SHIPPED_RULES = ROOT / "rules" / "crm.yaml"


@dataclass
class Happening:
    """What may let a customer into journeys."""

    kind: str  # event, tier_change, segment_entry; signal: tell running journeys ``event``
    event: str = ""  # with kind event: signup, purchase, complaint, open, click, ...
    key: str = ""  # names this happening (every_time journeys start once per key)
    from_tier: str | None = None
    to_tier: str | None = None
    segment: str = ""
    data: dict[str, Any] = field(default_factory=dict)  # for templates: {{ trigger.<name> }}


@dataclass
class Entry:
    journey: str
    workflow_id: str
    started: bool
    reason: str = ""  # why not (already in it, condition not met)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "journey": self.journey,
            "workflow_id": self.workflow_id,
            "started": self.started,
        }
        if self.reason:
            out["reason"] = self.reason
        return out


class Book:
    """The journey definitions, read again when a file in the folder changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: tuple[Any, ...] | None = None
        self._journeys: dict[str, Journey] = {}
        #: Why the files left out were left out (file:line:column: message).
        self.problems: list[Problem] = []
        #: The thread putting the latest versions in the audit trail (tests wait on it).
        self.recording: threading.Thread | None = None

    def journeys(self, settings: Settings) -> dict[str, Journey]:
        """The valid definitions. A file with an error is left out and logged with its
        file and line (``clientela journey check`` prints the same): one bad file never
        stops the others, nor the intake of events."""
        folder = settings.journeys_dir
        stamp = tuple(
            (p.name, _mtime(p)) for p in sorted(Path(folder).glob("*.yaml")) if p.is_file()
        )
        with self._lock:
            key = (str(folder), stamp)
            if key != self._seen:
                templates = Templates(settings.templates_dir, settings.default_locale)
                self._journeys, self.problems = load_valid(
                    folder, rules_for_journeys(settings), templates
                )
                for problem in self.problems:
                    log.error("journey definition left out: %s", problem)
                self._seen = key
                # In a thread of its own: the definitions are often read inside a caller's
                # transaction (an event and the journeys it starts are one), which on SQLite
                # holds the write lock this record needs until it commits.
                self.recording = threading.Thread(
                    target=_record_versions,
                    args=(settings.db_url, dict(self._journeys)),
                    name="journey-versions",
                    daemon=True,
                )
                self.recording.start()
            return self._journeys


def _record_versions(db_url: str, journeys: dict[str, Journey]) -> None:
    try:
        record_versions(db_url, journeys)
    except SQLAlchemyError as exc:  # the trail must never stop the journeys
        log.warning("could not record journey versions in the audit trail: %s", exc)


def record_versions(db_url: str, journeys: dict[str, Journey]) -> None:
    """Put a journey file's new version in the audit trail (``journey.changed``), once: the
    file is the author's, so the actor is the file (its editor is not known here)."""
    from clientela.people import audit
    from models.people import AuditEvent

    with session_scope(db_url) as session:
        for name, journey in journeys.items():
            last = session.exec(
                select(AuditEvent)
                .where(
                    AuditEvent.action == "journey.changed", AuditEvent.subject == f"journey:{name}"
                )
                .order_by(col(AuditEvent.id).desc())
            ).first()
            before = (last.detail or {}).get("version") if last is not None else None
            if before != journey.version:
                audit.record(
                    session,
                    actor=f"file:{Path(journey.path).name}",
                    action="journey.changed",
                    subject=f"journey:{name}",
                    detail={"version": journey.version, "before": before, "file": journey.path},
                )


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


BOOK = Book()


def rules_for_journeys(settings: Settings) -> Rules:
    """The rules journeys are checked against: the latest applied version, else the shipped."""
    with session_scope(settings.db_url) as session:
        latest = latest_run(session)
        if latest is not None:
            return rules_of(latest[1])
    return load(SHIPPED_RULES)


def matches(journey: Journey, happening: Happening) -> bool:
    trigger = journey.spec.trigger
    if happening.kind == "event":
        return trigger.event == happening.event
    if happening.kind == "tier_change" and trigger.tier_change is not None:
        change = trigger.tier_change
        if change.to and happening.to_tier not in change.to:
            return False
        if change.from_ and happening.from_tier not in change.from_:
            return False
        if change.direction != "any":
            # Up or down is a move between two tiers: a customer's first tier is neither.
            if not (happening.from_tier and happening.to_tier):
                return False
            return happening.data.get("direction") == change.direction
        return True
    if happening.kind == "segment_entry":
        return trigger.segment_entry == happening.segment
    return False


def workflow_id(journey: Journey, customer_id: str, happening_key: str) -> str:
    base = f"journey-{journey.name}-{customer_id}"
    reentry = journey.spec.reentry
    if reentry.policy == "once":
        return base
    if reentry.policy == "once_per":
        assert reentry.period is not None
        return f"{base}-p{int(utcnow().timestamp() // reentry.period.total_seconds())}"
    return f"{base}-{happening_key}"


def _admitted(
    settings: Settings,
    journeys: list[Journey],
    customer_id: str,
    properties: dict[str, Any] | None = None,
) -> list[bool]:
    """Whether each journey's ``when`` holds (``properties``: the triggering event's)."""
    if all(j.spec.when is None for j in journeys):
        return [True] * len(journeys)  # nothing to read
    with session_scope(settings.db_url) as session:
        facts = facts_of(session, customer_id)
        return [
            j.spec.when is None or facts.holds(j.spec.when, j.spec.trigger.properties, properties)
            for j in journeys
        ]


async def enter(
    client: Client, settings: Settings, customer_id: str, happening: Happening
) -> list[Entry]:
    """Start every journey the happening lets the customer into (each once, by its policy)."""
    book = await asyncio.to_thread(BOOK.journeys, settings)
    candidates = [j for j in book.values() if matches(j, happening)]
    if not candidates:
        return []
    properties = happening.data.get("properties") if happening.kind == "event" else None
    admitted = await asyncio.to_thread(_admitted, settings, candidates, customer_id, properties)
    entries = []
    for journey, ok in zip(candidates, admitted, strict=True):
        wid = workflow_id(
            journey, customer_id, happening.key or utcnow().strftime("%Y%m%d%H%M%S%f")
        )
        if not ok:
            entries.append(Entry(journey.name, wid, False, f"when: {journey.spec.when}"))
            continue
        entries.append(await start(client, settings, journey, customer_id, wid, happening))
    return entries


async def start(
    client: Client,
    settings: Settings,
    journey: Journey,
    customer_id: str,
    wid: str,
    happening: Happening,
) -> Entry:
    definition = journey.as_data()
    try:
        await client.start_workflow(
            JourneyWorkflow.run,
            JourneyInput(
                name=journey.name,
                version=journey.version,
                definition=definition,
                customer_id=customer_id,
                entry=wid.removeprefix(f"journey-{journey.name}-{customer_id}").lstrip("-")
                or "once",
                trigger={"kind": happening.kind, "event": happening.event, **happening.data},
                time_scale=settings.journey_time_scale,
                heartbeat_timeout_seconds=settings.heartbeat_timeout.total_seconds(),
                attributes_at_start=True,
            ),
            id=wid,
            task_queue=settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=f"Journey {journey.name} of customer {customer_id}",
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(search.CUSTOMER_ID, customer_id),
                    SearchAttributePair(search.JOURNEY, journey.name),
                    SearchAttributePair(search.STAGE, first_stage(journey.name, definition)),
                ]
            ),
        )
    except WorkflowAlreadyStartedError:
        return Entry(journey.name, wid, False, "already in it (re-entry policy)")
    metrics.JOURNEYS_STARTED.labels(journey=journey.name).inc()
    return Entry(journey.name, wid, True)


async def start_by_name(client: Client, settings: Settings, name: str, customer_id: str) -> Entry:
    """Start a journey by hand (its trigger aside; its condition and policy apply)."""
    book = await asyncio.to_thread(BOOK.journeys, settings)
    if name not in book:
        raise LookupError(f"no journey named {name!r}; journeys: {', '.join(sorted(book))}")
    journey = book[name]
    happening = Happening(kind="manual", key=utcnow().strftime("m%Y%m%d%H%M%S%f"))
    wid = workflow_id(journey, customer_id, happening.key)
    [ok] = await asyncio.to_thread(_admitted, settings, [journey], customer_id)
    if not ok:
        return Entry(name, wid, False, f"when: {journey.spec.when}")
    return await start(client, settings, journey, customer_id, wid, happening)


def listens(journey: Journey) -> bool:
    """Whether the journey waits for or branches on what the customer does."""
    return any(
        step.wait_for is not None
        or any(r.if_ == "responded" or r.if_.startswith("event:") for r in step.branch or [])
        for step in journey.spec.steps
    )


async def signal_event(
    client: Client, settings: Settings, customer_id: str, kind: str, channel: str
) -> list[str]:
    """Tell the customer's running journeys that listen what they did; the ids of those told.

    Journeys with a ``once`` or ``once_per`` policy have known ids and are told directly;
    ``every_time`` and date ones are found through the visibility store, asked only when
    such a journey listens.
    """
    book = await asyncio.to_thread(BOOK.journeys, settings)
    listening = [j for j in book.values() if listens(j)]
    ids = {
        workflow_id(j, customer_id, "")
        for j in listening
        if j.spec.reentry.policy != "every_time" and not j.spec.trigger.scheduled
    }
    if any(j.spec.reentry.policy == "every_time" or j.spec.trigger.scheduled for j in listening):
        with contextlib.suppress(RPCError):
            async for w in client.list_workflows(
                f"WorkflowType = 'Journey' AND CustomerId = '{customer_id}' "
                "AND ExecutionStatus = 'Running'"
            ):
                ids.add(w.id)
    told = []
    for wid in sorted(ids):
        handle = client.get_workflow_handle_for(JourneyWorkflow.run, wid)
        try:
            await handle.signal(JourneyWorkflow.event, JourneyEvent(kind=kind, channel=channel))
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                continue  # not running (finished, or never started)
            raise
        told.append(wid)
    return told


def happenings_of(outcome: Outcome, event: str | None, levels: list[str]) -> list[Happening]:
    """What just happened to a customer that may let them into journeys: the event itself,
    a change of tier (``levels``: the rule file's tiers, best first), each segment entered."""
    happenings = []
    if event is not None:
        happenings.append(Happening(kind="event", event=event, key=outcome.key))
    if outcome.changed:
        direction = outcome.direction(levels)
        happenings.append(
            Happening(
                kind="tier_change",
                key=f"{outcome.key or 'tier'}-{outcome.tier}",
                from_tier=outcome.previous_tier,
                to_tier=outcome.tier,
                data={"from": outcome.previous_tier, "to": outcome.tier, "direction": direction},
            )
        )
    for segment in outcome.entered_segments:
        happenings.append(
            Happening(
                kind="segment_entry",
                key=f"{outcome.key or 'segment'}-{segment}",
                segment=segment,
                data={"segment": segment},
            )
        )
    return happenings


def levels_of(session: Session) -> list[str]:
    """The tiers of the latest applied rules (else the shipped file's), best first."""
    latest = latest_run(session)
    rules = rules_of(latest[1]) if latest is not None else load(SHIPPED_RULES)
    return list(rules.spec.tiers.levels)


def hold(
    session: Session, settings: Settings, customer_id: str, happenings: list[Happening]
) -> list[int]:
    """Write, in the caller's transaction, the happenings that let the customer into some
    journey; ``release`` starts them once it commits. Nothing is written when no journey
    listens, so the outbox holds only what is on its way."""
    book = BOOK.journeys(settings)
    rows = [
        JourneyOutbox(customer_id=customer_id, happening=asdict(h))
        for h in happenings
        if any(matches(j, h) for j in book.values())
    ]
    session.add_all(rows)
    session.flush()
    return [row.id for row in rows if row.id is not None]


def hold_outcome(
    session: Session, settings: Settings, outcome: Outcome, event: str | None
) -> list[int]:
    """Hold what a recorded change lets the customer into: the event itself, a change of
    tier, each segment entered (the tiers are read only when the tier changed)."""
    levels = levels_of(session) if outcome.changed else []
    return hold(session, settings, outcome.customer_id, happenings_of(outcome, event, levels))


def hold_signal(session: Session, customer_id: str, event: str, channel: str) -> list[int]:
    """Hold, in the caller's transaction, that the customer's running journeys (and a
    welcome of old) are to be told of ``event``: ``release`` tells them once it commits, and
    the API's sweep tells them later if Temporal could not be reached then."""
    row = JourneyOutbox(
        customer_id=customer_id,
        happening=asdict(Happening(kind="signal", event=event, data={"channel": channel})),
    )
    session.add(row)
    session.flush()
    return [row.id] if row.id is not None else []


async def release(client: Client, settings: Settings, ids: list[int]) -> list[Entry]:
    """Start the journeys of held happenings (or tell the running ones of a held signal),
    then remove them from the outbox."""
    if not ids:
        return []

    def read() -> list[tuple[int, str, dict[str, Any]]]:
        with session_scope(settings.db_url) as session:
            rows = session.exec(select(JourneyOutbox).where(col(JourneyOutbox.id).in_(ids)))
            return [(r.id, r.customer_id, r.happening) for r in rows if r.id is not None]

    def done(row_id: int) -> None:
        with session_scope(settings.db_url) as session:
            session.execute(delete(JourneyOutbox).where(col(JourneyOutbox.id) == row_id))

    entries = []
    for row_id, customer_id, happening in await asyncio.to_thread(read):
        held = Happening(**happening)
        if held.kind == "signal":
            channel = str(held.data.get("channel", ""))
            await signal_event(client, settings, customer_id, held.event, channel)
            await signal_response(client, customer_id, held.event, channel)
        else:
            entries += await enter(client, settings, customer_id, held)
        await asyncio.to_thread(done, row_id)
    return entries


def waiting(settings: Settings, older_than: timedelta, limit: int = 1000) -> list[int]:
    """Held happenings still in the outbox ``older_than`` after they were written: the
    process that held them stopped, or Temporal could not be reached, before the start."""
    cutoff = utcnow() - older_than
    with session_scope(settings.db_url) as session:
        return [
            row_id
            for row_id in session.exec(
                select(JourneyOutbox.id)
                .where(col(JourneyOutbox.created_at) <= cutoff)
                .order_by(col(JourneyOutbox.id))
                .limit(limit)
            )
            if row_id is not None
        ]


async def enter_date(
    client: Client, settings: Settings, journey: Journey, occasion: Occasion | Lapse
) -> Entry:
    """A journey of the hourly run, whatever its re-entry policy: a date once per customer,
    occasion and year; a lapse once per spell without a purchase."""
    wid = f"journey-{journey.name}-{occasion.customer_id}-{occasion.key}"
    [ok] = await asyncio.to_thread(_admitted, settings, [journey], occasion.customer_id)
    if not ok:
        return Entry(journey.name, wid, False, f"when: {journey.spec.when}")
    if isinstance(occasion, Lapse):
        data = {
            "occasion": "no_purchase_for",
            "since": occasion.since.isoformat(),
            "days": (occasion.on - occasion.since).days,
        }
    else:
        data = {"occasion": occasion.occasion, "date": occasion.on.isoformat()}
    happening = Happening(kind="date", key=occasion.key, data=data)
    return await start(client, settings, journey, occasion.customer_id, wid, happening)


async def ensure_date_schedule(
    client: Client, settings: Settings, schedule_id: str = "", paused: bool = False
) -> bool:
    """Create the hourly schedule of the date journeys if it is not there; True if created.

    Missed runs (the server or the workers were down) are caught up within
    ``date_catchup``; runs never overlap, they queue.
    """
    from temporalio.client import ScheduleAlreadyRunningError

    from workflows.dates import SCHEDULE_ID

    schedule_id = schedule_id or SCHEDULE_ID
    try:
        await client.get_schedule_handle(schedule_id).describe()
        return False
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
    try:
        await _create_date_schedule(client, settings, schedule_id, paused)
    except ScheduleAlreadyRunningError:  # another worker, starting at the same moment, made it
        return False
    return True


async def _create_date_schedule(
    client: Client, settings: Settings, schedule_id: str, paused: bool
) -> None:
    from temporalio.client import (
        Schedule,
        ScheduleActionStartWorkflow,
        ScheduleIntervalSpec,
        ScheduleOverlapPolicy,
        SchedulePolicy,
        ScheduleSpec,
        ScheduleState,
    )

    from workflows.dates import DateJourneys

    await client.create_schedule(
        schedule_id,
        Schedule(
            action=ScheduleActionStartWorkflow(
                DateJourneys.run, "", id="date-journeys", task_queue=settings.task_queue
            ),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(hours=1))]),
            policy=SchedulePolicy(
                overlap=ScheduleOverlapPolicy.BUFFER_ALL,
                catchup_window=settings.date_catchup,
            ),
            state=ScheduleState(paused=paused),
        ),
    )
