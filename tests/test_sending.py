"""The sending protocol against the real SMTP catcher and SMS sink, on both databases."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import timedelta

import pytest
from sqlmodel import select

from activities.contracts import MessageRequest
from clientela.db import session_scope
from clientela.devstack.sms_sink import SmsFault, SmsSink
from clientela.devstack.smtp_catcher import Fault, SmtpCatcher, read_outbox
from clientela.messaging.channels import Permanent, Transient
from clientela.messaging.channels.email import (
    EmailPool,
    EmailTransport,
    OutgoingEmail,
    message_id_for,
)
from clientela.messaging.sending import Sender
from clientela.settings import Settings
from clientela.timeutil import utcnow
from models import Interaction, Message, Suppression
from tests.factories import make_customer


def ledger(settings: Settings, key: str) -> Message:
    with session_scope(settings.db_url) as session:
        return session.exec(select(Message).where(Message.key == key)).one()


async def deliver(settings: Settings, req: MessageRequest, attempt: str = "t/1/1"):
    sender = Sender(settings, attempt)
    try:
        return await sender.deliver(req)
    finally:
        await sender.close()


def request(customer: str, key: str = "k1", **kw) -> MessageRequest:
    return MessageRequest(key=key, customer_id=customer, template="welcome", journey="test", **kw)


async def test_email_is_sent_once_and_recorded(settings: Settings, catcher: SmtpCatcher) -> None:
    cid = make_customer(settings.db_url, preferred_channel="email", first_name="Lucía")
    first = await deliver(settings, request(cid))
    again = await deliver(settings, request(cid), attempt="t/1/2")
    assert first.state == again.state == "sent"
    outbox = read_outbox(settings.outbox_dir)
    assert len(outbox) == 1
    assert outbox[0]["subject"] == "¡Bienvenido/a, Lucía!"  # Spanish customer, Spanish template
    assert outbox[0]["message_id"] == message_id_for("k1", settings.mail_from)
    raw = (settings.outbox_dir / outbox[0]["file"]).read_text()
    assert "multipart/alternative" in raw
    with session_scope(settings.db_url) as session:
        history = session.exec(select(Interaction).where(Interaction.kind == "message")).all()
    assert [(h.channel, h.outcome, h.journey) for h in history] == [("email", "sent", "test")]


async def test_sms_goes_through_the_twilio_client(settings: Settings, sms_sink: SmsSink) -> None:
    cid = make_customer(settings.db_url, preferred_channel="sms", phone="+34611222333")
    outcome = await deliver(settings, request(cid))
    assert outcome.state == "sent" and outcome.channel == "sms"
    assert outcome.provider_id.startswith("SM")
    assert [m["to"] for m in sms_sink.messages] == ["+34611222333"]
    assert "Responde STOP" in sms_sink.messages[0]["body"]


async def test_no_consent_means_no_message_and_a_recorded_reason(settings: Settings) -> None:
    cid = make_customer(settings.db_url, email_consent=False, sms_consent=False)
    outcome = await deliver(settings, request(cid))
    assert outcome.state == "suppressed"
    assert "email: no consent" in outcome.reason and "sms: no consent" in outcome.reason
    assert read_outbox(settings.outbox_dir) == []
    assert ledger(settings, "k1").state == "suppressed"


async def test_falls_back_to_the_other_consented_channel(
    settings: Settings, sms_sink: SmsSink
) -> None:
    cid = make_customer(settings.db_url, preferred_channel="email", email_consent=False)
    outcome = await deliver(settings, request(cid))
    assert outcome.channel == "sms" and outcome.state == "sent"
    assert len(sms_sink.messages) == 1


async def test_smtp_5xx_is_permanent(settings: Settings, catcher: SmtpCatcher) -> None:
    cid = make_customer(settings.db_url, preferred_channel="email", email="gone@example.com")
    catcher.handler.faults.append(Fault(pattern="gone@", code=550, message="5.1.1 no mailbox"))
    outcome = await deliver(settings, request(cid))
    assert outcome.state == "failed"
    assert "SMTP 550" in outcome.reason and "no mailbox" in outcome.reason
    # Recorded once, never retried.
    assert (await deliver(settings, request(cid), attempt="t/1/2")).state == "failed"
    assert read_outbox(settings.outbox_dir) == []


async def test_a_recipient_refused_at_rcpt_fails_alone_and_is_not_in_doubt(
    settings: Settings, catcher: SmtpCatcher
) -> None:
    """Against a relay that cannot be asked: the refusal is the relay's answer, recorded at
    once; the connection goes on with the others."""
    relay = settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": catcher.port})
    refused = make_customer(settings.db_url, preferred_channel="email", email="nobody@example.com")
    others = [make_customer(settings.db_url, preferred_channel="email") for _ in range(3)]
    catcher.handler.faults.append(
        Fault(pattern="nobody@", code=550, message="5.1.1 no such user", stage="rcpt")
    )
    sender = Sender(relay, "rcpt/1/1")
    try:
        results = await sender.deliver_many([request(c, key=f"r:{c}") for c in [refused, *others]])
    finally:
        await sender.close()
    assert [getattr(r, "state", r) for r in results] == ["failed", "sent", "sent", "sent"]
    row = ledger(settings, f"r:{refused}")
    assert "SMTP 550 at envelope" in row.reason and "in doubt" not in row.reason
    assert len(read_outbox(settings.outbox_dir)) == 3


async def test_refusals_of_the_envelope_on_a_greeted_connection(
    settings: Settings, catcher: SmtpCatcher
) -> None:
    """After its first message a connection writes MAIL FROM and RCPT TO itself: a refused
    sender or recipient is still the relay's answer (permanent or transient, at the
    envelope), the connection goes on, and what arrives carries the envelope as written."""
    relay = settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": catcher.port})
    catcher.handler.faults += [
        Fault(pattern="^nobody@", code=550, message="5.1.1 no such user", stage="rcpt"),
        Fault(pattern="^busy@", code=451, message="4.3.0 try later", stage="rcpt", times=1),
        Fault(pattern="^blocked@", code=553, message="5.7.1 not allowed", stage="mail"),
    ]
    transport = EmailTransport(relay)

    def mail(n: int, to: str | None = None, sender: str | None = None) -> OutgoingEmail:
        plain = _plain_mail(relay, n)
        return OutgoingEmail(
            sender=sender or "news@example.com",
            recipient=to or plain.recipient,
            message_id=plain.message_id,
            data=plain.data,
        )

    try:
        await transport.send(mail(1))  # greets the server
        with pytest.raises(Permanent, match=re.escape("SMTP 550 at envelope: 5.1.1 no such user")):
            await transport.send(mail(2, to="nobody@example.com"))
        with pytest.raises(Transient, match=re.escape("SMTP 451 at envelope: 4.3.0 try later")):
            await transport.send(mail(3, to="busy@example.com"))
        await transport.send(mail(4, to="busy@example.com"))  # the next try is taken
        with pytest.raises(Permanent, match=re.escape("SMTP 553 at envelope: 5.7.1 not allowed")):
            await transport.send(mail(5, sender="blocked@example.com"))
        await transport.send(mail(6, sender="bounces+tag.1@example.com"))
    finally:
        await transport.close()
    arrived = read_outbox(relay.outbox_dir)
    assert [(m["from"], m["to"]) for m in arrived] == [
        ("news@example.com", ["kept1@example.com"]),
        ("news@example.com", ["busy@example.com"]),
        ("bounces+tag.1@example.com", ["kept6@example.com"]),
    ]
    assert len({m["peer"] for m in arrived}) == 1  # one connection throughout


async def test_smtp_4xx_is_transient_then_succeeds(
    settings: Settings, catcher: SmtpCatcher
) -> None:
    cid = make_customer(settings.db_url, preferred_channel="email", email="busy@example.com")
    catcher.handler.faults.append(Fault(pattern="busy@", code=451, message="try later", times=1))
    with pytest.raises(Transient, match="SMTP 451"):
        await deliver(settings, request(cid))
    assert ledger(settings, "k1").state == "queued"
    assert (await deliver(settings, request(cid), attempt="t/1/2")).state == "sent"
    assert len(read_outbox(settings.outbox_dir)) == 1


async def test_unreachable_smtp_server_is_transient(settings: Settings) -> None:
    cid = make_customer(settings.db_url, preferred_channel="email")
    closed = settings.model_copy(update={"catcher_port": 1})
    with pytest.raises(Transient, match="cannot reach SMTP server"):
        await deliver(closed, request(cid))
    assert ledger(settings, "k1").state == "queued"


async def test_twilio_opt_out_suppresses_the_number(settings: Settings, sms_sink: SmsSink) -> None:
    cid = make_customer(settings.db_url, preferred_channel="sms", phone="+15005550004")
    outcome = await deliver(settings, request(cid))
    assert outcome.state == "failed" and "21610" in outcome.reason
    with session_scope(settings.db_url) as session:
        rows = session.exec(select(Suppression)).all()
    assert [(r.channel, r.address) for r in rows] == [("sms", "+15005550004")]
    # The next message to that number is not attempted on SMS: email is used instead.
    second = await deliver(settings, request(cid, key="k2"))
    assert second.channel == "email" and second.state == "sent"
    assert sms_sink.messages == []


async def test_invalid_number_is_permanent(settings: Settings, sms_sink: SmsSink) -> None:
    cid = make_customer(
        settings.db_url, preferred_channel="sms", phone="+15005550001", email_consent=False
    )
    outcome = await deliver(settings, request(cid, channel="sms"))
    assert outcome.state == "failed" and "21211" in outcome.reason


async def test_twilio_429_is_transient(settings: Settings, sms_sink: SmsSink) -> None:
    cid = make_customer(settings.db_url, preferred_channel="sms", phone="+34699000111")
    sms_sink.faults.append(SmsFault(pattern=r"\+34699", status=429, code=20429, times=1))
    with pytest.raises(Transient, match="429"):
        await deliver(settings, request(cid))
    assert (await deliver(settings, request(cid), attempt="t/1/2")).state == "sent"
    assert len(sms_sink.messages) == 1


async def test_missing_merge_field_fails_with_file_and_line(settings: Settings) -> None:
    cid = make_customer(settings.db_url, preferred_channel="email", locale="en")
    broken = settings.templates_dir.parent / "tests" / "templates"
    custom = settings.model_copy(update={"templates_dir": broken})
    outcome = await deliver(custom, MessageRequest(key="kb", customer_id=cid, template="broken"))
    assert outcome.state == "failed"
    assert "broken/en/body.txt:3" in outcome.reason and "'coupon' is undefined" in outcome.reason


async def test_a_live_claim_is_not_taken_over(settings: Settings) -> None:
    cid = make_customer(settings.db_url, preferred_channel="email")
    await _leave_claimed(settings, cid, "k1", age=timedelta(0))
    with pytest.raises(Transient, match="being sent by another attempt"):
        await deliver(settings, request(cid), attempt="t/1/9")
    assert read_outbox(settings.outbox_dir) == []


async def test_dead_claim_already_accepted_is_reconciled_not_resent(
    settings: Settings, catcher: SmtpCatcher
) -> None:
    """An attempt died after the server accepted the message: found, recorded, not resent."""
    cid = make_customer(settings.db_url, preferred_channel="email")
    await deliver(settings, request(cid))
    _as_if_the_sender_died_before_recording(settings, "k1")
    outcome = await deliver(settings, request(cid), attempt="t/1/2")
    assert outcome.state == "sent"
    assert len(read_outbox(settings.outbox_dir)) == 1


async def test_dead_claim_never_accepted_is_sent_once(
    settings: Settings, catcher: SmtpCatcher
) -> None:
    cid = make_customer(settings.db_url, preferred_channel="email")
    await _leave_claimed(settings, cid, "k1", age=timedelta(minutes=5))
    outcome = await deliver(settings, request(cid), attempt="t/1/2")
    assert outcome.state == "sent"
    assert len(read_outbox(settings.outbox_dir)) == 1


async def test_dead_sms_claim_is_reconciled_through_the_api(
    settings: Settings, sms_sink: SmsSink
) -> None:
    cid = make_customer(settings.db_url, preferred_channel="sms", phone="+34622333444")
    first = await deliver(settings, request(cid))
    _as_if_the_sender_died_before_recording(settings, "k1")
    outcome = await deliver(settings, request(cid), attempt="t/1/2")
    assert outcome.state == "sent" and outcome.provider_id == first.provider_id
    assert len(sms_sink.messages) == 1


async def test_in_doubt_on_a_plain_relay_is_never_resent(settings: Settings) -> None:
    """Against an SMTP server that cannot be asked, a dead claim is failed as in doubt."""
    cid = make_customer(settings.db_url, preferred_channel="email")
    await _leave_claimed(settings, cid, "k1", age=timedelta(minutes=5))
    relay = settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": settings.catcher_port}
    )
    outcome = await deliver(relay, request(cid), attempt="t/1/2")
    assert outcome.state == "failed" and outcome.reason.startswith("in doubt")
    assert read_outbox(settings.outbox_dir) == []


@pytest.mark.parametrize("relay_has_it", [True, False])
async def test_a_dead_hand_over_is_asked_for_before_a_new_refusal(
    settings: Settings, catcher: SmtpCatcher, relay_has_it: bool
) -> None:
    """A worker dies after handing a message over, and its address is suppressed before the
    message is looked at again (its own hard bounce can do that). Whether it went is the
    relay's to say: if it has it, it was sent; if not, the suppression holds and nothing goes."""
    cid = make_customer(
        settings.db_url, preferred_channel="email", email="held@example.com", phone=None
    )
    await _handed_over_then_suppressed(settings, cid, "held@example.com", relay_has_it)
    outcome = await deliver(settings, request(cid), attempt="t/1/2")
    row = ledger(settings, "k1")
    if relay_has_it:
        assert (outcome.state, row.state) == ("sent", "sent")
        assert row.reason.startswith("reconciled") and row.claimed_by == "t/1/2"
    else:
        assert (outcome.state, row.state) == ("suppressed", "suppressed")
        assert "address suppressed (hard bounce)" in row.reason
    assert len(read_outbox(settings.outbox_dir)) == (1 if relay_has_it else 0)


