"""Bounces and complaints come back to the VERP return path: a hard bounce suppresses the
address, soft bounces count to a threshold, a spam complaint withdraws email consent, the
ledger moves sent -> bounced and the campaign report shows why; forged reports change
nothing. The built-in catcher plays the recipients' mail servers and the bounce mailbox."""

from __future__ import annotations

import mailbox
from pathlib import Path

from sqlmodel import select

from activities.campaigns import member_key
from activities.contracts import MessageRequest
from clientela.campaigns import report
from clientela.customers.records import consents
from clientela.db import session_scope
from clientela.devstack.smtp_catcher import SmtpCatcher, read_outbox
from clientela.messaging import bounces
from clientela.messaging.sending import Sender
from clientela.settings import Settings
from models import Campaign, CampaignMember, Customer, Interaction, Message, Suppression
from tests.factories import make_customer
from tests.processes import run_cli


async def send(settings: Settings, key: str, customer_id: str, **kw: object) -> str:
    sender = Sender(settings, "t/1/1")
    try:
        outcome = await sender.deliver(
            MessageRequest(key=key, customer_id=customer_id, template="welcome", **kw)  # type: ignore[arg-type]
        )
    finally:
        await sender.close()
    return outcome.state


def message(settings: Settings, key: str) -> Message:
    with session_scope(settings.db_url) as session:
        return session.exec(select(Message).where(Message.key == key)).one()


def suppression(settings: Settings, address: str) -> str | None:
    with session_scope(settings.db_url) as session:
        row = session.exec(select(Suppression).where(Suppression.address == address)).first()
        return row.reason if row else None


def history(settings: Settings, cid: str, kind: str) -> list[str]:
    with session_scope(settings.db_url) as session:
        return list(
            session.exec(
                select(Interaction.outcome)
                .join(Customer)
                .where(Customer.external_id == cid, Interaction.kind == kind)
            ).all()
        )


def kept_reports(settings: Settings) -> list[bytes]:
    box = mailbox.Maildir(bounces.mailbox_dir(settings), create=False)
    return [box.get_bytes(k) for k in box.iterkeys()]


async def test_every_email_names_itself_in_its_return_path(
    settings: Settings, catcher: SmtpCatcher
) -> None:
    cid = make_customer(settings.db_url, locale="en")
    assert await send(settings, "b:verp", cid) == "sent"
    [entry] = read_outbox(settings.outbox_dir)
    tag = bounces.tag_for(settings, "b:verp")
    assert entry["from"] == f"bounces+{tag}@clientela.example"
    raw = (settings.outbox_dir / entry["file"]).read_text()
    assert f"X-Clientela-Ref: {tag}" in raw and "From: Clientela <hello@clientela.example>" in raw
    assert bounces.genuine(settings, tag) and bounces.genuine(settings, tag.upper())
    assert not bounces.genuine(settings, tag[:12] + "0" * 8)
    assert not bounces.genuine(settings, "not a tag")


async def test_a_hard_bounce_suppresses_the_address_and_is_applied_once(
    settings: Settings, catcher: SmtpCatcher
) -> None:
    address = "bounce+lucia@example.com"
    cid = make_customer(settings.db_url, email=address, locale="es")
    assert await send(settings, "b:hard", cid, channel="email") == "sent"
    # The catcher, as Lucía's mail server, returned a DSN to the bounce mailbox.
    [applied] = bounces.fetch(settings)
    assert (applied.kind, applied.message, applied.suppressed) == ("hard", "b:hard", True)
    row = message(settings, "b:hard")
    assert row.state == "bounced"
    assert row.reason.startswith("bounced: 5.1.1 smtp; 550 5.1.1")
    assert suppression(settings, address) == "hard bounce: 5.1.1 no such mailbox (hard)"
    assert history(settings, cid, "bounce") == ["hard"]
    assert bounces.fetch(settings) == []  # read once
    # The same report again (a mail server's retry, or piped twice) changes nothing.
    [raw] = kept_reports(settings)
    again = bounces.process(settings, raw)
    assert [a.kind for a in again] == ["duplicate"]
    assert history(settings, cid, "bounce") == ["hard"]
    # The next message to the address is not sent.
    assert await send(settings, "b:next", cid, channel="email") == "suppressed"


async def test_a_bounce_that_comes_before_the_answer_is_recorded_settles_the_message(
    settings: Settings, catcher: SmtpCatcher
) -> None:
    """The relay took the message and the recipient's server bounced it, but the worker died
    before recording the relay's answer: the bounce says it was handed over, so the message
    is bounced, and the attempt that picks it up again neither resends nor calls it unsent."""
    from tests.test_sending import _as_if_the_sender_died_before_recording

    address = "bounce+early@example.com"
    cid = make_customer(settings.db_url, email=address, phone=None, locale="es")
    assert await send(settings, "b:early", cid, channel="email") == "sent"
    _as_if_the_sender_died_before_recording(settings, "b:early")
    [applied] = bounces.fetch(settings)
    assert (applied.kind, applied.message, applied.suppressed) == ("hard", "b:early", True)
    assert message(settings, "b:early").state == "bounced"
    sender = Sender(settings, "t/1/2")
    try:
        again = await sender.deliver(
            MessageRequest(key="b:early", customer_id=cid, template="welcome", channel="email")
        )
    finally:
        await sender.close()
    assert again.state == "bounced"
    assert len(read_outbox(settings.outbox_dir)) == 1


