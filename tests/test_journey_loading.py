"""A bad journey file is left out with its file and line; intake and the others go on."""

from __future__ import annotations

import shutil
from pathlib import Path

from temporalio.client import Client

from clientela import ROOT
from clientela.devstack.smtp_catcher import SmtpCatcher
from clientela.journeys.router import BOOK, Happening, matches
from clientela.settings import Settings
from tests.factories import make_customer
from tests.processes import run_cli
from tests.serving import api
from tests.test_rules_apply import apply_directly

BAD = """\
name: abandoned_cart
owner: growth
trigger: {event: "cart#abandoned"}   # an event name has no "#"
steps:
  - send: {template: welcome}
"""


def with_a_bad_file(tmp_path: Path, settings: Settings) -> Settings:
    folder = tmp_path / "journeys"
    folder.mkdir()
    shutil.copy(ROOT / "journeys" / "welcome.yaml", folder)
    (folder / "abandoned_cart.yaml").write_text(BAD)
    return settings.model_copy(update={"journeys_dir": folder})


async def test_a_bad_journey_file_does_not_stop_intake(
    client: Client, settings: Settings, tmp_path: Path, catcher: SmtpCatcher
) -> None:
    quick = with_a_bad_file(tmp_path, settings)
    async with api(client, quick) as http:
        r = await http.post(
            "/events",
            json={"type": "signup", "external_id": "J1", "email": "j1@example.com"},
        )
        assert r.status_code == 202, r.text
        assert [e["journey"] for e in r.json()["journeys"]] == ["welcome"]
        buy = {"type": "purchase", "customer_id": "J1", "amount": "10.00"}
        assert (await http.post("/events", json=buy)).status_code == 202
        click = {"type": "click", "customer_id": "J1"}
        assert (await http.post("/events", json=click)).status_code == 202
    assert set(BOOK.journeys(quick)) == {"welcome"}
    [problem] = BOOK.problems
    assert problem.path.endswith("abandoned_cart.yaml") and problem.line == 3
    assert "trigger.event" in problem.message


def test_journey_check_names_file_and_line(settings: Settings, tmp_path: Path) -> None:
    quick = with_a_bad_file(tmp_path, settings)
    folder = quick.journeys_dir
    r = run_cli(quick, "journey", "check", str(folder))
    assert r.returncode == 1
    assert f"{folder / 'abandoned_cart.yaml'}:3:" in r.stderr and "trigger.event" in r.stderr
    assert "1 error(s) in 1 file(s)" in r.stderr
    assert f"{folder / 'welcome.yaml'}: journey welcome" in r.stdout and "OK" in r.stdout
    good = run_cli(quick, "journey", "check", str(folder / "welcome.yaml"))
    assert good.returncode == 0, good.stderr
    shipped = run_cli(quick, "journey", "check", str(ROOT / "journeys"))
    assert shipped.returncode == 0, shipped.stderr


def test_a_first_tier_is_not_a_move_up(settings: Settings) -> None:
    quick = settings.model_copy(update={"journeys_dir": ROOT / "journeys"})
    upgrade = BOOK.journeys(quick)["tier_upgrade"]

    def change(old: str | None, new: str, direction: str) -> Happening:
        data = {"from": old, "to": new, "direction": direction}
        return Happening(kind="tier_change", key="k", from_tier=old, to_tier=new, data=data)

    assert not matches(upgrade, change(None, "C", "up"))
    assert not matches(upgrade, change(None, "A", "up"))
    assert matches(upgrade, change("C", "B", "up"))
    assert not matches(upgrade, change("A", "B", "down"))


async def test_a_new_customers_first_purchase_starts_no_upgrade(
    client: Client, settings: Settings, tmp_path: Path, catcher: SmtpCatcher
) -> None:
    folder = tmp_path / "journeys"
    folder.mkdir()
    shutil.copy(ROOT / "journeys" / "tier_upgrade.yaml", folder)
    quick = settings.model_copy(update={"journeys_dir": folder})
    make_customer(quick.db_url)
    apply_directly(quick.db_url)  # the rules are in force; the new customer has no tier yet
    async with api(client, quick) as http:
        signup = {"type": "signup", "external_id": "NEW-1", "email": "new1@example.com"}
        assert (await http.post("/events", json=signup)).status_code == 202
        cid = "NEW-1"
        r = await http.post(
            "/events", json={"type": "purchase", "customer_id": cid, "amount": "1500.00"}
        )
        body = r.json()
    assert r.status_code == 202 and body["tier_changed"] is True, body
    assert body["tier"] == "A" and body["journeys"] == [], body


def test_a_changed_journey_file_is_in_the_audit_trail_once(
    settings: Settings, tmp_path: Path
) -> None:
    import os

    from clientela.db import session_scope
    from clientela.people import audit

    def load() -> str:
        version = BOOK.journeys(quick)["welcome"].version
        assert BOOK.recording is not None
        BOOK.recording.join(30)  # the trail is written beside the caller's transaction
        return version

    quick = with_a_bad_file(tmp_path, settings)
    first = load()
    path = quick.journeys_dir / "welcome.yaml"
    path.write_text(path.read_text().replace("Welcome a new customer", "Greet a new customer"))
    stat = path.stat()  # a later mtime, whatever the clock's resolution
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    second = load()
    (quick.journeys_dir / "other.txt").write_text("not a journey")  # no reload, no record
    load()
    assert first != second
    with session_scope(settings.db_url) as session:
        trail = audit.recent(session, subject="journey:welcome")
    assert [(e.action, e.detail["version"], e.detail["before"]) for e in trail] == [
        ("journey.changed", second, first),
        ("journey.changed", first, None),
    ]
    assert trail[0].actor == "file:welcome.yaml"


def test_journeys_read_inside_a_write_transaction_still_reach_the_trail(
    settings: Settings, tmp_path: Path
) -> None:
    """An event and the journeys it starts are one transaction; reading the definitions
    there must not wait on (nor lose) the write of their versions to the audit trail."""
    from clientela.db import session_scope
    from clientela.people import audit

    quick = with_a_bad_file(tmp_path, settings)
    with session_scope(settings.db_url) as session:
        audit.record(session, actor="test", action="test.holding", subject="lock")
        session.flush()  # this transaction now holds SQLite's write lock
        version = BOOK.journeys(quick)["welcome"].version
    assert BOOK.recording is not None
    BOOK.recording.join(60)
    with session_scope(settings.db_url) as session:
        [event] = audit.recent(session, subject="journey:welcome")
    assert event.detail["version"] == version