@pytest.mark.parametrize("relay_has_it", [True, False])
async def test_a_dead_hand_over_is_not_moved_to_another_channel_before_it_is_asked_for(
    settings: Settings, catcher: SmtpCatcher, sms_sink: SmsSink, relay_has_it: bool
) -> None:
    """Decided afresh, a message whose email address was suppressed would go by SMS: had the
    email reached the relay, the customer would get it twice. It goes by SMS only once the
    relay is known not to have the email, and then by deciding again."""
    cid = make_customer(settings.db_url, preferred_channel="email", email="moved@example.com")
    await _handed_over_then_suppressed(settings, cid, "moved@example.com", relay_has_it)
    if relay_has_it:
        outcome = await deliver(settings, request(cid), attempt="t/1/2")
        assert (outcome.state, outcome.channel) == ("sent", "email")
        assert ledger(settings, "k1").reason.startswith("reconciled")
        assert len(read_outbox(settings.outbox_dir)) == 1 and sms_sink.messages == []
        return
    with pytest.raises(Transient, match="decided again"):
        await deliver(settings, request(cid), attempt="t/1/2")
    row = ledger(settings, "k1")
    assert (row.state, row.claimed_by) == ("queued", "")
    outcome = await deliver(settings, request(cid), attempt="t/1/3")
    assert (outcome.state, outcome.channel) == ("sent", "sms")
    assert read_outbox(settings.outbox_dir) == [] and len(sms_sink.messages) == 1