async def test_soft_bounces_suppress_at_the_threshold(
    settings: Settings, catcher: SmtpCatcher
) -> None:
    address = "softbounce@example.com"
    cid = make_customer(settings.db_url, email=address, locale="en")
    s = settings.model_copy(update={"soft_bounce_limit": 3})
    for n in range(1, 4):
        assert await send(s, f"b:soft{n}", cid, channel="email") == "sent"
        [applied] = bounces.fetch(s)
        assert applied.kind == "soft" and applied.suppressed is (n == 3)
        assert message(s, f"b:soft{n}").state == "sent"  # delayed: the server still tries
        assert (suppression(s, address) is None) is (n < 3)
    assert (suppression(s, address) or "").startswith("soft bounces: 3 in 30 days")
    assert history(s, cid, "bounce") == ["soft"] * 3


async def test_a_spam_complaint_withdraws_email_consent(
    settings: Settings, catcher: SmtpCatcher
) -> None:
    cid = make_customer(settings.db_url, email="complaint+pepe@example.com", locale="en")
    assert await send(settings, "b:arf", cid, channel="email") == "sent"
    [applied] = bounces.fetch(settings)
    assert (applied.kind, applied.message) == ("complaint", "b:arf")
    with session_scope(settings.db_url) as session:
        pk = session.exec(select(Customer.id).where(Customer.external_id == cid)).one()
        assert pk is not None
        held = consents(session=session, customer_id=pk)["email"]
        assert held.granted is False and held.source == "complaint (marked as abuse)"
    assert history(settings, cid, "spam_complaint") == ["abuse"]
    assert message(settings, "b:arf").state == "sent"  # it was delivered; it was not wanted
    assert await send(settings, "b:after", cid, channel="email") == "suppressed"


async def test_forged_and_foreign_reports_change_nothing(
    settings: Settings, catcher: SmtpCatcher
) -> None:
    address = "ana.target@example.com"
    cid = make_customer(settings.db_url, email=address, locale="en")
    assert await send(settings, "b:target", cid, channel="email") == "sent"
    [entry] = read_outbox(settings.outbox_dir)
    original = (settings.outbox_dir / entry["file"]).read_bytes()
    tag = bounces.tag_for(settings, "b:target")
    forged_tag = tag[:12] + ("0" * 8 if tag[12:] != "0" * 8 else "1" * 8)
    for to in (f"bounces+{forged_tag}@clientela.example", "bounces@clientela.example"):
        raw = bounces.dsn(
            reporting_mta="evil.example", to=to, original=original.replace(tag.encode(), b"x"),
            recipient=address, action="failed", status="5.1.1", diagnostic="550 no such user",
        )  # fmt: skip
        assert [a.kind for a in bounces.process(settings, raw)] == ["unmatched"]
    # A genuine tag, but a report about someone else's address.
    raw = bounces.dsn(
        reporting_mta="mx.example", to=f"bounces+{tag}@clientela.example", original=b"",
        recipient="someone.else@example.com", action="failed", status="5.1.1", diagnostic="x",
    )  # fmt: skip
    assert [a.kind for a in bounces.process(settings, raw)] == ["unmatched"]
    # An out-of-office reply to the bounce address is not a bounce.
    ooo = b"From: ana.target@example.com\r\nTo: bounces@clientela.example\r\n\r\nOn holiday\r\n"
    assert [a.kind for a in bounces.process(settings, ooo)] == ["not understood"]
    assert message(settings, "b:target").state == "sent"
    assert suppression(settings, address) is None
    assert history(settings, cid, "bounce") == []


async def test_the_report_shows_bounces_by_reason(settings: Settings, catcher: SmtpCatcher) -> None:
    with session_scope(settings.db_url) as session:
        session.add(Campaign(id="bouncy", name="Bouncy", spec={}))
    members = {
        make_customer(settings.db_url, email="bounce+1@example.com", locale="en"): "bounced",
        make_customer(settings.db_url, email="fine@example.com", locale="en"): "sent",
    }
    with session_scope(settings.db_url) as session:
        for cid in members:
            pk = session.exec(select(Customer.id).where(Customer.external_id == cid)).one()
            assert pk is not None
            session.add(CampaignMember(campaign_id="bouncy", customer_id=pk, channel="email"))
    for cid in members:
        assert await send(settings, member_key("bouncy", cid), cid, campaign="bouncy") == "sent"
    assert [a.kind for a in bounces.fetch(settings)] == ["hard"]
    with session_scope(settings.db_url) as session:
        data = report.build(session, "bouncy")
    treated = data["arms"][0]["treated"]
    assert (treated["targeted"], treated["sent"], treated["bounced"]) == (2, 2, 1)
    [(reason, count)] = treated["bounce_reasons"].items()
    assert (reason, count) == ("5.1.1 no such mailbox (hard)", 1)


