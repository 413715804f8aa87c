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
paced by ``email_rate`` / ``sms_rate``), and one transaction records every answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, update
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from activities.contracts import DEFERRED, MessageOutcome, MessageRequest
from clientela.channels import InDoubt, Permanent, SendAccepted, SendError, Transient
from clientela.channels.email import EmailTransport, build_email, message_id_for
from clientela.channels.sms import SmsTransport
from clientela.customers import suppress
from clientela.db import session_scope
from clientela.eligibility import Deferral, Facts, chunked
from clientela.ratelimit import limiter
from clientela.settings import Settings
from clientela.templating import RenderedEmail, RenderedSms, RenderError, Templates
from clientela.timeutil import as_utc, utcnow
from clientela.unsubscribe import url_for
from models import Channel, Customer, Direction, Interaction, Message, MessageState

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


@dataclass
class Unknowable:
    """The provider cannot say whether it has the message: fail it, never resend."""


@dataclass
class Leave:
    """Leave the claim as it is (the provider may have the message); ``error`` says why."""

    error: SendError


Answer = SendAccepted | Permanent | Transient | Unknowable | Leave


def _outcome(row: Message) -> MessageOutcome:
    return MessageOutcome(
        key=row.key,
        state=row.state,
        channel=row.channel,
        reason=row.reason,
        provider_id=row.provider_id,
    )


def customer_context(customer: Customer, offers: list[str] | None = None) -> dict[str, Any]:
    """Merge fields a template may use (``offers``: the rules' next best offers, best first)."""
    return {
        "customer": {
            "id": customer.external_id,
            "first_name": customer.first_name,
            "last_name": customer.last_name,
            "full_name": customer.full_name,
            "email": customer.email,
            "phone": customer.phone,
            "locale": customer.locale,
            "tier": customer.tier,
            "segments": list(customer.segments),
            "offers": list(offers or []),
            "attributes": dict(customer.attributes),
        }
    }