async def test_a_dead_hand_over_that_cannot_be_asked_for_and_may_not_go_is_in_doubt(
    settings: Settings, catcher: SmtpCatcher
) -> None:
    """Against a relay that cannot be asked, under the policy that would send it again: the
    address is suppressed now, so it is not sent again, and not called unsent either."""
    cid = make_customer(
        settings.db_url, preferred_channel="email", email="doubt@example.com", phone=None
    )
    await _handed_over_then_suppressed(settings, cid, "doubt@example.com", relay_has_it=False)
    relay = settings.model_copy(
        update={"smtp_host": "127.0.0.1", "smtp_port": catcher.port, "email_in_doubt": "resend"}
    )
    outcome = await deliver(relay, request(cid), attempt="t/1/2")
    assert outcome.state == "failed" and outcome.reason.startswith("in doubt")
    assert read_outbox(settings.outbox_dir) == []


async def _handed_over_then_suppressed(
    settings: Settings, cid: str, address: str, relay_has_it: bool
) -> None:
    """Message k1 handed over by an attempt that died (the relay has it, or not), and its
    address suppressed since."""
    from clientela.customers.records import suppress

    if relay_has_it:
        assert (await deliver(settings, request(cid))).state == "sent"
        _as_if_the_sender_died_before_recording(settings, "k1")
    else:
        await _leave_claimed(settings, cid, "k1", age=timedelta(minutes=5), address=address)
    with session_scope(settings.db_url) as session:
        suppress(session=session, channel="email", address=address, reason="hard bounce")


