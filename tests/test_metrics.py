"""Prometheus metrics: the named series are exposed by the API and by a worker process (its
own and the Temporal SDK's), and they move when a customer signs up and is welcomed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from temporalio.client import Client

from clientela.devstack.smtp_catcher import SmtpCatcher
from clientela.settings import Settings
from tests.conftest import free_port
from tests.factories import make_customer, signed_in
from tests.processes import start_worker
from tests.serving import api
from tests.test_welcome import finished, quick

SERIES = [
    "clientela_messages",
    "clientela_send_seconds",
    "clientela_provider_errors",
    "clientela_ledger_lock_waits",
    "clientela_events_accepted",
    "clientela_journeys_started",
    "clientela_ledger_messages",
    "clientela_journeys_running",
]


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


async def scrape(url: str) -> str:
    async with httpx.AsyncClient(timeout=10) as http:
        got = await http.get(url)
        got.raise_for_status()
        return got.text


async def test_the_series_move_when_a_customer_is_welcomed(
    client: Client, settings: Settings, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    ports = {"worker_metrics_port": free_port(), "temporal_metrics_port": free_port()}
    fast = quick(settings).model_copy(update=ports)
    worker = start_worker(fast, tmp_path / "worker.log")
    people = signed_in(settings.db_url, admin=["admin"], desk=["desk"])
    events_before = (
        REGISTRY.get_sample_value("clientela_events_accepted_total", {"type": "signup"}) or 0.0
    )
    started_before = (
        REGISTRY.get_sample_value("clientela_journeys_started_total", {"journey": "welcome"}) or 0.0
    )
    try:
        cid = make_customer(settings.db_url, preferred_channel="email", locale="en")
        async with api(client, fast) as http:
            got = await http.post("/events", json={"type": "signup", "external_id": cid})
            assert got.status_code == 202, got.text
            await finished(client, f"journey-welcome-{cid}")
            page = await http.get("/metrics", headers=people["admin"])
            assert page.status_code == 200
            assert (await http.get("/metrics", headers=people["desk"])).status_code == 403
        text = page.text
        for name in ("clientela_events_accepted", "clientela_journeys_started",
                     "clientela_ledger_messages", "clientela_journeys_running"):  # fmt: skip
            assert f"# TYPE {name}" in text, name
        assert sample(text, "clientela_events_accepted_total", type="signup") == events_before + 1
        assert (
            sample(text, "clientela_journeys_started_total", journey="welcome")
            == started_before + 1
        )
        assert sample(text, "clientela_ledger_messages", state="sent") == 2  # welcome, reminder
        assert sample(text, "clientela_journeys_running") is not None
        # The worker sent them: its own port counts them, with their latency.
        mine = await scrape(f"http://127.0.0.1:{ports['worker_metrics_port']}/metrics")
        for name in ("clientela_messages", "clientela_send_seconds", "clientela_provider_errors"):
            assert f"# TYPE {name}" in mine, name
        assert sample(mine, "clientela_messages_total", channel="email", outcome="sent") == 2
        assert sample(mine, "clientela_send_seconds_count", channel="email") == 2
        for name in SERIES:  # every named series, from one process or the other
            assert f"# TYPE {name}" in text + mine, name
        # And the Temporal SDK's own series, on the other port.
        deadline = time.monotonic() + 30
        while True:  # the SDK exports on its own schedule
            sdk = await scrape(f"http://127.0.0.1:{ports['temporal_metrics_port']}/metrics")
            if "temporal_workflow_completed" in sdk or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert "temporal_workflow_completed" in sdk and "temporal_activity_execution_latency" in sdk
    finally:
        worker.terminate()
        worker.wait(30)
