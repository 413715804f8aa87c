"""The command line, run as a user runs it: a separate process configured by environment."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

from temporalio.client import Client

from clientela.devstack.smtp_catcher import SmtpCatcher
from clientela.settings import Settings
from tests.factories import make_customer
from tests.processes import run_cli
from workflows.journey import JourneyWorkflow


def test_import_reports_bad_rows_and_exits_non_zero(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("external_id,email,locale\nX1,x1@example.com,es\nX2,bad,en\nX3,,fr\n")
    r = run_cli(settings, "customers", "import", str(path))
    assert r.returncode == 1
    assert f"{path}:3: email: 'bad' is not a usable email address: " in r.stderr
    assert f"{path}:4: locale: 'fr' is not a supported locale" in r.stderr
    assert "1 created, 0 updated, 2 rows rejected" in r.stdout
    shown = run_cli(settings, "customers", "show", "X1", "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["profile"]["email"] == "x1@example.com"


def test_bad_file_and_unknown_customer_are_one_line_errors(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "c.csv"
    path.write_text("customer,email\n1,a@example.com\n")
    r = run_cli(settings, "customers", "import", str(path))
    assert r.returncode == 1 and "unknown column(s) 'customer'" in r.stderr
    r = run_cli(settings, "customers", "show", "nobody")
    assert r.returncode == 1 and "no customer with id 'nobody'" in r.stderr
    r = run_cli(settings, "journey", "start", "birthday-party", "nobody")
    assert r.returncode == 1 and "no journey named 'birthday-party'" in r.stderr


def test_bad_configuration_names_the_setting(settings: Settings) -> None:
    r = run_cli(settings, "customers", "show", "x", env={"CLIENTELA_SEND_LEASE": "soon"})
    assert r.returncode == 1
    assert "configuration: CLIENTELA_SEND_LEASE (send_lease):" in r.stderr


async def test_journey_start_and_status(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher
) -> None:
    settings = settings.model_copy(update={"journey_time_scale": 1 / (2 * 24 * 3600)})
    cid = make_customer(settings.db_url, external_id=f"CLI-{uuid.uuid4().hex[:6]}")
    r = await asyncio.to_thread(run_cli, settings, "journey", "start", "welcome", cid)
    assert r.returncode == 0, r.stderr
    assert f"Started journey-welcome-{cid}" in r.stdout
    again = await asyncio.to_thread(run_cli, settings, "journey", "start", "welcome", cid)
    assert again.returncode == 2 and "already in it (re-entry policy)" in again.stderr
    await client.get_workflow_handle_for(JourneyWorkflow.run, f"journey-welcome-{cid}").result()
    status = await asyncio.to_thread(
        run_cli, settings, "journey", "status", "welcome", cid, "--json"
    )
    data = json.loads(status.stdout)
    assert data["execution"] == "COMPLETED" and data["step"] == "done"
    assert data["messages"][0]["state"] == "sent"
    listed = await asyncio.to_thread(
        run_cli, settings, "journey", "list", "--customer", cid, "--json"
    )
    assert [r["workflow_id"] for r in json.loads(listed.stdout)] == [f"journey-welcome-{cid}"]
    missing = await asyncio.to_thread(run_cli, settings, "journey", "status", "welcome", "zzz")
    assert missing.returncode == 1 and "no welcome journey for customer 'zzz'" in missing.stderr


def test_what_a_campaign_signal_will_do_is_said() -> None:
    """`campaign close` while SMS wait for quiet hours says so (and what cancel would do)."""
    from types import SimpleNamespace

    from commands.campaigns import _what_follows

    waiting = SimpleNamespace(
        stage="waiting", counts={"sent": 6, "deferred": 35}, waiting_until="2026-12-02T07:00Z"
    )
    said = _what_follows("close", waiting)
    assert "35 messages wait for quiet hours (until 2026-12-02T07:00Z)" in said
    assert "report follows once they are sent" in said and "Cancel" in said
    done = SimpleNamespace(stage="done", counts={}, waiting_until="")
    assert "done already, so nothing changes" in _what_follows("close", done)
