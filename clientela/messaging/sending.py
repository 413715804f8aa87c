"""The sending protocol: how a message goes out at most once, and is not lost on the way.

Per message, keyed by its idempotency key in the ledger (``models.ledger.Message``):

1. Reserve: insert the ledger row as ``queued`` unless the key exists. A final row
   (sent, delivered, failed, suppressed) is returned as it is: nothing is sent again.
2. Decide: consent, suppression and an address for the channel; otherwise the row becomes
   ``suppressed`` with the reason. Render the template; a template error makes it ``failed``.
3. Claim: compare-and-set ``queued -> sending`` with this attempt's id, committed *before* the
   provider is called. Only one attempt can hold a claim.
4. Send, then record in one transaction: ``sent`` with the provider id (and the contact in the
   customer's history), ``failed`` for a permanent refusal (suppressing the address where the
   provider says it is unusable), or back to ``queued`` for a transient one.
5. A row found in ``sending`` whose claim is older than the lease belongs to an attempt that
   died, perhaps after the provider accepted the message. It is reconciled with the provider:
   accepted -> ``sent``; not there -> claimed again and sent; the provider cannot tell (a
   plain SMTP relay) -> ``failed`` as ``in doubt``, never resent.

A message that may not go *now* (an SMS in the customer's quiet hours) stays ``queued`` with
the reason and its outcome is ``deferred`` with the time it may go (``retry_at``).

Batches go through the same steps together: one transaction reserves and claims a whole
batch, the messages go to their providers concurrently (``send_concurrency`` per channel,
paced by ``email_rate`` / ``sms_rate``), and their hand-overs and answers are written by the
process's group commit (``_Ledger``), one transaction per round of its slots.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import bindparam, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col, select

from activities.contracts import DEFERRED, MessageOutcome, MessageRequest
from clientela import metrics
from clientela.customers.records import suppress
from clientela.db import SQLITE_LOCK_WAIT, get_engine, locked, session_scope, unwaiting_engine
from clientela.messaging.bounces import REF_HEADER, return_path, tag_for
from clientela.messaging.channels import InDoubt, Permanent, SendAccepted, SendError, Transient
from clientela.messaging.channels.email import (
    EmailPool,
    EmailTransport,
    OutgoingEmail,
    build_email,
    message_id_for,
)
from clientela.messaging.channels.sms import SmsTransport
from clientela.messaging.delivery import apply_kept
from clientela.messaging.eligibility import Deferral, Facts, chunked
from clientela.messaging.links import preferences_url, url_for
from clientela.messaging.ratelimit import limiter
from clientela.messaging.templating import RenderedEmail, RenderedSms, RenderError, Templates
from clientela.messaging.tracking import Rewriter
from clientela.settings import Settings
from clientela.timeutil import as_utc, utcnow
from models import Channel, Customer, Direction, Interaction, Message, MessageState
from models.customer import CustomerFields, full_name

log = logging.getLogger(__name__)

RECONCILED = "reconciled: the provider had accepted it before an attempt was interrupted"
IN_DOUBT = (
    "in doubt: an attempt stopped after handing the message to the provider, which cannot "
    "say whether it arrived; not resent so that it is never received twice"
)


@dataclass
class Prepared:
    """A message claimed by this attempt, ready for its provider."""

    req: MessageRequest
    customer_pk: int
    channel: str
    address: str
    content: RenderedEmail | RenderedSms
    reconcile: bool = False  # a dead attempt's claim: ask the provider first
    claimed_at: Any = None
    unsubscribe_url: str = ""
    state: str = MessageState.claimed  # as this attempt last wrote it
    #: A dead attempt handed this message over, and it may not be sent so now (its address
    #: was suppressed meanwhile, say): the answer to record unless the provider has it.
    unless_there: Refusal | Transient | None = None

    @property
    def key(self) -> str:
        return self.req.key


@dataclass
class Refusal:
    state: MessageState
    reason: str


@dataclass
class Decision:
    channel: str
    address: str
    locale: str
    content: RenderedEmail | RenderedSms
    unsubscribe_url: str = ""
    unless_there: Refusal | Transient | None = None


@dataclass
class Unknowable:
    """The provider cannot say whether it has the message: fail it, never resend."""


@dataclass
class Leave:
    """Leave the claim as it is (the provider may have the message); ``error`` says why."""

    error: SendError


Answer = SendAccepted | Permanent | Transient | Unknowable | Leave | Refusal
#: A ledger change: (message, None) hands it over; (message, answer) records the answer.
Op = tuple["Prepared", Answer | None]


def _outcome(row: Message) -> MessageOutcome:
    return MessageOutcome(
        key=row.key,
        state=row.state,
        channel=row.channel,
        reason=row.reason,
        provider_id=row.provider_id,
    )


def customer_context(customer: CustomerFields, offers: list[str] | None = None) -> dict[str, Any]:
    """Merge fields a template may use (``offers``: the rules' next best offers, best first)."""
    return {
        "customer": {
            "id": customer.external_id,
            "first_name": customer.first_name,
            "last_name": customer.last_name,
            "full_name": full_name(customer.first_name, customer.last_name),
            "email": customer.email,
            "phone": customer.phone,
            "locale": customer.locale,
            "tier": customer.tier,
            "segments": list(customer.segments),
            "offers": list(offers or []),
            "attributes": dict(customer.attributes),
        }
    }


_LEDGER = Message.__table__  # type: ignore[attr-defined]
_CUSTOMER = Customer.__table__  # type: ignore[attr-defined]
_MINE = (_LEDGER.c.key == bindparam("k"), _LEDGER.c.claimed_by == bindparam("me"))
# Built once: constructing a statement costs more than running it.
_HAND = (
    update(_LEDGER)
    .where(*_MINE, _LEDGER.c.state == MessageState.claimed)
    .values(state=MessageState.sending, claimed_at=bindparam("now"), updated_at=bindparam("now"))
)
_ANSWER = (
    update(_LEDGER)
    .where(*_MINE, _LEDGER.c.state == bindparam("was"))
    .values(
        state=bindparam("state"),
        reason=bindparam("reason"),
        provider_id=bindparam("provider_id"),
        sent_at=bindparam("sent_at"),
        claimed_by=bindparam("claimed_by"),
        updated_at=bindparam("now"),
    )
)


_CONTACT = Interaction.__table__.insert()  # type: ignore[attr-defined]


class _Contended(Exception):
    """A row changed hands while a batch of ledger changes was being written."""


def _all_changed(done: Any, rows: list[dict[str, Any]]) -> None:
    if done.rowcount != len(rows):
        raise _Contended(f"{done.rowcount} of {len(rows)} ledger rows changed")


class _Ledger:
    """Group commit of the ledger changes of every batch a worker process is sending.

    A hand-over (``claimed -> sending``) is committed before its message goes to the
    provider, and every answer goes in with the next commit of the slot that got it (its
    next hand-over, or its last flush). Changes that arrive while a transaction runs or
    waits go together in the next one, whichever batch (lane, attempt) they come from, so
    the database sees one transaction per round of the process's slots, not one per slot.

    On SQLite the writer never blocks the event loop while another process holds the write
    lock: the transaction begins by taking the lock (``BEGIN IMMEDIATE``, without SQLite's
    busy timeout: ``unwaiting_engine``) and, when the database is locked, is tried again
    after a sleep on the loop (0.2 ms, growing to 4 ms, for up to ``SQLITE_LOCK_WAIT``), so
    the process's other slots go on talking to their providers meanwhile. SQLite's own busy
    handler would block the whole loop, sleeping 1, 2, 5, 10 ms and more between tries, for
    a lock held a fraction of a millisecond: two worker processes spent almost half their
    time there (measured with py-spy, ``bench.campaign --workers 2``). Nothing of a
    transaction that could not take the lock was written, and each message's state is set
    only once its transaction has committed, so trying again is always safe.
    """

    @classmethod
    def of(cls, settings: Settings) -> _Ledger:
        """The ledger writer of this event loop for the settings' database."""
        ledgers = _LEDGERS.setdefault(asyncio.get_running_loop(), {})
        found = ledgers.get(settings.db_url)
        if found is None:
            found = ledgers[settings.db_url] = cls(settings)
        return found

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.local_db = settings.db_url.startswith("sqlite")
        self._waiting: list[_Batch] = []
        self._writer: asyncio.Task[None] | None = None

    async def commit(self, sender: Sender, ops: list[Op]) -> list[Any]:
        """Each op's result: True (handed over: ours to send), or the message's outcome."""
        if not ops:
            return []
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Batch(sender, ops, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        return await future

    async def _write(self) -> None:
        while self._waiting:
            waiting, self._waiting = self._waiting, []
            try:
                await self._transaction(waiting)
            except Exception as exc:
                if len(waiting) == 1:
                    self._fail(waiting, exc)
                    continue
                # One batch's failure is not the others': each is tried on its own.
                for batch in waiting:
                    try:
                        await self._transaction([batch])
                    except Exception as exc:
                        self._fail([batch], exc)
            except BaseException as exc:  # nothing of this transaction was recorded
                self._fail(waiting, exc)
                raise

    @staticmethod
    def _fail(waiting: list[_Batch], exc: BaseException) -> None:
        for batch in waiting:
            if not batch.future.done():
                batch.future.set_exception(exc)

    async def _transaction(self, waiting: list[_Batch]) -> None:
        if not self.local_db:
            engine = get_engine(self.settings.db_url)
            results = await asyncio.to_thread(self._commit, waiting, engine)
        else:
            engine = unwaiting_engine(self.settings.db_url)
            delay, deadline = 0.0002, time.monotonic() + SQLITE_LOCK_WAIT
            while True:
                try:
                    results = self._commit(waiting, engine)
                    break
                except OperationalError as exc:
                    if not locked(exc) or time.monotonic() > deadline:
                        raise
                metrics.LEDGER_LOCK_WAITS.inc()
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, 0.004)
        for batch, result in zip(waiting, results, strict=True):
            if not batch.future.done():
                batch.future.set_result(result)

    @staticmethod
    def _commit(waiting: list[_Batch], engine: Engine) -> list[list[Any]]:
        """Every batch's changes in one transaction (each as its own attempt's claims)."""

        def run(checked: bool) -> list[_Plan]:
            with engine.begin() as conn:
                now = utcnow()
                plans = [
                    b.sender._plan(b.ops, b.sender._held(conn, b.ops) if checked else None, now)
                    for b in waiting
                ]
                _write_plans(conn, plans)
            return plans

        try:
            plans = run(checked=False)
        except _Contended:  # some row is no longer ours: look at each one
            plans = run(checked=True)
        for plan in plans:  # committed: what each attempt holds now (read by its next change)
            for p, state in plan.wrote:
                p.state = state
        return [plan.results for plan in plans]


@dataclass
class _Batch:
    sender: Sender
    ops: list[Op]
    future: asyncio.Future[list[Any]]


@dataclass
class _Plan:
    """One attempt's part of a ledger transaction: the rows to write, and each op's result."""

    sender: Sender
    results: list[Any]
    hands: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    contacts: list[dict[str, Any]] = field(default_factory=list)
    suppressions: list[tuple[Prepared, Permanent]] = field(default_factory=list)
    taken: list[tuple[int, str]] = field(default_factory=list)
    sms_sent: list[str] = field(default_factory=list)
    wrote: list[tuple[Prepared, str]] = field(default_factory=list)


def _write_plans(conn: Connection, plans: list[_Plan]) -> None:
    """Every attempt's rows in three multi-row statements (hand-overs, answers, contacts),
    however many attempts share the transaction: each row names its own attempt. One set of
    statements per transaction rather than one per attempt took the ledger from 23% to 17% of
    two sending workers' time holding the GIL (py-spy, ``bench.campaign --workers 2``)."""
    hands = [row for plan in plans for row in plan.hands]
    if hands:
        _all_changed(conn.execute(_HAND, hands), hands)
    changes = [row for plan in plans for row in plan.changes]
    if changes:
        _all_changed(conn.execute(_ANSWER, changes), changes)
    contacts = [row for plan in plans for row in plan.contacts]
    if contacts:
        conn.execute(_CONTACT, contacts)
    for plan in plans:
        if not (plan.suppressions or plan.taken or plan.sms_sent):
            continue
        with Session(bind=conn) as session:
            # Delivery reports that came before this answer was written.
            apply_kept(session, plan.sms_sent)
            for p, refusal in plan.suppressions:
                suppress(
                    session=session, channel=p.channel, address=p.address, reason=refusal.reason
                )
            for i, key in plan.taken:
                plan.results[i] = plan.sender._taken(session, key)
            session.flush()


#: Each event loop's ledger writers, by database URL.
_LEDGERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, _Ledger]] = (
    weakref.WeakKeyDictionary()
)