async def _leave_claimed(
    settings: Settings, cid: str, key: str, age: timedelta, address: str = ""
) -> None:
    """A ledger row as an attempt leaves it when it dies right after handing it over."""
    from clientela.customers.records import get_customer

    with session_scope(settings.db_url) as session:
        customer = get_customer(session=session, external_id=cid)
        assert customer.id is not None
        session.add(
            Message(
                key=key,
                customer_id=customer.id,
                channel="email",
                address=address,
                template="welcome",
                state="sending",
                claimed_by="dead/1/1",
                claimed_at=utcnow() - age,
            )
        )


def _as_if_the_sender_died_before_recording(settings: Settings, key: str) -> None:
    """Put a sent row back to how it stood between the provider's answer and our commit."""
    with session_scope(settings.db_url) as session:
        row = session.exec(select(Message).where(Message.key == key)).one()
        row.state, row.claimed_by = "sending", "dead/1/1"
        row.claimed_at = utcnow() - timedelta(minutes=5)
        session.add(row)


async def test_the_tier_policy_limits_the_channels(settings: Settings, sms_sink: SmsSink) -> None:
    """Tier C of the shipped rules may be contacted by email only."""
    from tests.test_rules_apply import apply_directly

    cid = make_customer(settings.db_url, preferred_channel="sms")
    only_sms = make_customer(settings.db_url, preferred_channel="sms", email_consent=False)
    decided = apply_directly(settings.db_url)
    assert decided[cid].tier == decided[only_sms].tier == "C"
    outcome = await deliver(settings, request(cid))
    assert outcome.channel == "email" and outcome.state == "sent"
    refused = await deliver(settings, request(only_sms, key="k2"))
    assert refused.state == "suppressed"
    assert "sms: not a channel of tier C" in refused.reason
    assert sms_sink.messages == []


