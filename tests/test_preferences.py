"""The preference centre and the consent log: a link in every email opens the customer's
channels and topics in their language; each choice is appended to the log with its source
and wording version; the next campaign of a topic leaves out who unsubscribed from it."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from sqlmodel import select
from temporalio.client import Client

from activities.contracts import MessageRequest
from clientela.customers.records import consent_log, consents, set_consent, topics_off
from clientela.db import dispose_all, get_engine, session_scope
from clientela.devstack.smtp_catcher import SmtpCatcher, read_outbox
from clientela.messaging import topics
from clientela.messaging.links import preferences_url, read_preferences_token
from clientela.settings import Settings
from models import ConsentRecord, Customer, Message
from tests.factories import make_customer
from tests.serving import api
from tests.test_campaign_execution import write
from tests.test_campaign_workflow import approved, closed, members_of, tiered_customers
from tests.test_tracking import hrefs, parts, send


def pk_of(settings: Settings, cid: str) -> int:
    with session_scope(settings.db_url) as session:
        pk = session.exec(select(Customer.id).where(Customer.external_id == cid)).one()
    assert pk is not None
    return pk


def path_of(url: str, settings: Settings) -> str:
    return url.removeprefix(settings.recipient_base_url)


def ticked(page: str) -> set[str]:
    return set(re.findall(r'name="([a-z.]+)" value="on" checked', page))


async def test_the_preference_centre_changes_channels_and_topics_in_the_log(
    client: Client, settings: Settings, catcher: SmtpCatcher
) -> None:
    cid = make_customer(settings.db_url, locale="es", preferred_channel="email")
    key = await send(settings, MessageRequest(key="p:1", customer_id=cid, template="welcome"))
    html, _ = parts(settings, key)
    [link] = [u for u in hrefs(html) if "/p/" in u]  # beside unsubscribe, never tracked
    assert link.startswith(f"{settings.recipient_base_url}/p/") and cid not in link
    assert read_preferences_token(settings, link.rsplit("/", 1)[1]) == cid
    pk = pk_of(settings, cid)
    with session_scope(settings.db_url) as session:
        before = consent_log(session=session, customer_id=pk)
    wording = topics.load(settings.templates_dir).wording
    async with api(client, settings) as http:
        page = await http.get(path_of(link, settings))
        assert page.status_code == 200
        assert "Tus preferencias" in page.text and "Ofertas y promociones" in page.text
        assert ticked(page.text) == {
            "channel.email", "channel.sms", "topic.offers", "topic.news", "topic.tips"
        }  # fmt: skip
        saved = await http.post(
            path_of(link, settings),
            data={"wording": wording, "channel.email": "on", "topic.news": "on"},
        )
        assert saved.status_code == 200 and "Tus preferencias están guardadas." in saved.text
        assert ticked(saved.text) == {"channel.email", "topic.news"}
        again = await http.post(
            path_of(link, settings),
            data={"wording": wording, "channel.email": "on", "topic.news": "on"},
        )
        assert again.status_code == 200
        forged = await http.get(f"/p/{link.rsplit('/', 1)[1][:-4]}AAAA")
        assert forged.status_code == 404 and "This link does not work" in forged.text
    with session_scope(settings.db_url) as session:
        log = consent_log(session=session, customer_id=pk)
        held = consents(session=session, customer_id=pk)
        off = topics_off(session=session, customer_id=pk)
    assert log[: len(before)] == before  # nothing earlier changed: appended only
    added = [(r["channel"], r["topic"], r["granted"], r["source"], r["wording"])
             for r in log[len(before):]]  # fmt: skip
    assert added == [
        ("sms", "", False, "preference centre", wording),
        ("", "offers", False, "preference centre", wording),
        ("", "tips", False, "preference centre", wording),
    ]  # the repeated save changed nothing, so logged nothing
    assert held["email"].granted and not held["sms"].granted and off == {"offers", "tips"}
    # What holds now is what the log adds up to.
    for channel in ("email", "sms"):
        last = [r for r in log if r["channel"] == channel][-1]
        assert last["granted"] == held[channel].granted
    # The next message of an unsubscribed topic is not sent; another topic's is.
    s1 = MessageRequest(key="p:offer", customer_id=cid, template="welcome", topic="offers")
    s2 = MessageRequest(key="p:news", customer_id=cid, template="welcome", topic="news")
    from clientela.messaging.sending import Sender

    sender = Sender(settings, "t/1/1")
    try:
        assert (await sender.deliver(s1)).reason == "unsubscribed from offers"
        assert (await sender.deliver(s2)).state == "sent"
    finally:
        await sender.close()


async def test_the_next_campaign_of_a_topic_leaves_out_who_unsubscribed(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    tiered_customers(settings.db_url, 12, locale="en")
    with session_scope(settings.db_url) as session:
        ids = session.exec(
            select(Customer.external_id).where(Customer.internal == False)  # noqa: E712
        ).all()
    quitter = ids[0]
    async with api(client, settings) as http:
        r = await http.post(
            path_of(preferences_url(settings, quitter), settings),
            data={"channel.email": "on", "channel.sms": "on", "topic.news": "on"},
        )
        assert r.status_code == 200
    cid = f"c-topic-{uuid.uuid4().hex[:8]}"
    spec = write(tmp_path, cid, "topic: offers\ncontrol: {share: 0.0}\n")
    preview, handle = await approved(client, settings, spec, cid)
    assert preview.excluded == {"unsubscribed from offers": 1}
    await closed(client, cid, handle)
    members = {e: m for m, e in members_of(settings.db_url, cid)}
    assert members[quitter].excluded == "unsubscribed from offers"
    with session_scope(settings.db_url) as session:
        sent_to = set(
            session.exec(
                select(Customer.external_id)
                .join(Message, Message.customer_id == Customer.id)  # type: ignore[arg-type]
                .where(Message.campaign == cid, Message.state == "sent")
            ).all()
        )
    assert quitter not in sent_to and len(sent_to) == len(ids) - 1
    assert len(read_outbox(settings.outbox_dir)) == len(ids) - 1


def test_a_topic_must_be_known(settings: Settings, tmp_path: Path) -> None:
    from clientela.campaigns import spec as campaign_spec
    from clientela.messaging.templating import Templates
    from clientela.yamlfile import SpecError
    from tests.test_campaign_workflow import RULES

    path = write(tmp_path, "c-bad-topic", "topic: gossip\n")
    try:
        campaign_spec.load(path, RULES, Templates(settings.templates_dir))
    except SpecError as exc:
        [problem] = exc.problems
        assert problem.line == path.read_text().splitlines().index("topic: gossip") + 1
        assert "no topic 'gossip' in templates/_topics.yaml (news, offers, tips)" in str(problem)
    else:
        raise AssertionError("an unknown topic was accepted")


def test_a_database_from_before_the_log_carries_its_consent_over(settings: Settings) -> None:
    cid = make_customer(settings.db_url, email_consent=True, sms_consent=False)
    pk = pk_of(settings, cid)
    with session_scope(settings.db_url) as session:  # as an older version left it
        for row in session.exec(select(ConsentRecord)).all():
            session.delete(row)
    dispose_all()
    get_engine(settings.db_url)  # the next process to open it
    with session_scope(settings.db_url) as session:
        log = consent_log(session=session, customer_id=pk)
        assert {(r["channel"], r["granted"], r["wording"]) for r in log} == {
            ("email", True, "unknown: given before the log"),
            ("sms", False, "unknown: given before the log"),
        }
        set_consent(session=session, customer_id=pk, channel="sms", granted=True, source="api")
    dispose_all()
    get_engine(settings.db_url)  # carried over once only
    with session_scope(settings.db_url) as session:
        assert len(consent_log(session=session, customer_id=pk)) == 3
