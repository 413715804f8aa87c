"""Complaint cases on the real stack: acknowledged, reminded, escalated on breach, resolved in
time, rated through the survey link; and the service report built from them."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import re
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from clientela.db import session_scope
from clientela.devstack.smtp_catcher import read_outbox
from clientela.service import cases as complaints
from clientela.service import report
from clientela.settings import Settings
from tests.factories import make_customer
from tests.processes import run_cli
from tests.serving import api
from tests.test_rules_apply import CRM, apply_directly
from workflows.complaint import CaseResult, ComplaintCase

DESK, LEAD = "desk@example.com", "lead@example.com"


def quick_rules(tmp_path: Path, response_h: float = 0.002, resolution_h: float = 0.005) -> Path:
    """The shipped rules with service levels of seconds: response 7.2 s, resolution 18 s,
    reminders 3.6 s before each due time."""
    level = (
        f"service_level: {{complaint_response_hours: {response_h}, complaint_resolution_hours: "
        f"{resolution_h}, remind_before_hours: 0.001, responsible: desk team, "
        f"responsible_email: {DESK}, escalate_to: 'Lead <{LEAD}>'}}"
    )
    text = re.sub(r"service_level: \{[^}]*\}", level, CRM.read_text())
    path = tmp_path / "crm-quick.yaml"
    path.write_text(text)
    return path


@pytest.fixture
def fast(settings: Settings) -> Settings:
    return settings.model_copy(update={"satisfaction_wait": timedelta(seconds=3)})


@pytest.fixture
async def http(client: Client, fast: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with api(client, fast) as c:
        yield c


@pytest.fixture
async def case_worker(client: Client, fast: Settings) -> AsyncIterator[None]:
    from worker import build_worker

    async with build_worker(client, fast):
        yield


def mails(settings: Settings) -> list[dict[str, Any]]:
    return read_outbox(settings.outbox_dir)


def body_of(settings: Settings, entry: dict[str, Any]) -> str:
    raw = (settings.outbox_dir / entry["file"]).read_bytes()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


async def open_complaint(http: httpx.AsyncClient, cid: str, code: str) -> dict[str, Any]:
    r = await http.post(
        "/events",
        json={"type": "complaint", "customer_id": cid, "code": code, "channel": "email"},
    )
    assert r.status_code == 202, r.text
    case: dict[str, Any] = r.json()["complaint"]
    return case


async def wait_for(predicate: Any, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.2)


async def test_a_complaint_left_unanswered_is_reminded_escalated_then_resolved_and_rated(
    http: httpx.AsyncClient, client: Client, fast: Settings, case_worker: None, tmp_path: Path
) -> None:
    cid = make_customer(fast.db_url, locale="en", preferred_channel="sms")
    apply_directly(fast.db_url, quick_rules(tmp_path))
    opened = await open_complaint(http, cid, "BILLING-01")
    assert opened["responsible"] == "desk team" and opened["due_at"]
    handle = client.get_workflow_handle(opened["workflow_id"])

    # Acknowledged at once, on the channel the complaint came through (not the preferred
    # SMS), with the tier's response time.
    await wait_for(lambda: len(mails(fast)) >= 1)
    [ack] = mails(fast)
    assert ack["to"] == [f"ana{int(cid[1:])}@example.com"]
    assert ack["subject"] == f"We have received your complaint {opened['id']}"

    # Nobody answers: the desk is reminded before the due time, then the lead and the desk
    # are told of the breach.
    await wait_for(lambda: len(mails(fast)) >= 4, within=40)
    staff = mails(fast)[1:4]
    assert [m["to"] for m in staff] == [[DESK], [LEAD], [DESK]]
    assert staff[0]["subject"].startswith(f"Reminder: complaint {opened['id']} (BILLING-01")
    assert all(m["subject"].startswith("Escalated: complaint") for m in staff[1:])
    assert "breached its response time" in staff[1]["subject"]
    for _ in range(100):  # the step is recorded just after its messages go out
        status = await handle.query("status")
        if "escalated:response" in status["steps"]:
            break
        await asyncio.sleep(0.1)
    assert status["steps"] == ["acknowledged", "escalated:response", "reminded:response"]

    # The desk resolves it: the customer gets the survey and rates through its link.
    r = await http.post(
        f"/complaints/{opened['id']}/resolution",
        json={"by": "marta", "resolution": "refunded the double charge"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "resolved" and r.json()["workflow_told"] is True
    await wait_for(lambda: any("How did we handle" in m["subject"] for m in mails(fast)))
    survey = next(m for m in mails(fast) if "How did we handle" in m["subject"])
    text = body_of(fast, survey)
    assert "refunded the double charge" in text
    link = re.search(r"(/s/[A-Za-z0-9_-]+)\?score=4", text)
    assert link is not None
    page = await http.get(f"{link.group(1)}?score=4")  # what a link scanner does: nothing
    assert page.status_code == 200 and "How satisfied" in page.text
    assert 'value="4" required checked' in page.text  # the number chosen in the email
    answer = await http.post(
        link.group(1),
        content="score=4&comment=quick+once+answered",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200 and "Thank you" in answer.text
    again = await http.post(
        link.group(1),
        content="score=1",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert "answered already" in again.text

    result = await client.get_workflow_handle_for(ComplaintCase.run, opened["workflow_id"]).result()
    assert isinstance(result, CaseResult) and result.satisfaction_given
    assert result.steps == [
        "acknowledged",
        "closed",
        "escalated:response",
        "reminded:response",
        "surveyed",
    ]
    case = (await http.get(f"/complaints/{opened['id']}")).json()
    assert case["state"] == "closed" and case["satisfaction"] == 4
    assert case["breached"] == ["response"] and case["escalated_at"]
    assert case["responded_by"] == "marta"

    data = (await http.get("/service/report")).json()
    tier = data["by_tier"][0]
    assert data["overall"]["opened"] == 1 and data["overall"]["response_breaches"] == 1
    assert data["overall"]["resolution_breaches"] == 0 and data["overall"]["escalated"] == 1
    assert data["overall"]["satisfaction"]["mean"] == 4 and tier["tier"] == case["tier"]
    assert data["codes"] == [
        {
            "code": "BILLING-01",
            "count": 1,
            "share": 1.0,
            "unresolved": 0,
            "resolution_hours": data["codes"][0]["resolution_hours"],
            "satisfaction_mean": 4.0,
            "by_tier": {case["tier"]: 1},
        }
    ]
    assert data["codes"][0]["resolution_hours"] >= 0.002  # resolved after the 7.2 s breach


async def test_a_complaint_answered_in_time_is_never_escalated_and_closes_unrated(
    http: httpx.AsyncClient, client: Client, fast: Settings, case_worker: None, tmp_path: Path
) -> None:
    cid = make_customer(fast.db_url, locale="es", preferred_channel="email")
    apply_directly(fast.db_url, quick_rules(tmp_path, response_h=0.003, resolution_h=0.006))
    opened = await open_complaint(http, cid, "DELIVERY-02")
    await wait_for(lambda: len(mails(fast)) >= 1)
    assert mails(fast)[0]["subject"] == f"Hemos recibido su reclamo {opened['id']}"
    r = await http.post(f"/complaints/{opened['id']}/response", json={"by": "luis"})
    assert r.status_code == 200 and r.json()["state"] == "responded"
    # A second answer does not move the first.
    first = r.json()["responded_at"]
    r = await http.post(f"/complaints/{opened['id']}/response", json={"by": "ana"})
    assert r.json()["responded_at"] == first and r.json()["responded_by"] == "luis"
    # A score before the resolution is refused.
    early = await http.post(f"/complaints/{opened['id']}/satisfaction", json={"score": 5})
    assert early.status_code == 409 and "not resolved" in early.json()["detail"]
    # Past the time the response would have breached, still only the acknowledgement.
    await asyncio.sleep(11)
    assert len(mails(fast)) == 1
    r = await http.post(f"/complaints/{opened['id']}/resolution", json={"by": "luis"})
    assert r.status_code == 200
    # The survey goes out; nobody answers; the case closes when the wait runs out.
    result = await client.get_workflow_handle_for(ComplaintCase.run, opened["workflow_id"]).result()
    assert not result.satisfaction_given
    assert result.steps == ["acknowledged", "closed", "surveyed"]
    subjects = [m["subject"] for m in mails(fast)]
    assert subjects == [
        f"Hemos recibido su reclamo {opened['id']}",
        f"¿Cómo atendimos su reclamo {opened['id']}?",
    ]
    with session_scope(fast.db_url) as session:
        row = complaints.get_case(session, opened["id"])
        data = report.build(session)
    assert row.state == "closed" and row.satisfaction is None
    assert complaints.breaches(row, row.closed_at or row.opened_at) == []
    overall = data["overall"]
    assert overall["response_breaches"] == 0 and overall["resolution_breaches"] == 0
    assert overall["response_within_level"] == 1.0
    assert overall["satisfaction"] == {
        "surveyed": 1,
        "rated": 0,
        "answer_rate": 0.0,
        "mean": None,
        "satisfied_share": None,
        "distribution": {"1": 0, "2": 0, "3": 0, "4": 0, "5": 0},
    }


async def test_case_endpoints_refuse_what_they_cannot_take(
    http: httpx.AsyncClient, fast: Settings
) -> None:
    missing = await http.get("/complaints/999999")
    assert missing.status_code == 404 and "no complaint with id 999999" in missing.text
    bad = await http.post("/complaints/1/satisfaction", json={"score": 6})
    assert bad.status_code == 422 and "score" in bad.text
    forged = await http.get("/s/not-a-token")
    assert forged.status_code == 404 and "not valid" in forged.text
    unknown = await http.post(
        "/events", json={"type": "complaint", "customer_id": "NOBODY", "code": "X"}
    )
    assert unknown.status_code == 404 and "customer_id" in unknown.text


def test_service_report_by_tier_codes_and_the_cases_breaching_now(
    settings: Settings, tmp_path: Path
) -> None:
    """Cases written directly (as the API does), then the report: times, breaches, codes,
    satisfaction by tier, and the overdue list with the most important tier first."""
    from clientela.customers import realtime
    from clientela.timeutil import utcnow
    from models import Complaint

    ids = [make_customer(settings.db_url) for _ in range(3)]
    apply_directly(settings.db_url)
    now = utcnow()
    with session_scope(settings.db_url) as session:
        opened = [
            realtime.complaint(
                session, customer_id=cid, code=code, description="", today=now.date()
            ).detail["complaint"]["id"]
            for cid, code in [(ids[0], "BILLING"), (ids[1], "BILLING"), (ids[2], "NETWORK")]
        ]
        rows = [session.get(Complaint, i) for i in opened]
        for row in rows:  # pretend they were opened two days ago
            assert row is not None
            shift = now - timedelta(days=2) - row.opened_at.replace(tzinfo=now.tzinfo)
            row.opened_at += shift
            row.due_at = row.due_at + shift if row.due_at else None
            row.resolution_due_at = row.resolution_due_at + shift if row.resolution_due_at else None
            session.add(row)
        session.flush()
        complaints.respond(session, opened[0], by="x")
        complaints.resolve(session, opened[0], by="x")
        complaints.rate(session, opened[0], score=5)
        with pytest.raises(complaints.CaseConflict, match="rated already"):
            complaints.rate(session, opened[0], score=1)
        tiers = {row.id: row.tier for row in rows if row is not None}
    with session_scope(settings.db_url) as session:
        data = report.build(session)
    overall = data["overall"]
    assert overall["opened"] == 3 and overall["unresolved"] == 2 and overall["resolved"] == 1
    # Every tier's response time is under two days: all three broke the response level.
    assert overall["response_breaches"] == 3
    assert overall["satisfaction"]["mean"] == 5 and overall["satisfaction"]["satisfied_share"] == 1
    assert [c["code"] for c in data["codes"]] == ["BILLING", "NETWORK"]
    assert [c["count"] for c in data["codes"]] == [2, 1]
    assert sum(t["opened"] for t in data["by_tier"]) == 3
    assert {c["id"] for c in data["overdue"]} == {opened[1], opened[2]}
    levels = ["A", "B", "C"]
    ranks = [levels.index(c["tier"]) for c in data["overdue"]]
    assert ranks == sorted(ranks)
    assert set(tiers.values()) <= set(levels)

    # The same through the command line: text, JSON and a page.
    page = tmp_path / "service.html"
    text = run_cli(settings, "service", "report", "--html", str(page))
    assert text.returncode == 0, text.stderr
    assert "BILLING" in text.stdout and "breaching now" in text.stdout
    assert "<h1>Service report</h1>" in page.read_text() and "NETWORK" in page.read_text()
    as_json = run_cli(settings, "service", "report", "--json")
    assert json.loads(as_json.stdout)["overall"]["opened"] == 3
    shown = run_cli(settings, "complaint", "show", str(opened[0]))
    assert shown.returncode == 0 and "resolved" in shown.stdout and "5/5" in shown.stdout
    listed = run_cli(settings, "complaint", "list", "--state", "unresolved", "--json")
    assert {c["id"] for c in json.loads(listed.stdout)} == {opened[1], opened[2]}
    customer = run_cli(settings, "customers", "show", ids[0])
    assert "Complaints" in customer.stdout and "BILLING" in customer.stdout
    assert "resolved" in customer.stdout
    wrong = run_cli(settings, "complaint", "show", "424242")
    assert wrong.returncode == 1 and "no complaint with id 424242" in wrong.stderr