async def test_a_worker_keeps_its_smtp_connection_between_activities(
    settings: Settings, catcher: SmtpCatcher
) -> None:
    """Two send activities of one worker share one SMTP session; when the server has closed
    the kept connection meanwhile, the next message goes out on a new one, at once."""
    pool = EmailPool(size=2)
    cids = [make_customer(settings.db_url, external_id=f"P{i}") for i in range(3)]

    async def activity(cid: str, key: str) -> str:
        sender = Sender(settings, f"{key}/1/1", pool=pool)
        try:
            return (await sender.deliver(request(cid, key=key))).state
        finally:
            await sender.close()

    assert await activity(cids[0], "p1") == "sent"
    assert await activity(cids[1], "p2") == "sent"
    first, second = read_outbox(settings.outbox_dir)
    assert first["peer"] and first["peer"] == second["peer"]
    # The server goes away and comes back on the same port: the kept connection is dead.
    catcher.stop()
    # (the fixture stops the catcher at the end: it is handed the new one's controller)
    catcher.controller = SmtpCatcher(settings.outbox_dir, port=catcher.port).start().controller
    try:
        assert await activity(cids[2], "p3") == "sent"  # not a Transient: no retry needed
    finally:
        await pool.close()
    third = read_outbox(settings.outbox_dir)[2]
    assert third["peer"] != first["peer"]
    assert ledger(settings, "p3").attempts == 1


