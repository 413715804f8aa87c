"""Journeys through the API: definitions, runs, a run's trail, start by hand, cancel."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

from temporalio.client import Client

from clientela import ROOT
from clientela.db import session_scope
from clientela.devstack.smtp_catcher import SmtpCatcher
from clientela.people import audit
from clientela.settings import Settings
from tests.serving import api


async def test_journeys_are_listed_followed_started_and_cancelled(
    client: Client, settings: Settings, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    folder = tmp_path / "journeys"
    folder.mkdir()
    shutil.copy(ROOT / "journeys" / "welcome.yaml", folder)
    (folder / "broken.yaml").write_text("name: broken\nowner: x\ntrigger: {event: no#pe}\n")
    quick = settings.model_copy(update={"journeys_dir": folder})
    cid = f"J-{uuid.uuid4().hex[:8]}"  # workflow ids outlive the test's database
    async with api(client, quick, worker=True) as http:
        book = (await http.get("/journeys")).json()
        assert [j["name"] for j in book["journeys"]] == ["welcome"]
        assert book["journeys"][0]["trigger"] == {"event": "signup"}
        assert all("broken.yaml" in p for p in book["problems"])
        assert any(":3:18: error: trigger.event" in p for p in book["problems"])
        signup = {
            "type": "signup",
            "external_id": cid,
            "email": "j1@example.com",
            "email_consent": True,
        }
        assert (await http.post("/events", json=signup)).status_code == 202
        for _ in range(100):  # the visibility store lists it shortly after
            runs = (await http.get("/journeys/runs", params={"customer_id": cid})).json()
            if runs:
                break
            await asyncio.sleep(0.1)
        assert [r["journey"] for r in runs] == ["welcome"]
        run = (await http.get(f"/journeys/welcome/{cid}")).json()
        assert run["workflow_id"] == f"journey-welcome-{cid}" and run["customer_id"] == cid
        again = await http.post(f"/journeys/welcome/{cid}/start")
        assert again.status_code == 200
        assert again.json()["started"] is False and again.json()["reason"]  # re-entry: once
        cancelled = (await http.post(f"/journeys/welcome/{cid}/cancel")).json()
        assert cancelled == [f"journey-welcome-{cid}"]
        assert (await http.get("/journeys/welcome/NOBODY")).status_code == 404
        assert (await http.post(f"/journeys/nope/{cid}/start")).status_code == 404
        assert (await http.post("/journeys/welcome/NOBODY/start")).status_code == 404
    with session_scope(settings.db_url) as session:
        [event] = audit.recent(session, subject=f"journey:welcome:{cid}")
    assert event.action == "journey.cancelled" and event.actor == "api:local"