class Sender:
    """Sends messages through the ledger protocol; one instance per activity attempt."""

    def __init__(
        self,
        settings: Settings,
        attempt_id: str,
        templates: Templates | None = None,
        pool: EmailPool | None = None,
    ) -> None:
        self.settings = settings
        self.attempt_id = attempt_id
        #: SMTP connections kept between attempts (a worker's); without it each is closed.
        self.pool = pool
        # Share one Templates per process where possible: it caches compiled templates.
        self.templates = templates or Templates(settings.templates_dir, settings.default_locale)
        self.quiet_hours = settings.quiet_hours
        self._idle_email: list[EmailTransport] = []
        self._open_email: list[EmailTransport] = []
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._sms: SmsTransport | None = None

    @property
    def sms(self) -> SmsTransport:
        if self._sms is None:
            self._sms = SmsTransport(self.settings)
        return self._sms

    def _slot(self, channel: str) -> asyncio.Semaphore:
        if channel not in self._slots:
            self._slots[channel] = asyncio.Semaphore(self.settings.send_concurrency)
        return self._slots[channel]

    @asynccontextmanager
    async def _email(self) -> AsyncIterator[EmailTransport]:
        """One of at most ``send_concurrency`` SMTP connections, reused across the batch."""
        async with self._slot(Channel.email):
            if self._idle_email:
                transport = self._idle_email.pop()
            else:
                kept = self.pool.take() if self.pool is not None else None
                transport = kept or EmailTransport(self.settings)
                self._open_email.append(transport)
            try:
                yield transport
            finally:
                self._idle_email.append(transport)

    async def close(self) -> None:
        for transport in self._open_email:
            if self.pool is not None:
                await self.pool.give(transport)
            else:
                await transport.close()
        self._open_email = []
        if self._sms is not None:
            await self._sms.close()

    # -- the protocol ------------------------------------------------------------------------

    async def deliver(self, req: MessageRequest) -> MessageOutcome:
        """Send one message at most once. Raises Transient or InDoubt to ask for a retry."""
        (result,) = await self.deliver_many([req])
        if isinstance(result, SendError):
            raise result
        return result

    async def deliver_many(
        self, reqs: list[MessageRequest]
    ) -> list[MessageOutcome | Transient | InDoubt]:
        """Send a batch, each message at most once. A Transient or InDoubt in the result
        means that message is not final yet: ask again later with the same key."""
        return await self.send_prepared(await self.prepare(reqs))

    async def prepare(
        self, reqs: list[MessageRequest]
    ) -> list[MessageOutcome | Prepared | Transient]:
        """Reserve, decide, render and claim a batch (one transaction, in a thread): what
        ``send_prepared`` sends. A claim that is never sent goes back with ``release``."""
        return await asyncio.to_thread(self._prepare_many, reqs)

    async def release(self, prepared: list[MessageOutcome | Prepared | Transient]) -> int:
        """Hand back the claims of a prepared batch that will not be sent (its attempt is
        ending): they are queued again at once, for the next attempt, instead of waiting for
        their lease to run out. A hand-over to reconcile stays as it is. How many went back."""
        keys = [
            p.key
            for p in prepared
            if isinstance(p, Prepared) and not p.reconcile and p.state == MessageState.claimed
        ]
        if not keys:
            return 0
        return await asyncio.to_thread(self._release, keys)

    def _release(self, keys: list[str]) -> int:
        released = 0
        with get_engine(self.settings.db_url).begin() as conn:
            for part in chunked(keys):
                released += conn.execute(
                    update(_LEDGER)
                    .where(
                        _LEDGER.c.key.in_(part),
                        _LEDGER.c.claimed_by == self.attempt_id,
                        _LEDGER.c.state == MessageState.claimed,
                    )
                    .values(
                        state=MessageState.queued,
                        claimed_by="",
                        claimed_at=None,
                        updated_at=utcnow(),
                    )
                ).rowcount
        return released

    async def send_prepared(
        self, prepared: list[MessageOutcome | Prepared | Transient]
    ) -> list[MessageOutcome | Transient | InDoubt]:
        """Send what ``prepare`` claimed; the others' outcomes are passed on as they are."""
        ledger = _Ledger.of(self.settings)
        claimed = [p for p in prepared if isinstance(p, Prepared)]
        recorded: dict[str, MessageOutcome | Transient | InDoubt] = {}
        queues: dict[str, deque[Prepared]] = {}
        for p in claimed:
            queues.setdefault(p.channel, deque()).append(p)
        await asyncio.gather(
            *(
                self._slot_loop(channel, queue, ledger, recorded)
                for channel, queue in queues.items()
                for _ in range(min(self.settings.send_concurrency, len(queue)))
            )
        )
        return [recorded[p.key] if isinstance(p, Prepared) else p for p in prepared]

    async def _slot_loop(
        self,
        channel: str,
        queue: deque[Prepared],
        ledger: _Ledger,
        recorded: dict[str, MessageOutcome | Transient | InDoubt],
    ) -> None:
        """One of the channel's ``send_concurrency`` slots: takes messages one at a time.

        Each message is handed over in the same transaction that records the slot's previous
        answer, and goes to the provider only once that is committed: a crash leaves at most
        one message per slot handed over without its answer.
        """
        answered: list[Op] = []  # answers not committed yet (at most one message's)

        async def commit(ops: list[Op]) -> list[Any]:
            results = await ledger.commit(self, ops)
            for (p, answer), result in zip(ops, results, strict=True):
                if answer is not None:
                    recorded[p.key] = result
                    if isinstance(result, MessageOutcome):
                        metrics.MESSAGES.labels(channel=p.channel, outcome=result.state).inc()
            return results

        async with self._carrier(channel) as transport:
            while queue:
                p = queue.popleft()
                if p.reconcile:  # a dead attempt's hand-over: ask the provider first
                    settled = await self._reconciled(p, transport)
                    if settled is not None and settled is p.unless_there:
                        answered.append((p, settled))  # not there, and it may not go so now
                        continue
                    if isinstance(settled, Transient):
                        recorded[p.key] = settled  # could not ask: the claim waits
                        continue
                    if settled is not None:
                        answered.append((p, settled))
                        continue
                try:
                    message = self._build(p)
                except Exception as exc:  # nothing was handed over: it fails with why
                    answered.append((p, Permanent(f"cannot build the message: {exc!r}")))
                    continue
                await limiter(p.channel, self._rate(p.channel)).wait()
                if not p.reconcile:  # (a reconciled row is in ``sending`` already)
                    *_, handed = await commit([*answered, (p, None)])
                    answered = []
                    if handed is not True:
                        recorded[p.key] = handed
                        continue
                answered.append((p, await self._send(p, transport, message)))
            await commit(answered)

    async def _reconciled(
        self, p: Prepared, transport: EmailTransport | SmsTransport
    ) -> Answer | Transient | None:
        """What a dead attempt's hand-over came to: an answer to record, Transient when the
        provider cannot be asked now, None when it is to be sent (again)."""
        try:
            found = await self._reconcile(p, transport)
        except Transient as exc:
            return exc
        if found:
            return SendAccepted(found, note=RECONCILED)
        if p.unless_there is not None:  # may not go again: refused, or in doubt
            return p.unless_there if found == "" else Unknowable()
        if found is None and self.settings.email_in_doubt == "fail":
            return Unknowable()
        return None  # surely not there, or resent by policy with the same Message-ID

    def _rate(self, channel: str) -> float:
        return self.settings.email_rate if channel == Channel.email else self.settings.sms_rate

    def _build(self, p: Prepared) -> OutgoingEmail | None:
        """The email's bytes (an SMS needs nothing more); raises if it cannot be built."""
        if p.channel != Channel.email:
            assert isinstance(p.content, RenderedSms)
            return None
        assert isinstance(p.content, RenderedEmail)
        req = p.req
        link = p.unsubscribe_url or url_for(self.settings, req.customer_id, p.channel, req.campaign)
        tag = tag_for(self.settings, p.key)
        return build_email(
            key=p.key,
            sender=self.settings.mail_from,
            to=p.address,
            content=p.content,
            headers={
                # RFC 2369 and RFC 8058: mail clients offer a one-click unsubscribe.
                "List-Unsubscribe": f"<{link}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                # Which message a bounce or complaint is about (signed: docs/sending.md).
                REF_HEADER: tag,
            },
            return_path=return_path(self.settings, p.key, tag),
        )

    @asynccontextmanager
    async def _carrier(self, channel: str) -> AsyncIterator[EmailTransport | SmsTransport]:
        """A slot of the channel (``send_concurrency``) and what carries the message."""
        if channel == Channel.email:
            async with self._email() as transport:
                yield transport
        else:
            async with self._slot(Channel.sms):
                yield self.sms

    async def _send(
        self, p: Prepared, transport: EmailTransport | SmsTransport, message: OutgoingEmail | None
    ) -> Answer:
        started = time.perf_counter()
        try:
            if isinstance(transport, EmailTransport):
                assert message is not None
                return await transport.send(message)
            assert isinstance(p.content, RenderedSms)
            return await transport.send(to=p.address, body=p.content.body)
        except (Permanent, Transient) as exc:
            error = "permanent" if isinstance(exc, Permanent) else "transient"
            metrics.PROVIDER_ERRORS.labels(channel=p.channel, error_class=error).inc()
            return exc
        except InDoubt as exc:
            metrics.PROVIDER_ERRORS.labels(channel=p.channel, error_class="in_doubt").inc()
            return Leave(exc)
        except Exception as exc:  # handed over or not, nobody can say: reconciled later
            log.warning("%s: unexpected error while sending: %r", p.key, exc)
            metrics.PROVIDER_ERRORS.labels(channel=p.channel, error_class="in_doubt").inc()
            return Leave(InDoubt(f"unexpected error while sending: {exc!r}"))
        finally:
            metrics.SEND_SECONDS.labels(channel=p.channel).observe(time.perf_counter() - started)

    async def _reconcile(self, p: Prepared, transport: EmailTransport | SmsTransport) -> str | None:
        """Provider id if the provider has it, "" if it surely does not, None if unknowable."""
        if isinstance(transport, EmailTransport):
            message_id = message_id_for(p.key, self.settings.mail_from)
            held = await transport.was_accepted(message_id)
            return None if held is None else (message_id if held else "")
        assert isinstance(p.content, RenderedSms)
        since = (as_utc(p.claimed_at) or utcnow()) - timedelta(minutes=1)
        return await transport.find(to=p.address, body=p.content.body, since=since) or ""

    # -- database steps (run in a thread: the driver blocks) --------------------------------

    def _prepare_many(
        self, reqs: list[MessageRequest]
    ) -> list[MessageOutcome | Prepared | Transient]:
        """Reserve, decide and claim the whole batch in one transaction."""
        now = utcnow()
        keys = [r.key for r in reqs]
        with session_scope(self.settings.db_url) as session:
            rows: dict[str, Message] = {}
            for part in chunked(keys):
                for row in session.exec(select(Message).where(col(Message.key).in_(part))).all():
                    rows[row.key] = row
            customers: dict[str, CustomerFields] = {}
            for part in chunked(sorted({r.customer_id for r in reqs})):
                # Rows, not ORM objects: they are only read, and load in half the time.
                for c in session.execute(
                    sa_select(_CUSTOMER).where(_CUSTOMER.c.external_id.in_(part))
                ).all():
                    customers[c.external_id] = cast(CustomerFields, c)
            facts = Facts(session, customers.values(), now, deciding=keys)
            templates = self.templates.pinned()
            out: list[MessageOutcome | Prepared | Transient] = []
            new_rows: list[dict[str, Any]] = []
            seen: set[str] = set()
            for req in reqs:
                if req.key in seen:
                    out.append(Transient(f"{req.key} appears twice in one batch"))
                    continue
                seen.add(req.key)
                found = rows.get(req.key)
                if found is not None and MessageState(found.state).final:
                    out.append(_outcome(found))
                    continue
                customer = customers.get(req.customer_id)
                if customer is None:
                    # No ledger row can point at a customer who does not exist.
                    out.append(
                        MessageOutcome(
                            key=req.key,
                            state=MessageState.failed,
                            reason=f"no customer with id {req.customer_id!r}",
                        )
                    )
                    continue
                try:
                    decision = self._decide(facts, req, customer, templates)
                    if found is not None and found.state == MessageState.sending:
                        decision = self._handed(facts, req, customer, templates, found, decision)
                except Exception as exc:  # one poisoned message fails alone, with why
                    log.warning("%s: cannot prepare the message: %r", req.key, exc)
                    decision = Refusal(
                        MessageState.failed, f"cannot prepare the message: {exc!r}"[:1000]
                    )
                if found is None:
                    out.append(self._reserve(new_rows, req, customer, decision, now))
                else:
                    out.append(self._claim(session, found, req, customer, decision, now))
                if (
                    isinstance(decision, Decision)
                    and isinstance(out[-1], Prepared)
                    and not req.service
                ):
                    facts.count_contact(customer, decision.channel)
            try:
                if new_rows:  # one INSERT for the batch's new keys
                    session.connection().execute(
                        Message.__table__.insert(),  # type: ignore[attr-defined]
                        new_rows,
                    )
                session.flush()
            except IntegrityError:
                session.rollback()
                return [Transient("another attempt reserved some of these messages")] * len(reqs)
            return out

    def _reserve(
        self,
        new_rows: list[dict[str, Any]],
        req: MessageRequest,
        customer: CustomerFields,
        decision: Decision | Refusal | Deferral,
        now: datetime,
    ) -> MessageOutcome | Prepared:
        """A new key: its row is written already claimed, refused or deferred."""
        assert customer.id is not None
        row: dict[str, Any] = {
            "key": req.key,
            "customer_id": customer.id,
            "channel": req.channel or Channel.email,
            "address": "",
            "template": req.template,
            "locale": "",
            "journey": req.journey,
            "campaign": req.campaign,
            "service": req.service,
            "state": MessageState.queued,
            "reason": "",
            "provider_id": "",
            "attempts": 0,
            "claimed_by": "",
            "claimed_at": None,
            "sent_at": None,
            "created_at": now,
            "updated_at": now,
        }
        new_rows.append(row)
        if isinstance(decision, Refusal):
            row["state"], row["reason"] = decision.state, decision.reason
            return MessageOutcome(
                key=req.key, state=decision.state, channel=row["channel"], reason=decision.reason
            )
        if isinstance(decision, Deferral):
            row["reason"], row["channel"] = decision.reason, decision.channel
            return self._deferred(req.key, decision)
        row.update(
            channel=decision.channel,
            address=decision.address,
            locale=decision.locale,
            state=MessageState.claimed,
            claimed_by=self.attempt_id,
            claimed_at=now,
            attempts=1,
        )
        return self._prepared(req, customer.id, decision, False, now)

    def _claim(
        self,
        session: Session,
        row: Message,
        req: MessageRequest,
        customer: CustomerFields,
        decision: Decision | Refusal | Deferral,
        now: datetime,
    ) -> MessageOutcome | Prepared | Transient:
        """An existing row, queued or claimed by an attempt that may have died."""
        assert customer.id is not None
        if row.state in (MessageState.claimed, MessageState.sending):
            claimed_at = as_utc(row.claimed_at) or now
            if now - claimed_at < self.settings.send_lease and row.claimed_by != self.attempt_id:
                return Transient(f"{req.key} is being sent by another attempt ({row.claimed_by})")
        if isinstance(decision, Refusal):
            row.state, row.reason, row.updated_at = decision.state, decision.reason, now
            session.add(row)
            return _outcome(row)
        if isinstance(decision, Deferral):
            if row.state == MessageState.queued:
                row.reason, row.updated_at = decision.reason, now
                row.channel = decision.channel
                session.add(row)
            return self._deferred(req.key, decision)  # a dead claim is taken when it may go
        if row.state == MessageState.sending:
            # Handed over by an attempt that died before recording the answer: ask first.
            held_by = (Message.state == MessageState.sending) & (
                Message.claimed_by == row.claimed_by
            )
            state, reconcile, claimed_at = MessageState.sending, True, as_utc(row.claimed_at) or now
        elif row.state == MessageState.claimed:
            # Claimed by an attempt that died before handing it over: it never left.
            held_by = (Message.state == MessageState.claimed) & (
                Message.claimed_by == row.claimed_by
            )
            state, reconcile, claimed_at = MessageState.claimed, False, now
        else:
            held_by = Message.state == MessageState.queued
            state, reconcile, claimed_at = MessageState.claimed, False, now
        claimed = session.execute(
            update(Message)
            .where(Message.key == req.key, held_by)  # type: ignore[arg-type]
            .values(
                state=state,
                claimed_by=self.attempt_id,
                claimed_at=now,
                attempts=Message.attempts + 1,
                channel=decision.channel,
                address=decision.address,
                locale=decision.locale,
                updated_at=now,
            )
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            return Transient(f"{req.key} was claimed concurrently; will look again")
        prepared = self._prepared(req, customer.id, decision, reconcile, claimed_at)
        prepared.state = state
        return prepared

    @staticmethod
    def _prepared(
        req: MessageRequest, customer_pk: int, d: Decision, reconcile: bool, claimed_at: Any
    ) -> Prepared:
        return Prepared(
            req,
            customer_pk,
            d.channel,
            d.address,
            d.content,
            reconcile,
            claimed_at,
            d.unsubscribe_url,
            unless_there=d.unless_there,
        )

    @staticmethod
    def _deferred(key: str, deferral: Deferral) -> MessageOutcome:
        return MessageOutcome(
            key=key,
            state=DEFERRED,
            reason=deferral.reason,
            retry_at=deferral.until.isoformat(),
        )

    def _decide(
        self, facts: Facts, req: MessageRequest, customer: CustomerFields, templates: Templates
    ) -> Decision | Refusal | Deferral:
        """Which channel and address, and the rendered content; or why not (now)."""
        off = None if req.service else facts.unsubscribed(customer, req.topic)
        if off is not None:
            return Refusal(MessageState.suppressed, off)
        channel, address_or_reason = facts.choose_channel(customer, req.channel, req.service)
        if channel is None:
            return Refusal(MessageState.suppressed, address_or_reason)
        deferral = facts.quiet(customer, channel, self.quiet_hours)
        if deferral is not None:
            return deferral
        return self._render(facts, req, customer, templates, channel, address_or_reason)

    def _handed(
        self,
        facts: Facts,
        req: MessageRequest,
        customer: CustomerFields,
        templates: Templates,
        row: Message,
        fresh: Decision | Refusal | Deferral,
    ) -> Decision | Refusal | Deferral:
        """A dead attempt handed this message over on ``row``'s channel and address: whether
        it went is for that provider to say (``_reconciled``), whatever would be decided now.
        Decided afresh, the message could be refused or moved to another channel, recording
        as unsent, or sending twice, a message that may have reached its recipient (its own
        hard bounce suppresses its address: found by killing a worker mid-send). So it is
        rendered as it went, and the fresh decision, if it differs, holds only if the provider
        does not have it: a refusal as it is, another channel or address by deciding again
        (``Transient``: the message waits in the ledger). A deferral (quiet hours) waits
        before anything is asked, as it did."""
        if isinstance(fresh, Deferral):
            return fresh
        if isinstance(fresh, Decision) and (fresh.channel, fresh.address) == (
            row.channel,
            row.address,
        ):
            return fresh
        if not row.address:
            return fresh
        rendered = self._render(facts, req, customer, templates, row.channel, row.address)
        if isinstance(rendered, Refusal):  # cannot be rendered again: as decided now
            return fresh
        rendered.unless_there = (
            fresh
            if isinstance(fresh, Refusal)
            else Transient(
                f"handed over on {row.channel} by an attempt that died, and not there: "
                f"decided again ({fresh.channel} now)"
            )
        )
        return rendered

    def _render(
        self,
        facts: Facts,
        req: MessageRequest,
        customer: CustomerFields,
        templates: Templates,
        channel: str,
        address: str,
    ) -> Decision | Refusal:
        assert customer.id is not None
        context = {
            **customer_context(customer, facts.offers.get(customer.id)),
            "site_url": self.settings.site_url,
            **req.context,
        }
        link = ""
        if channel == Channel.email:
            link = url_for(self.settings, customer.external_id, channel, req.campaign)
            context["unsubscribe_url"] = link
            context["preferences_url"] = preferences_url(self.settings, customer.external_id)
        try:
            if channel == Channel.email:
                locale, content = templates.email(req.template, customer.locale, context)
                content = self._tracked(req, content, link)
                return Decision(channel, address, locale, content, link)
            locale, sms = templates.sms(req.template, customer.locale, context)
            return Decision(channel, address, locale, sms)
        except RenderError as exc:
            return Refusal(MessageState.failed, f"template error: {exc}")

    def _tracked(self, req: MessageRequest, content: RenderedEmail, kept: str) -> RenderedEmail:
        """The email with its links rewritten and its open pixel, as tracking is set."""
        clicks = req.tracking and self.settings.tracking_clicks
        opens = req.tracking and self.settings.tracking_opens
        if not (clicks or opens):
            return content
        rewriter = Rewriter(self.settings, req.key, {kept})
        return RenderedEmail(
            subject=content.subject,
            html=rewriter.html(content.html, clicks=clicks, opens=opens),
            text=rewriter.text(content.text) if clicks else content.text,
        )

    def _held(self, conn: Connection, ops: list[Op]) -> dict[str, str]:
        """Which of the ops' rows this attempt still holds, locked until the commit."""
        held: dict[str, str] = {}
        for part in chunked(sorted({p.key for p, _ in ops})):
            for key, state in conn.execute(
                sa_select(_LEDGER.c.key, _LEDGER.c.state)
                .where(_LEDGER.c.key.in_(part), _LEDGER.c.claimed_by == self.attempt_id)
                .with_for_update()
            ).all():
                held[key] = state
        return held

    def _plan(self, ops: list[Op], held: dict[str, str] | None, now: datetime) -> _Plan:
        """This attempt's hand-overs and answers as ledger rows to write (``_write_plans``),
        each op's result, and the state each message will be in once they are committed.

        Each change is a compare-and-set on this attempt's claim (``held``: the rows it
        still holds, when that had to be looked up), so a claim that another attempt took
        over (it presumed this one dead) is left to the taker.
        """
        plan = _Plan(self, [None] * len(ops))
        results = plan.results
        for i, (p, answer) in enumerate(ops):
            if isinstance(answer, Leave):  # the claim stays, to be reconciled
                error = answer.error
                results[i] = (
                    error if isinstance(error, Transient | InDoubt) else InDoubt(error.reason)
                )
                continue
            was = p.state if held is None else held.get(p.key)
            if answer is None:
                if was != MessageState.claimed:
                    plan.taken.append((i, p.key))
                    continue
                plan.hands.append({"k": p.key, "me": self.attempt_id, "now": now})
                plan.wrote.append((p, MessageState.sending))
                results[i] = True
                continue
            if was not in (MessageState.claimed, MessageState.sending):
                plan.taken.append((i, p.key))
                continue
            change = self._change(answer, now)
            plan.changes.append(
                {"k": p.key, "was": was, "me": self.attempt_id, "now": now, **change}
            )
            plan.wrote.append((p, change["state"]))
            if isinstance(answer, Permanent) and answer.suppress:
                plan.suppressions.append((p, answer))
            if isinstance(answer, SendAccepted) and p.channel == Channel.sms and answer.provider_id:
                plan.sms_sent.append(answer.provider_id)
            if isinstance(answer, Transient):
                results[i] = answer
                continue
            if not isinstance(answer, Unknowable | Refusal):  # (a refusal is no contact)
                plan.contacts.append(self._contact(p, change["state"], change["reason"]))
            results[i] = MessageOutcome(
                key=p.key,
                state=change["state"],
                channel=p.channel,
                reason=change["reason"],
                provider_id=change["provider_id"],
            )
        return plan

    def _change(self, answer: Answer, now: datetime) -> dict[str, Any]:
        """The ledger columns an answer sets."""
        change: dict[str, Any] = {
            "state": MessageState.failed,
            "reason": "",
            "provider_id": "",
            "sent_at": None,
            "claimed_by": self.attempt_id,
        }
        if isinstance(answer, SendAccepted):
            change.update(
                state=MessageState.sent,
                provider_id=answer.provider_id,
                sent_at=now,
                reason=answer.note,
            )
        elif isinstance(answer, Refusal):
            change.update(state=answer.state, reason=answer.reason[:1000])
        elif isinstance(answer, Unknowable):
            change["reason"] = IN_DOUBT
        elif isinstance(answer, Permanent):
            change["reason"] = answer.reason[:1000]
        elif isinstance(answer, Transient):
            change.update(state=MessageState.queued, reason=answer.reason[:1000], claimed_by="")
        return change

    @staticmethod
    def _taken(session: Session, key: str) -> MessageOutcome | Transient:
        """What became of a message whose claim this attempt no longer holds."""
        row = session.exec(select(Message).where(Message.key == key)).one()
        if MessageState(row.state).final:
            return _outcome(row)
        return Transient(f"{key} is held by another attempt ({row.claimed_by or row.state})")

    @staticmethod
    def _contact(p: Prepared, state: str, reason: str) -> dict[str, Any]:
        """The message in the customer's contact history."""
        detail = {"template": p.req.template}
        if reason:
            detail["reason"] = reason
        return {
            "customer_id": p.customer_pk,
            "channel": p.channel,
            "direction": Direction.outbound,
            "kind": "message",
            "outcome": state,
            "journey": p.req.journey,
            "campaign": p.req.campaign,
            "message_key": p.key,
            "detail": detail,
            "occurred_at": utcnow(),
        }


__all__ = ["DEFERRED", "InDoubt", "Prepared", "Sender", "customer_context"]
