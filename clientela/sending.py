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
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from activities.contracts import MessageOutcome, MessageRequest
from clientela.channels import InDoubt, Permanent, SendAccepted, Transient
from clientela.channels.email import EmailTransport, build_email, message_id_for
from clientela.channels.sms import SmsTransport
from clientela.customers import UnknownCustomer, consents, get_customer, is_suppressed, suppress
from clientela.db import session_scope
from clientela.settings import Settings
from clientela.templating import RenderedEmail, RenderedSms, RenderError, Templates
from clientela.timeutil import as_utc, utcnow
from clientela.unsubscribe import url_for
from models import (
    Channel,
    Customer,
    CustomerDecision,
    Direction,
    Interaction,
    Message,
    MessageState,
    RuleVersion,
)
from rules.service import rules_of

RECONCILED = "reconciled: the provider had accepted it before an attempt was interrupted"


@dataclass
class Prepared:
    """A message claimed by this attempt, ready for its provider."""

    key: str
    customer_pk: int
    channel: str
    address: str
    content: RenderedEmail | RenderedSms
    reconcile: bool = False  # a dead attempt's claim: ask the provider first
    claimed_at: Any = None


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

    def prepared(self, key: str, customer_pk: int, reconcile: bool, claimed_at: Any) -> Prepared:
        return Prepared(
            key=key,
            customer_pk=customer_pk,
            channel=self.channel,
            address=self.address,
            content=self.content,
            reconcile=reconcile,
            claimed_at=claimed_at,
        )


def _outcome(row: Message) -> MessageOutcome:
    return MessageOutcome(
        key=row.key,
        state=row.state,
        channel=row.channel,
        reason=row.reason,
        provider_id=row.provider_id,
    )


def customer_context(customer: Customer) -> dict[str, Any]:
    """Merge fields a template may use."""
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
            "attributes": dict(customer.attributes),
        }
    }


def tier_channels(*, session: Session, customer: Customer) -> tuple[str, list[str]] | None:
    """(tier, channels) its tier's policy allows; None before the rules decided a tier."""
    decision = session.get(CustomerDecision, customer.id)
    if decision is None:
        return None
    version = session.get(RuleVersion, decision.rule_version_id)
    if version is None:
        return None
    policy = rules_of(version).spec.policies.get(decision.tier)
    return (decision.tier, list(policy.channels)) if policy else None


def choose_channel(
    *, session: Session, customer: Customer, requested: str | None
) -> tuple[str, str] | tuple[None, str]:
    """(channel, address) allowed for this customer, or (None, why not)."""
    assert customer.id is not None
    granted = consents(session=session, customer_id=customer.id)
    if requested:
        order = [requested]
    else:
        preferred = customer.preferred_channel or Channel.email
        order = [preferred] + [c.value for c in Channel if c.value != preferred]
    allowed = tier_channels(session=session, customer=customer)
    reasons = []
    for channel in order:
        address = customer.email if channel == Channel.email else customer.phone
        consent = granted.get(channel)
        if allowed is not None and channel not in allowed[1]:
            reasons.append(f"{channel}: not a channel of tier {allowed[0]}")
        elif consent is None or not consent.granted:
            reasons.append(f"{channel}: no consent")
        elif not address:
            reasons.append(f"{channel}: no address")
        elif (hit := is_suppressed(session=session, channel=channel, address=address)) is not None:
            reasons.append(f"{channel}: address suppressed ({hit.reason})")
        else:
            return channel, address
    return None, "; ".join(reasons)


