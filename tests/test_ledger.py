"""The sending ledger's group commit: waiting for a locked database, and batches of several
attempts written together."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from prometheus_client import REGISTRY
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from activities.contracts import MessageRequest
from clientela.db import session_scope
from clientela.devstack.smtp_catcher import SmtpCatcher, read_outbox
from clientela.messaging.channels import SendAccepted
from clientela.messaging.channels.email import message_id_for
from clientela.messaging.sending import Prepared, Sender, _Ledger
from clientela.settings import Settings
from models import Message
from tests.factories import make_customer
from tests.test_complaints import wait_for


class Holder:
    """Another process's transaction holding the ledger: SQLite's write lock, or on
    PostgreSQL a lock on the message table that lets readers in but no writer."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.held = threading.Event()
        self.release = threading.Event()
        self.timed_out = False
        # Named so that the check after each test can see a holder left running.
        self.thread = threading.Thread(target=self._hold, name="Holder", daemon=True)

    def _hold(self) -> None:
        url = make_url(self.db_url)
        if url.get_backend_name() == "sqlite":
            conn = sqlite3.connect(url.database, isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
        else:
            conn = psycopg.connect(  # type: ignore[assignment]
                host=url.host, port=url.port, user=url.username, dbname=url.database
            )
            conn.execute("LOCK TABLE message IN EXCLUSIVE MODE")
        self.held.set()
        self.timed_out = not self.release.wait(20)
        conn.commit()
        conn.close()

    @contextmanager
    def holding(self) -> Iterator[Holder]:
        self.thread.start()
        assert self.held.wait(10)
        try:
            yield self
        finally:
            self.release.set()
            self.thread.join(10)


def lock_waits() -> float:
    return REGISTRY.get_sample_value("clientela_ledger_lock_waits_total") or 0.0


def waiting_for_the_lock(db_url: str, waits_before: float) -> bool:
    """Whether a ledger write is waiting for the holder's lock."""
    if db_url.startswith("sqlite"):
        return lock_waits() > waits_before
    url = make_url(db_url)
    with psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database) as c:
        row = c.execute(
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'message'::regclass"
        ).fetchone()
    return row is not None and row[0] > 0


def states(settings: Settings) -> dict[str, str]:
    with session_scope(settings.db_url) as session:
        return {m.key: m.state for m in session.exec(select(Message)).all()}


async def test_a_locked_ledger_holds_the_messages_back_and_the_worker_goes_on(
    settings: Settings, catcher: SmtpCatcher
) -> None:
    customers = [make_customer(settings.db_url, locale="en") for _ in range(3)]
    sender = Sender(settings, "held/1/1")
    reqs = [MessageRequest(key=f"h:{c}", customer_id=c, template="welcome") for c in customers]
    prepared = await sender.prepare(reqs)
    assert all(isinstance(p, Prepared) for p in prepared)
    waits_before = lock_waits()
    ticks = 0
    try:
        with Holder(settings.db_url).holding() as holder:
            sending = asyncio.create_task(sender.send_prepared(prepared))
            # The event loop keeps running while the ledger waits: this coroutine sees the
            # write wait and goes on ticking. (SQLite's own busy wait would block the loop
            # until the holder gave up, 20 s later.)
            await wait_for(lambda: waiting_for_the_lock(settings.db_url, waits_before))
            for _ in range(10):
                await asyncio.sleep(0.01)
                ticks += 1
            # Nothing was handed over, so nothing went out.
            assert read_outbox(settings.outbox_dir) == []
            assert set(states(settings).values()) == {"claimed"}
            assert not sending.done()
        outcomes = await sending
    finally:
        await sender.close()
    assert not holder.timed_out and ticks == 10
    assert [getattr(o, "state", o) for o in outcomes] == ["sent"] * 3
    sent = [m["message_id"] for m in read_outbox(settings.outbox_dir)]
    assert sorted(sent) == sorted(message_id_for(r.key, settings.mail_from) for r in reqs)
    assert set(states(settings).values()) == {"sent"}


async def test_one_attempts_failed_write_is_not_the_others(
    settings: Settings, catcher: SmtpCatcher
) -> None:
    """Two attempts' changes wait for the same transaction; one of them cannot be written (a
    contact for a customer who does not exist). The other is written all the same, and
    nothing of the failed one is."""
    good, bad = Sender(settings, "a/1/1"), Sender(settings, "b/1/1")
    c1, c2 = make_customer(settings.db_url, locale="en"), make_customer(settings.db_url)
    [p1] = await good.prepare([MessageRequest(key="g", customer_id=c1, template="welcome")])
    [p2] = await bad.prepare([MessageRequest(key="b", customer_id=c2, template="welcome")])
    assert isinstance(p1, Prepared) and isinstance(p2, Prepared)
    p2.customer_pk = 10**9  # its contact cannot be written
    ledger = _Ledger.of(settings)
    handed, failed = await asyncio.gather(
        ledger.commit(good, [(p1, None)]),
        ledger.commit(bad, [(p2, SendAccepted("<b@example.com>"))]),
        return_exceptions=True,
    )
    assert handed == [True]
    assert isinstance(failed, IntegrityError)
    assert states(settings) == {"g": "sending", "b": "claimed"}
    assert (p1.state, p2.state) == ("sending", "claimed")
    # The good attempt goes on from where its change left it.
    [outcome] = await ledger.commit(good, [(p1, SendAccepted("<g@example.com>"))])
    assert outcome.state == "sent"
    assert states(settings) == {"g": "sent", "b": "claimed"}


@pytest.fixture(autouse=True)
def _no_leftover_holder() -> Iterator[None]:
    yield
    assert not [t for t in threading.enumerate() if t.name.startswith("Holder")]