async def test_the_cli_applies_a_report_piped_by_a_mail_server(
    settings: Settings, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    cid = make_customer(settings.db_url, email="bounce+cli@example.com", locale="en")
    assert await send(settings, "b:cli", cid, channel="email") == "sent"
    [raw] = kept_reports(settings)
    done = run_cli(settings, "bounces", "process", "-", input=raw.decode())
    assert done.returncode == 0, done.stderr
    assert "hard (b:cli) - address suppressed" in done.stdout
    assert "Processed 1 message(s): 1 hard." in done.stdout
    assert message(settings, "b:cli").state == "bounced"
    fetched = run_cli(settings, "bounces", "fetch")  # the same report, read from the Maildir
    assert fetched.returncode == 0 and "1 duplicate" in fetched.stdout
    missing = run_cli(settings, "bounces", "process", str(tmp_path / "nope.eml"))
    assert missing.returncode != 0 and "nope.eml: no such file" in missing.stderr


POSTFIX_DSN = """\
Return-Path: <>
Delivered-To: {to}
Date: Tue,  1 Dec 2026 10:15:02 +0100 (CET)
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {to}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
\tboundary="2F1B1C0D2A.1733044502/mx.example.net"

This is a MIME-encapsulated message.

--2F1B1C0D2A.1733044502/mx.example.net
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.example.net.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<{rcpt}>: host mail.example.org[203.0.113.5] said: 550 5.2.1
    <{rcpt}>: Mailbox disabled (in reply to RCPT TO command)

--2F1B1C0D2A.1733044502/mx.example.net
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net
X-Postfix-Queue-ID: 2F1B1C0D2A
X-Postfix-Sender: rfc822; {to}
Arrival-Date: Tue,  1 Dec 2026 10:15:01 +0100 (CET)

Final-Recipient: rfc822; {rcpt_upper}
Original-Recipient: rfc822;{rcpt}
Action: failed
Status: 5.2.1
Remote-MTA: dns; mail.example.org
Diagnostic-Code: smtp; 550 5.2.1 <{rcpt}>: Mailbox disabled

--2F1B1C0D2A.1733044502/mx.example.net
Content-Description: Undelivered Message
Content-Type: message/rfc822

{original}
--2F1B1C0D2A.1733044502/mx.example.net--
"""


async def test_a_postfix_bounce_with_the_whole_message_returned(
    settings: Settings, catcher: SmtpCatcher
) -> None:
    """As Postfix writes it: the VERP address folded to capitals by a relay on the way, the
    recipient in other case, the original message returned whole."""
    rcpt = "maria.lopez@example.org"
    cid = make_customer(settings.db_url, email=rcpt, locale="en")
    assert await send(settings, "b:postfix", cid, channel="email") == "sent"
    [entry] = read_outbox(settings.outbox_dir)
    original = (settings.outbox_dir / entry["file"]).read_text().replace("\r\n", "\n")
    raw = POSTFIX_DSN.format(
        to=entry["from"].upper(), rcpt=rcpt, rcpt_upper=rcpt.upper(), original=original
    )
    [applied] = bounces.process(settings, raw.encode())
    assert (applied.kind, applied.message, applied.suppressed) == ("hard", "b:postfix", True)
    assert message(settings, "b:postfix").reason.startswith("bounced: 5.2.1 smtp; 550 5.2.1")


async def test_a_provider_forwards_bounces_to_the_webhook(
    settings: Settings, catcher: SmtpCatcher
) -> None:
    """As SendGrid's Inbound Parse (raw, a form field) and a plain forwarder (the message as
    the body) post them; anything else is refused with what to send."""
    import httpx
    from temporalio.client import Client as _Client  # noqa: F401 (the API needs none here)

    from api.app import create_app

    cid = make_customer(settings.db_url, email="bounce+hook@example.com", locale="en")
    assert await send(settings, "b:hook", cid, channel="email") == "sent"
    [raw] = kept_reports(settings)
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        r = await http.post("/webhooks/bounces", files={"email": ("", raw.decode())})
        assert r.status_code == 200, r.text
        assert r.json() == {"applied": {"hard": 1}}
        again = await http.post(
            "/webhooks/bounces", content=raw, headers={"Content-Type": "message/rfc822"}
        )
        assert again.json() == {"applied": {"duplicate": 1}}
        other = await http.post("/webhooks/bounces", json={"email": "x"})
        assert other.status_code == 415 and "message/rfc822" in other.text
        missing = await http.post("/webhooks/bounces", files={"text": ("", "hello")})
        assert missing.status_code == 422 and "email" in missing.text
    assert message(settings, "b:hook").state == "bounced"
