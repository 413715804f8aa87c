"""The shipped cross-sell and tier-upgrade journeys, as shipped, through the API and a worker:
each branch of the cross-sell, and the tier upgrade's wait for 10:00 local time."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from temporalio.client import Client

from clientela import ROOT
from clientela.devstack.smtp_catcher import SmtpCatcher, read_outbox
from clientela.settings import Settings
from tests.factories import make_customer
from tests.serving import api
from tests.test_rules_apply import apply_directly
from tests.test_welcome import finished

DAY = 24 * 3600.0


def shipped(tmp_path: Path, settings: Settings, *names: str) -> Settings:
    """Settings whose journeys folder holds only these shipped definitions, unchanged; a
    journey's day lasts 0.4 s (the cross-sell's week, 2.8 s)."""
    folder = tmp_path / "journeys"
    folder.mkdir()
    for name in names:
        shutil.copy(ROOT / "journeys" / f"{name}.yaml", folder)
    return settings.model_copy(update={"journeys_dir": folder, "journey_time_scale": 0.4 / DAY})


@pytest.fixture
async def cross_sell(
    client: Client, settings: Settings, tmp_path: Path, catcher: SmtpCatcher
) -> AsyncIterator[tuple[Settings, httpx.AsyncClient]]:
    quick = shipped(tmp_path, settings, "cross_sell")
    async with api(client, quick, worker=True) as http:
        yield quick, http


async def buy(http: httpx.AsyncClient, cid: str, amount: str) -> dict[str, object]:
    r = await http.post("/events", json={"type": "purchase", "customer_id": cid, "amount": amount})
    assert r.status_code == 202, r.text
    body: dict[str, object] = r.json()
    return body


async def test_cross_sell_each_branch(
    client: Client, cross_sell: tuple[Settings, httpx.AsyncClient]
) -> None:
    settings, http = cross_sell
    looker = make_customer(settings.db_url, locale="en", preferred_channel="email")
    quiet_c = make_customer(settings.db_url, locale="en", preferred_channel="email")
    quiet_a = make_customer(settings.db_url, locale="en", preferred_channel="email")
    unreachable = make_customer(
        settings.db_url, locale="en", email_consent=False, sms_consent=False
    )
    apply_directly(settings.db_url)
    ids = {}
    for cid, amount in [
        (looker, "1500.00"),
        (quiet_c, "10.00"),
        (quiet_a, "1500.00"),
        (unreachable, "1500.00"),
    ]:
        body = await buy(http, cid, amount)
        [entry] = body["journeys"]  # type: ignore[misc]
        assert entry["journey"] == "cross_sell" and entry["started"], body
        ids[cid] = (entry["workflow_id"], body["tier"])
    assert ids[quiet_c][1] == "C" and ids[quiet_a][1] == "A"

    # The looker clicks once the offer is out: the reminder is skipped.
    handle = client.get_workflow_handle(ids[looker][0])
    for _ in range(200):
        if (await handle.query("status"))["step"] == "look":
            break
        await asyncio.sleep(0.05)
    r = await http.post("/events", json={"type": "click", "customer_id": looker})
    assert ids[looker][0] in r.json()["journeys_told"]

    looked = await finished(client, ids[looker][0])
    tier_c = await finished(client, ids[quiet_c][0])
    tier_a = await finished(client, ids[quiet_a][0])
    assert any("responded -> done" in t for t in looked.trail)
    assert [m.state for m in looked.messages] == ["sent"]
    assert any("tier == 'C' -> done" in t for t in tier_c.trail)
    assert [m.state for m in tier_c.messages] == ["sent"]
    # A tier A customer who did not look gets the reminder, by email; here, within the same
    # (shortened) day, tier A's cap of one email a day holds it back, and says so.
    assert any("else -> reminder" in t for t in tier_a.trail)
    offer, reminder = tier_a.messages
    assert offer.state == "sent" and reminder.state == "suppressed"
    assert "contact cap of tier A: 1 per day" in reminder.reason
    # An offer that could not be sent (no consent) is never reminded of.
    unsent = await finished(client, ids[unreachable][0])
    assert [m.state for m in unsent.messages] == ["suppressed"]
    assert any("else -> done" in t for t in unsent.trail), unsent.trail
    assert {looked.exit_reason, tier_c.exit_reason, tier_a.exit_reason} == {"offered"}
    subjects = [m["subject"] for m in read_outbox(settings.outbox_dir)]
    assert len(subjects) == 3 and all("something that goes with" in s for s in subjects)


async def test_tier_upgrade_waits_for_ten_local_time(
    client: Client, settings: Settings, tmp_path: Path, catcher: SmtpCatcher
) -> None:
    quick = shipped(tmp_path, settings, "tier_upgrade")
    cid = make_customer(quick.db_url, locale="en", timezone="Asia/Tokyo", first_name="Kei")
    apply_directly(quick.db_url)
    async with api(client, quick, worker=True) as http:
        body = await buy(http, cid, "1500.00")
        [entry] = body["journeys"]  # type: ignore[misc]
        assert entry["journey"] == "tier_upgrade" and entry["started"]
        done = await finished(client, entry["workflow_id"])
        # A smaller purchase that changes no tier starts nothing.
        again = await buy(http, cid, "5.00")
        assert again["journeys"] == [] and again["tier_changed"] is False
    waited = next(t for t in done.trail if "waited until" in t)
    assert "T01:00:00+00:00" in waited  # 10:00 in Tokyo is 01:00 UTC
    assert [m.state for m in done.messages] == ["sent"]
    assert [m["subject"] for m in read_outbox(quick.outbox_dir)] == ["Welcome to tier A, Kei"]