async def test_a_connection_idle_too_long_is_not_reused(
    settings: Settings, catcher: SmtpCatcher
) -> None:
    pool = EmailPool(size=2, idle_seconds=0)
    cids = [make_customer(settings.db_url, external_id=f"I{i}") for i in range(2)]
    for i, cid in enumerate(cids):
        sender = Sender(settings, f"i{i}/1/1", pool=pool)
        try:
            assert (await sender.deliver(request(cid, key=f"i{i}"))).state == "sent"
        finally:
            await sender.close()
    first, second = read_outbox(settings.outbox_dir)
    assert first["peer"] != second["peer"]
    assert pool.take() is None


async def test_a_kept_connection_the_server_closed_is_replaced_before_the_envelope(
    settings: Settings, catcher: SmtpCatcher
) -> None:
    """The server drops a kept connection and the worker has not noticed yet: the envelope
    fails before anything was sent, so it is given once more on a new connection."""

    def mail(n: int) -> OutgoingEmail:
        return _plain_mail(settings, n)

    pool = EmailPool(size=1)
    transport = EmailTransport(settings)
    await transport.send(mail(1))
    await pool.give(transport)
    catcher.stop()  # this event loop has not run since: the client has not seen the close
    catcher.controller = SmtpCatcher(settings.outbox_dir, port=catcher.port).start().controller
    kept = pool.take()
    assert kept is transport
    await kept.send(mail(2))  # no Transient
    await pool.close()
    first, second = read_outbox(settings.outbox_dir)
    assert second["to"] == ["kept2@example.com"] and second["peer"] != first["peer"]


def _plain_mail(settings: Settings, n: int) -> OutgoingEmail:
    return OutgoingEmail(
        sender=settings.mail_from,
        recipient=f"kept{n}@example.com",
        message_id=f"<kept{n}@clientela.test>",
        data=(f"Subject: kept {n}\r\nMessage-ID: <kept{n}@clientela.test>\r\n\r\nhi\r\n").encode(),
    )


async def test_a_kept_connection_is_closed_when_idle_for_its_time(
    settings: Settings, catcher: SmtpCatcher
) -> None:
    """A worker with nothing more to send holds no connection open for long."""
    pool = EmailPool(size=1, idle_seconds=0.2)
    transport = EmailTransport(settings)
    await transport.send(_plain_mail(settings, 1))
    await pool.give(transport)
    assert transport.connected
    deadline = time.monotonic() + 10
    while transport.connected:
        assert time.monotonic() < deadline, "the idle connection was never closed"
        await asyncio.sleep(0.02)
    assert pool.take() is None
    await pool.close()