class Sender:
    """Sends messages through the ledger protocol; one instance per batch."""

    def __init__(
        self, settings: Settings, attempt_id: str, templates: Templates | None = None
    ) -> None:
        self.settings = settings
        self.attempt_id = attempt_id
        # Share one Templates per process where possible: it caches compiled templates.
        self.templates = templates or Templates(settings.templates_dir, settings.default_locale)
        self._email: EmailTransport | None = None
        self._sms: SmsTransport | None = None

    @property
    def email(self) -> EmailTransport:
        if self._email is None:
            self._email = EmailTransport(self.settings)
        return self._email

    @property
    def sms(self) -> SmsTransport:
        if self._sms is None:
            self._sms = SmsTransport(self.settings)
        return self._sms

    async def close(self) -> None:
        for transport in (self._email, self._sms):
            if transport is not None:
                await transport.close()

    # -- database steps (run in a thread: the driver blocks) --------------------------------

    def _prepare(self, req: MessageRequest) -> MessageOutcome | Prepared:
        with session_scope(self.settings.db_url) as session:
            row = session.exec(select(Message).where(Message.key == req.key)).first()
            if row is not None and MessageState(row.state).final:
                return _outcome(row)
            try:
                customer = get_customer(session=session, external_id=req.customer_id)
            except UnknownCustomer as exc:
                # No ledger row can point at a customer who does not exist.
                return MessageOutcome(key=req.key, state=MessageState.failed, reason=str(exc))
            assert customer.id is not None
            decision = self._decide(session, req, customer)
            now = utcnow()
            if row is None:
                return self._reserve(session, req, customer.id, decision, now)
            if isinstance(decision, Refusal):
                row.state, row.reason, row.updated_at = decision.state, decision.reason, now
                session.add(row)
                return _outcome(row)
            if row.state == MessageState.sending:
                claimed_at = as_utc(row.claimed_at) or now
                if (
                    now - claimed_at < self.settings.send_lease
                    and row.claimed_by != self.attempt_id
                ):
                    raise Transient(
                        f"{req.key} is being sent by another attempt ({row.claimed_by})"
                    )
                held_by = Message.claimed_by == row.claimed_by
                reconcile = True
            else:
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
                raise Transient(f"{req.key} was claimed concurrently; will look again")
            return decision.prepared(req.key, customer.id, reconcile, claimed_at)

    def _reserve(
        self,
        session: Session,
        req: MessageRequest,
        customer_pk: int,
        decision: Decision | Refusal,
        now: datetime,
    ) -> MessageOutcome | Prepared:
        """A new key: its row is written already claimed (or already refused), in one commit."""
        row = Message(
            key=req.key,
            customer_id=customer_pk,
            channel=req.channel or Channel.email,
            template=req.template,
            journey=req.journey,
            campaign=req.campaign,
            created_at=now,
            updated_at=now,
        )
        if isinstance(decision, Refusal):
            row.state, row.reason = decision.state, decision.reason
        else:
            row.channel, row.address, row.locale = (
                decision.channel,
                decision.address,
                decision.locale,
            )
            row.state, row.claimed_by, row.claimed_at = MessageState.sending, self.attempt_id, now
            row.attempts = 1
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:
            raise Transient(f"{req.key} was reserved concurrently; will look again") from None
        if isinstance(decision, Refusal):
            return _outcome(row)
        return decision.prepared(req.key, customer_pk, False, now)

    def _decide(
        self, session: Session, req: MessageRequest, customer: Customer
    ) -> Decision | Refusal:
        """Which channel and address, and the rendered content; or why nothing is sent."""
        channel, address_or_reason = choose_channel(
            session=session, customer=customer, requested=req.channel
        )
        if channel is None:
            return Refusal(MessageState.suppressed, address_or_reason)
        context = {**customer_context(customer), **req.context}
        if channel == Channel.email:
            context["unsubscribe_url"] = url_for(
                self.settings, customer.external_id, channel, req.campaign
            )
        try:
            if channel == Channel.email:
                locale, content = self.templates.email(req.template, customer.locale, context)
                return Decision(channel, address_or_reason, locale, content)
            locale, sms = self.templates.sms(req.template, customer.locale, context)
            return Decision(channel, address_or_reason, locale, sms)
        except RenderError as exc:
            return Refusal(MessageState.failed, f"template error: {exc}")

    def _record(
        self,
        p: Prepared,
        result: SendAccepted | Permanent | Transient,
        req: MessageRequest,
    ) -> MessageOutcome:
        with session_scope(self.settings.db_url) as session:
            row = session.exec(select(Message).where(Message.key == p.key)).one()
            if row.state != MessageState.sending or row.claimed_by != self.attempt_id:
                # Our claim was taken over (we were presumed dead); the taker decides.
                return _outcome(row)
            now = utcnow()
            row.updated_at = now
            if isinstance(result, SendAccepted):
                row.state, row.provider_id, row.sent_at, row.reason = (
                    MessageState.sent,
                    result.provider_id,
                    now,
                    result.note,
                )
            elif isinstance(result, Permanent):
                row.state, row.reason = MessageState.failed, result.reason
                if result.suppress:
                    suppress(
                        session=session, channel=p.channel, address=p.address, reason=result.reason
                    )
            else:
                row.state, row.reason, row.claimed_by = MessageState.queued, result.reason, ""
            session.add(row)
            if row.state in (MessageState.sent, MessageState.failed):
                session.add(
                    Interaction(
                        customer_id=p.customer_pk,
                        channel=p.channel,
                        direction=Direction.outbound,
                        kind="message",
                        outcome=row.state,
                        journey=req.journey,
                        campaign=req.campaign,
                        message_key=p.key,
                        detail={"template": req.template, "reason": row.reason}
                        if row.reason
                        else {"template": req.template},
                    )
                )
            return _outcome(row)

    def _mark_in_doubt(self, p: Prepared, reason: str) -> MessageOutcome:
        with session_scope(self.settings.db_url) as session:
            row = session.exec(select(Message).where(Message.key == p.key)).one()
            if row.state == MessageState.sending and row.claimed_by == self.attempt_id:
                row.state = MessageState.failed
                row.reason = reason
                row.updated_at = utcnow()
                session.add(row)
            return _outcome(row)

    # -- the protocol ------------------------------------------------------------------------

    async def deliver(self, req: MessageRequest) -> MessageOutcome:
        """Send one message at most once. Raises Transient or InDoubt to ask for a retry."""
        prepared = await asyncio.to_thread(self._prepare, req)
        if isinstance(prepared, MessageOutcome):
            return prepared
        if prepared.reconcile:
            found = await self._reconcile(prepared)
            if found is None:
                return await asyncio.to_thread(
                    self._mark_in_doubt,
                    prepared,
                    "in doubt: an attempt stopped after handing the message to the provider, "
                    "which cannot say whether it arrived; not resent so that it is never "
                    "received twice",
                )
            if found:
                return await asyncio.to_thread(
                    self._record, prepared, SendAccepted(found, note=RECONCILED), req
                )
        try:
            accepted = await self._send(prepared, req)
        except (Permanent, Transient) as exc:
            outcome = await asyncio.to_thread(self._record, prepared, exc, req)
            if isinstance(exc, Transient):
                raise
            return outcome
        return await asyncio.to_thread(self._record, prepared, accepted, req)

    async def _send(self, p: Prepared, req: MessageRequest) -> SendAccepted:
        if p.channel == Channel.email:
            assert isinstance(p.content, RenderedEmail)
            link = url_for(self.settings, req.customer_id, p.channel, req.campaign)
            message = build_email(
                key=p.key,
                sender=self.email.sender,
                to=p.address,
                content=p.content,
                headers={
                    # RFC 2369 and RFC 8058: mail clients offer a one-click unsubscribe.
                    "List-Unsubscribe": f"<{link}>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                },
            )
            return await self.email.send(message)
        assert isinstance(p.content, RenderedSms)
        return await self.sms.send(to=p.address, body=p.content.body)

    async def _reconcile(self, p: Prepared) -> str | None:
        """Provider id if the provider has it, "" if it surely does not, None if unknowable."""
        if p.channel == Channel.email:
            message_id = message_id_for(p.key, self.email.sender)
            held = await self.email.was_accepted(message_id)
            return None if held is None else (message_id if held else "")
        assert isinstance(p.content, RenderedSms)
        since = (as_utc(p.claimed_at) or utcnow()) - timedelta(minutes=1)
        return await self.sms.find(to=p.address, body=p.content.body, since=since) or ""


__all__ = ["InDoubt", "Prepared", "Sender", "choose_channel", "customer_context"]
