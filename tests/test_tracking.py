"""Clicks and opens counted by Clientela itself: links rewritten in the email, a person's
first click recorded once (machines apart), tampered links going nowhere, tracking off."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update
from sqlmodel import select
from temporalio.client import Client

from activities.contracts import MessageRequest
from clientela.db import session_scope
from clientela.devstack.smtp_catcher import SmtpCatcher, read_outbox
from clientela.journeys.router import Happening, enter
from clientela.messaging import tracking
from clientela.messaging.links import BadToken
from clientela.messaging.sending import Sender
from clientela.settings import Settings
from clientela.timeutil import utcnow
from models import Customer, Interaction, JourneyOutbox, Message
from tests.factories import make_customer
from tests.serving import api
from tests.test_journeys import custom
from tests.test_welcome import finished

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0"


async def send(settings: Settings, req: MessageRequest) -> str:
    sender = Sender(settings, "t/1/1")
    try:
        outcome = await sender.deliver(req)
    finally:
        await sender.close()
    assert outcome.state == "sent", outcome
    return req.key


def parts(settings: Settings, key: str) -> tuple[str, str]:
    """(HTML, text) of the message with ``key`` as the catcher holds it."""
    with session_scope(settings.db_url) as session:
        message_id = session.exec(select(Message.provider_id).where(Message.key == key)).one()
    [entry] = [e for e in read_outbox(settings.outbox_dir) if e["message_id"] in message_id]
    parsed = email.message_from_bytes(
        (settings.outbox_dir / entry["file"]).read_bytes(), policy=email.policy.default
    )
    html = parsed.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = parsed.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    return html, text


def hrefs(html: str) -> list[str]:
    return re.findall(r'href="([^"]+)"', html)


def path_of(url: str, settings: Settings) -> str:
    assert url.startswith(settings.recipient_base_url), url
    return url.removeprefix(settings.recipient_base_url)


def later(settings: Settings, key: str) -> None:
    """The recipient reads the message a minute after it was sent (the clock, moved)."""
    with session_scope(settings.db_url) as session:
        session.execute(
            update(Message)
            .where(Message.key == key)  # type: ignore[arg-type]
            .values(sent_at=utcnow() - timedelta(minutes=1))
        )


def hits(settings: Settings, key: str) -> list[tuple[str, str, str]]:
    with session_scope(settings.db_url) as session:
        rows = session.exec(
            select(Interaction.kind, Interaction.detail)
            .where(Interaction.message_key == key)
            .order_by(Interaction.id)  # type: ignore[arg-type]
        ).all()
    return [(k, d.get("url", ""), d.get("machine", "")) for k, d in rows if k != "message"]


def test_tokens_are_opaque_and_cannot_be_altered(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    token = tracking.click_token(settings, "campaign:spring:C00042:message", "https://x.test/a")
    assert "C00042" not in token and "x.test" not in token and "spring" not in token
    assert tracking.read_click(settings, token) == (
        "campaign:spring:C00042:message",
        "https://x.test/a",
    )
    assert tracking.click_token(settings, "campaign:spring:C00042:message", "https://x.test/a") == (
        token
    )
    for forged in (
        token[:-2] + ("AA" if token[-2:] != "AA" else "BB"),
        token[:30],
        tracking.open_token(settings, "campaign:spring:C00042:message"),  # an open is no link
        "A" * 80,
    ):
        try:
            tracking.read_click(settings, forged)
        except BadToken:
            continue
        raise AssertionError(f"{forged} was read")
    other = Settings(home=tmp_path / "elsewhere")  # another installation's key
    try:
        tracking.read_click(other, token)
    except BadToken:
        pass
    else:
        raise AssertionError("another installation read the token")


def test_what_is_rewritten_and_what_is_not(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, public_url="https://go.example")
    r = tracking.Rewriter(settings, "k", {"https://go.example/u/abc"})
    html = (
        '<p><a href="https://shop.test/a?x=1&amp;y=2">A</a> <a class="b" href=\'http://b.test\'>B</a>'
        ' <a href="mailto:x@y.test">M</a> <a href="https://go.example/u/abc">U</a>'
        ' <a data-track="off" href="https://c.test">C</a> <a href="https://go.example/p/t">P</a>'
        ' <a href="javascript:alert(1)">J</a></p></body></html>'
    )
    out = r.html(html)
    links = hrefs(out) + re.findall(r"href='([^']+)'", out)
    tracked = [u for u in links if u.startswith("https://go.example/c/")]
    assert len(tracked) == 2
    assert {tracking.read_click(settings, t.split("/c/")[1])[1] for t in tracked} == {
        "https://shop.test/a?x=1&y=2",  # the address as the browser would follow it
        "http://b.test",
    }
    for kept in ("mailto:x@y.test", "https://go.example/u/abc", "https://c.test",
                 "https://go.example/p/t", "javascript:alert(1)"):  # fmt: skip
        assert kept in links
    assert out.count("/o/") == 1 and out.index("/o/") < out.index("</body>")
    assert "/o/" not in r.html(html, opens=False)
    assert r.html(html, clicks=False, opens=False) == html
    text = r.text("See https://shop.test/a. Or https://go.example/u/abc, thanks")
    assert text.startswith("See https://go.example/c/") and ". Or https://go.example/u/abc," in text


def test_machines_are_told_from_people(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    now = utcnow()
    long_ago = now - timedelta(hours=1)

    def why(kind: str = "click", **kw: object) -> str | None:
        facts = {"method": "GET", "user_agent": BROWSER, "client": "198.51.100.7",
                 "purpose": "", "sent_at": long_ago, "now": now} | kw  # fmt: skip
        return tracking.machine(settings, kind=kind, **facts)  # type: ignore[arg-type]

    assert why() is None and why("open") is None
    assert why(method="HEAD") == "HEAD request"
    assert why(purpose="prefetch") == "prefetch"
    assert why(user_agent="") == "no user agent"
    assert why(user_agent="Mozilla/5.0 (compatible; Barracuda Sentinel)") == "scanner user agent"
    assert why(user_agent="python-httpx/0.28") == "scanner user agent"
    assert why("open", user_agent="Mozilla/5.0") == "Apple Mail Privacy Protection"
    assert why("open", client="17.58.1.2") == "Apple Mail Privacy Protection"
    assert why("click", client="17.58.1.2") is None  # Apple's proxy fetches images, not links
    assert why("open", user_agent="Mozilla/5.0 (Windows NT 5.1; rv:11.0) GoogleImageProxy") is None
    assert why(sent_at=now - timedelta(seconds=3)) == "within 10 s of the send"


async def test_a_click_redirects_and_is_recorded_once_per_person(
    client: Client, settings: Settings, catcher: SmtpCatcher
) -> None:
    cid = make_customer(settings.db_url, locale="en", preferred_channel="email")
    key = await send(settings, MessageRequest(key="t:click", customer_id=cid, template="welcome"))
    html, text = parts(settings, key)
    [link] = [u for u in hrefs(html) if "/c/" in u]
    assert "shop.clientela.example" not in html.split("<img")[0].replace(link, "")
    assert link in text  # the text part carries the same tracked link
    [unsubscribe] = [u for u in hrefs(html) if "/u/" in u]  # never rewritten
    [pixel] = re.findall(r'<img src="([^"]+/o/[^"]+)"', html)
    async with api(client, settings) as http:
        # A security gateway follows the link as the message arrives: counted apart.
        r = await http.get(path_of(link, settings), headers={"User-Agent": BROWSER})
        assert r.status_code == 302
        assert r.headers["location"] == "https://shop.clientela.example/account"
        head = await http.head(path_of(link, settings), headers={"User-Agent": BROWSER})
        assert head.status_code == 302
        later(settings, key)
        for _ in range(2):  # the person clicks, then clicks again
            r = await http.get(path_of(link, settings), headers={"User-Agent": BROWSER})
            assert r.status_code == 302
            assert r.headers["location"] == "https://shop.clientela.example/account"
        apple = await http.get(path_of(pixel, settings), headers={"User-Agent": "Mozilla/5.0"})
        assert apple.status_code == 200 and apple.headers["content-type"] == "image/gif"
        seen = await http.get(path_of(pixel, settings), headers={"User-Agent": BROWSER})
        assert seen.status_code == 200
        unsub = await http.get(path_of(unsubscribe, settings))
        assert unsub.status_code == 200 and "Unsubscribe" in unsub.text
    target = "https://shop.clientela.example/account"
    assert hits(settings, key) == [
        ("machine_click", target, "within 10 s of the send"),
        ("click", target, ""),
        ("machine_open", "", "Apple Mail Privacy Protection"),
        ("open", "", ""),
    ]
    with session_scope(settings.db_url) as session:
        pk = session.exec(select(Customer.id).where(Customer.external_id == cid)).one()
        rows = session.exec(
            select(Interaction).where(Interaction.customer_id == pk, Interaction.kind == "click")
        ).all()
        assert [(i.direction, i.outcome, i.channel) for i in rows] == [
            ("inbound", "responded", "email")
        ]


async def test_a_tampered_link_goes_nowhere(
    client: Client, settings: Settings, catcher: SmtpCatcher
) -> None:
    cid = make_customer(settings.db_url, locale="es", preferred_channel="email")
    key = await send(settings, MessageRequest(key="t:tamper", customer_id=cid, template="welcome"))
    html, _ = parts(settings, key)
    [link] = [u for u in hrefs(html) if "/c/" in u]
    token = path_of(link, settings).removeprefix("/c/")
    flipped = token[:10] + ("B" if token[10] != "B" else "C") + token[11:]
    async with api(client, settings) as http:
        for path in (f"/c/{flipped}", f"/c/{token[:40]}", f"/c/{'A' * 60}"):
            r = await http.get(path, headers={"User-Agent": BROWSER})
            assert r.status_code == 404 and "location" not in r.headers
            assert "This link does not work" in r.text
        bad_pixel = await http.get(f"/o/{flipped}")
        assert bad_pixel.status_code == 404
        assert (await http.get("/c/short")).status_code == 422
    assert hits(settings, key) == []


async def test_tracking_off_leaves_the_email_as_written(
    settings: Settings, catcher: SmtpCatcher
) -> None:
    cid = make_customer(settings.db_url, locale="en", preferred_channel="email")
    key = await send(
        settings,
        MessageRequest(key="t:off", customer_id=cid, template="welcome", tracking=False),
    )
    html, text = parts(settings, key)
    assert "https://shop.clientela.example/account" in hrefs(html)
    assert "/c/" not in html and "/o/" not in html and "/c/" not in text
    off = settings.model_copy(update={"tracking_clicks": False})
    key = await send(off, MessageRequest(key="t:global", customer_id=cid, template="welcome"))
    html, _ = parts(off, key)
    assert "https://shop.clientela.example/account" in hrefs(html)
    assert len(re.findall(r"/o/", html)) == 1  # opens still counted, as set


async def test_a_click_reaches_the_journey_waiting_for_it(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    s = custom(tmp_path, settings, seconds_per_day=60.0)  # "wait 1 day for a click": a minute
    cid = make_customer(settings.db_url, locale="en", preferred_channel="email")
    [entry] = await enter(client, s, cid, Happening(kind="event", event="visit", key="v1"))
    assert entry.started
    key = f"journey:nudge:{cid}:v1:hello"
    while True:  # the journey's first email, as the catcher holds it
        with session_scope(s.db_url) as session:
            state = session.exec(select(Message.state).where(Message.key == key)).first()
        if state == "sent":
            break
        await asyncio.sleep(0.1)
    html, _ = parts(s, key)
    [link] = [u for u in hrefs(html) if "/c/" in u]
    later(s, key)
    async with api(client, s) as http:
        r = await http.get(path_of(link, s), headers={"User-Agent": BROWSER})
        assert r.status_code == 302
        result = await finished(client, entry.workflow_id)
    assert result.exit_reason == "clicked"
    assert "event came" in result.trail[1]
    with session_scope(s.db_url) as session:
        assert (
            session.exec(select(JourneyOutbox).where(JourneyOutbox.customer_id == cid)).all() == []
        )


def test_tracked_hits_are_forgotten_after_the_retention(
    settings: Settings,
) -> None:
    from clientela.customers.records import record_interaction
    from clientela.messaging import engagement
    from models import Direction

    cid = make_customer(settings.db_url)
    with session_scope(settings.db_url) as session:
        pk = session.exec(select(Customer.id).where(Customer.external_id == cid)).one()
        assert pk is not None
        for kind, days, key in (("click", 800, "m1"), ("open", 10, "m1"), ("click", 800, None)):
            row = record_interaction(
                session=session, customer_id=pk, channel="email",
                direction=Direction.inbound, kind=kind, message_key=key,
            )  # fmt: skip
            row.occurred_at = utcnow() - timedelta(days=days)
    with session_scope(settings.db_url) as session:
        assert engagement.forget_old(session, settings) == 1
    with session_scope(settings.db_url) as session:
        left = session.exec(
            select(Interaction.kind, Interaction.message_key).where(Interaction.customer_id == pk)
        ).all()
    # The tracked click of 800 days ago is gone; a posted one (no message) is the user's own.
    assert sorted((k, m or "") for k, m in left if k != "consent") == [
        ("click", ""),
        ("open", "m1"),
    ]