class Sender:
    """Sends messages through the ledger protocol; one instance per activity attempt."""

    def __init__(
        self, settings: Settings, attempt_id: str, templates: Templates | None = None
    ) -> None:
        self.settings = settings
        self.attempt_id = attempt_id
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
                transport = EmailTransport(self.settings)
                self._open_email.append(transport)
            try:
                yield transport
            finally:
                self._idle_email.append(transport)

    async def close(self) -> None:
        for transport in self._open_email:
            await transport.close()
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
        prepared = await asyncio.to_thread(self._prepare_many, reqs)
        claimed = [p for p in prepared if isinstance(p, Prepared)]
        answers = await asyncio.gather(*(self._attempt(p) for p in claimed))
        recorded = await asyncio.to_thread(
            self._record_many, list(zip(claimed, answers, strict=True))
        )
        results: list[MessageOutcome | Transient | InDoubt] = []
        for item in prepared:
            if isinstance(item, Prepared):
                results.append(recorded[item.key])
            else:
                results.append(item)
        return results

    async def _attempt(self, p: Prepared) -> Answer:
        if p.reconcile:
            try:
                found = await self._reconcile(p)
            except Transient as exc:
                return Leave(exc)  # could not ask: the claim waits for the next attempt
            if found is None:
                return Unknowable()
            if found:
                return SendAccepted(found, note=RECONCILED)
        try:
            await limiter(p.channel, self._rate(p.channel)).wait()
            return await self._send(p)
        except (Permanent, Transient) as exc:
            return exc
        except InDoubt as exc:
            return Leave(exc)

    def _rate(self, channel: str) -> float:
        return self.settings.email_rate if channel == Channel.email else self.settings.sms_rate

    async def _send(self, p: Prepared) -> SendAccepted:
        req = p.req
        if p.channel == Channel.email:
            assert isinstance(p.content, RenderedEmail)
            link = p.unsubscribe_url or url_for(
                self.settings, req.customer_id, p.channel, req.campaign
            )
            message = build_email(
                key=p.key,
                sender=self.settings.mail_from,
                to=p.address,
                content=p.content,
                headers={
                    # RFC 2369 and RFC 8058: mail clients offer a one-click unsubscribe.
                    "List-Unsubscribe": f"<{link}>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                },
            )
            async with self._email() as transport:
                return await transport.send(message)
        assert isinstance(p.content, RenderedSms)
        async with self._slot(Channel.sms):
            return await self.sms.send(to=p.address, body=p.content.body)

    async def _reconcile(self, p: Prepared) -> str | None:
        """Provider id if the provider has it, "" if it surely does not, None if unknowable."""
        if p.channel == Channel.email:
            message_id = message_id_for(p.key, self.settings.mail_from)
            async with self._email() as transport:
                held = await transport.was_accepted(message_id)
            return None if held is None else (message_id if held else "")
        assert isinstance(p.content, RenderedSms)
        since = (as_utc(p.claimed_at) or utcnow()) - timedelta(minutes=1)
        return await self.sms.find(to=p.address, body=p.content.body, since=since) or ""

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
            customers: dict[str, Customer] = {}
            for part in chunked(sorted({r.customer_id for r in reqs})):
                for c in session.exec(
                    select(Customer).where(col(Customer.external_id).in_(part))
                ).all():
                    customers[c.external_id] = c
            facts = Facts(session, customers.values(), now, deciding=keys)
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
                decision = self._decide(facts, req, customer)
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
        customer: Customer,
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
            row["reason"] = decision.reason
            return self._deferred(req.key, decision)
        row.update(
            channel=decision.channel,
            address=decision.address,
            locale=decision.locale,
            state=MessageState.sending,
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
        customer: Customer,
        decision: Decision | Refusal | Deferral,
        now: datetime,
    ) -> MessageOutcome | Prepared | Transient:
        """An existing row, queued or claimed by an attempt that may have died."""
        assert customer.id is not None
        if isinstance(decision, Refusal):
            row.state, row.reason, row.updated_at = decision.state, decision.reason, now
            session.add(row)
            return _outcome(row)
        if row.state == MessageState.sending:
            claimed_at = as_utc(row.claimed_at) or now
            if now - claimed_at < self.settings.send_lease and row.claimed_by != self.attempt_id:
                return Transient(f"{req.key} is being sent by another attempt ({row.claimed_by})")
            if isinstance(decision, Deferral):
                return self._deferred(req.key, decision)  # reconciled when it may go
            held_by = Message.claimed_by == row.claimed_by
            reconcile = True
        else:
            if isinstance(decision, Deferral):
                row.reason, row.updated_at = decision.reason, now
                session.add(row)
                return self._deferred(req.key, decision)
            held_by = Message.state == MessageState.queued
            reconcile, claimed_at = False, now
        claimed = session.execute(
            update(Message)
            .where(Message.key == req.key, held_by)  # type: ignore[arg-type]
            .values(
                state=MessageState.sending,
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
        return self._prepared(req, customer.id, decision, reconcile, claimed_at)

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
        self, facts: Facts, req: MessageRequest, customer: Customer
    ) -> Decision | Refusal | Deferral:
        """Which channel and address, and the rendered content; or why not (now)."""
        channel, address_or_reason = facts.choose_channel(customer, req.channel, req.service)
        if channel is None:
            return Refusal(MessageState.suppressed, address_or_reason)
        deferral = facts.quiet(customer, channel, self.quiet_hours)
        if deferral is not None:
            return deferral
        assert customer.id is not None
        context = {**customer_context(customer, facts.offers.get(customer.id)), **req.context}
        link = ""
        if channel == Channel.email:
            link = url_for(self.settings, customer.external_id, channel, req.campaign)
            context["unsubscribe_url"] = link
        try:
            if channel == Channel.email:
                locale, content = self.templates.email(req.template, customer.locale, context)
                return Decision(channel, address_or_reason, locale, content, link)
            locale, sms = self.templates.sms(req.template, customer.locale, context)
            return Decision(channel, address_or_reason, locale, sms)
        except RenderError as exc:
            return Refusal(MessageState.failed, f"template error: {exc}")

    def _record_many(
        self, answered: list[tuple[Prepared, Answer]]
    ) -> dict[str, MessageOutcome | Transient | InDoubt]:
        """Every provider answer of the batch, in one transaction."""
        out: dict[str, MessageOutcome | Transient | InDoubt] = {}
        if not answered:
            return out
        now = utcnow()
        with session_scope(self.settings.db_url) as session:
            held: dict[str, tuple[str, str, str, str, str]] = {}
            for part in chunked([p.key for p, _ in answered]):
                for key, state, claimed_by, channel, reason, provider_id in session.execute(
                    sa_select(
                        col(Message.key),
                        col(Message.state),
                        col(Message.claimed_by),
                        col(Message.channel),
                        col(Message.reason),
                        col(Message.provider_id),
                    )
                    .where(col(Message.key).in_(part))
                    .with_for_update()
                ).all():
                    held[key] = (state, claimed_by, channel, reason, provider_id)
            changes: list[dict[str, Any]] = []
            contacts: list[dict[str, Any]] = []
            for p, answer in answered:
                state, claimed_by, channel, reason, provider_id = held[p.key]
                if state != MessageState.sending or claimed_by != self.attempt_id:
                    # Our claim was taken over (we were presumed dead); the taker decides.
                    out[p.key] = MessageOutcome(p.key, state, channel, reason, provider_id)
                    continue
                if isinstance(answer, Leave):
                    error = answer.error
                    out[p.key] = (
                        error if isinstance(error, Transient | InDoubt) else InDoubt(error.reason)
                    )
                    continue
                change: dict[str, Any] = {
                    "k": p.key,
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
                elif isinstance(answer, Unknowable):
                    change["reason"] = IN_DOUBT
                elif isinstance(answer, Permanent):
                    change["reason"] = answer.reason
                    if answer.suppress:
                        suppress(
                            session=session,
                            channel=p.channel,
                            address=p.address,
                            reason=answer.reason,
                        )
                else:
                    change.update(state=MessageState.queued, reason=answer.reason, claimed_by="")
                    out[p.key] = answer
                changes.append(change)
                if change["state"] != MessageState.queued and not isinstance(answer, Unknowable):
                    contacts.append(self._contact(p, change["state"], change["reason"]))
                if p.key not in out:
                    out[p.key] = MessageOutcome(
                        key=p.key,
                        state=change["state"],
                        channel=p.channel,
                        reason=change["reason"],
                        provider_id=change["provider_id"],
                    )
            if changes:
                table = Message.__table__  # type: ignore[attr-defined]
                session.connection().execute(
                    update(table)
                    .where(
                        table.c.key == bindparam("k"),
                        table.c.state == MessageState.sending,
                        table.c.claimed_by == self.attempt_id,
                    )
                    .values(
                        state=bindparam("state"),
                        reason=bindparam("reason"),
                        provider_id=bindparam("provider_id"),
                        sent_at=bindparam("sent_at"),
                        claimed_by=bindparam("claimed_by"),
                        updated_at=now,
                    ),
                    changes,
                )
            if contacts:
                session.connection().execute(
                    Interaction.__table__.insert(),  # type: ignore[attr-defined]
                    contacts,
                )
        return out

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
