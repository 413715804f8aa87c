"""A campaign through its workflow on the real stack: approval, sending once, control untouched."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from sqlmodel import select
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError

from clientela.campaigns import audience, html, lifecycle
from clientela.campaigns.report import build
from clientela.db import session_scope
from clientela.devstack.smtp_catcher import SmtpCatcher, read_outbox
from clientela.settings import Settings
from models import Campaign, CampaignMember, Customer
from rules.model import load
from tests.factories import make_customer
from tests.test_rules_apply import apply_directly
from workflows.campaign import CampaignStatus, CampaignWorkflow

ROOT = Path(__file__).resolve().parent.parent
RULES = load(ROOT / "rules" / "crm.yaml")

SPEC = """\
id: {id}
name: Test campaign
owner: me
target_kpi: {{metric: conversion_rate, uplift: 1}}
budget: {budget}
cost_per_message: {{email: 0.01, sms: 0.05}}
channel: email
template: spring_offer
control: {{share: 0.2}}
response_window: 60
"""


def write_spec(tmp_path: Path, campaign_id: str, budget: float = 10) -> Path:
    path = tmp_path / f"{campaign_id}.yaml"
    path.write_text(SPEC.format(id=campaign_id, budget=budget))
    return path


def tiered_customers(db_url: str, n: int, **fields: object) -> None:
    """n customers, tiered by the shipped rules (campaign audiences need decisions)."""
    for _ in range(n):
        make_customer(db_url, **fields)
    apply_directly(db_url)


def members_of(db_url: str, campaign_id: str) -> list[tuple[CampaignMember, str]]:
    """The campaign's lead list with each member's external id."""
    with session_scope(db_url) as session:
        return list(
            session.exec(
                select(CampaignMember, Customer.external_id)
                .join(Customer)
                .where(CampaignMember.campaign_id == campaign_id)
            ).all()
        )


async def wait_stage(client: Client, campaign_id: str, stage: str, within: float = 120) -> None:
    """Until the campaign is at ``stage``. A query needs a worker: while none polls (one was
    just killed, the next is starting) it fails, and is simply asked again."""
    from temporalio.service import RPCError

    deadline = asyncio.get_running_loop().time() + within
    seen = ""
    while asyncio.get_running_loop().time() < deadline:
        try:
            seen = (await lifecycle.status(client, campaign_id)).stage
        except RPCError as exc:
            seen = f"(no answer: {exc})"
        if seen == stage:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{campaign_id} never reached {stage} (last seen: {seen})")


async def approved(
    client: Client, settings: Settings, spec: Path, campaign_id: str, until: str = "tracking"
) -> tuple[audience.Preview, WorkflowHandle[CampaignWorkflow, CampaignStatus]]:
    """Create the campaign, approve it, and wait until it reaches ``until``."""
    preview, handle = await lifecycle.create(client, settings, spec, RULES)
    await wait_stage(client, campaign_id, "awaiting_approval")
    await lifecycle.decide(client, campaign_id, "approve", by="ana")
    await wait_stage(client, campaign_id, until)
    return preview, handle


async def closed(
    client: Client, campaign_id: str, handle: WorkflowHandle[CampaignWorkflow, CampaignStatus]
) -> CampaignStatus:
    """Close the response window and wait for the campaign's end."""
    await lifecycle.control(client, campaign_id, "close")
    return await handle.result()


async def test_approved_campaign_sends_once_to_the_treated_only(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    tiered_customers(settings.db_url, 30, locale="en")
    cid = f"c-ok-{uuid.uuid4().hex[:8]}"
    preview, handle = await lifecycle.create(client, settings, write_spec(tmp_path, cid), RULES)
    assert preview.audience == 30 and not preview.over_budget
    await wait_stage(client, cid, "awaiting_approval")
    assert read_outbox(settings.outbox_dir) == []  # nothing goes out before approval
    assert await lifecycle.decide(client, cid, "approve", by="ana") == "approved"
    await wait_stage(client, cid, "tracking")
    await lifecycle.control(client, cid, "close")
    final = await handle.result()
    assert final.stage == "done" and final.decided_by == "ana"
    assert (final.treated, final.control) == (24, 6)  # 20% of 30 held out
    outbox = read_outbox(settings.outbox_dir)
    with session_scope(settings.db_url) as session:
        members = session.exec(
            select(CampaignMember, Customer.email)
            .join(Customer)
            .where(CampaignMember.campaign_id == cid)
        ).all()
        report = build(session, cid)
        stage = session.get(Campaign, cid)
    treated = {email for m, email in members if m.group == "treated"}
    control = {email for m, email in members if m.group == "control"}
    recipients = [m["to"][0] for m in outbox]
    assert sorted(recipients) == sorted(treated)  # each treated customer exactly once
    assert not control & set(recipients)  # the control group is never contacted
    assert report["arms"][0]["treated"]["sent"] == 24
    assert report["arms"][0]["treated"]["cost"] == pytest.approx(0.24)
    assert stage is not None and stage.stage == "done" and stage.window_end is not None
    # Operators find it in the Web UI by its typed search attributes.
    found = [
        w.id
        async for w in client.list_workflows(f"CampaignId = '{cid}' AND Stage = 'campaign:done'")
    ]
    assert found == [f"campaign-{cid}"]


async def test_rejection_and_over_budget_refusal(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    tiered_customers(settings.db_url, 5)
    cid = f"c-pricey-{uuid.uuid4().hex[:8]}"
    preview, pricey = await lifecycle.create(
        client, settings, write_spec(tmp_path, cid, budget=0.01), RULES
    )
    assert preview.over_budget
    await wait_stage(client, cid, "awaiting_approval")
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await lifecycle.decide(client, cid, "approve", by="ana")
    assert "over the budget" in str(err.value.cause)
    with pytest.raises(WorkflowUpdateFailedError) as err:
        await lifecycle.decide(client, cid, "reject", by="ana")  # no reason given
    assert "why" in str(err.value.cause)
    assert await lifecycle.decide(client, cid, "reject", by="ana", reason="too dear") == "rejected"
    final = await pricey.result()
    assert final.stage == "rejected" and final.sent == 0
    assert read_outbox(settings.outbox_dir) == []
    with session_scope(settings.db_url) as session:
        row = session.get(Campaign, cid)
        assert row is not None and row.stage == "rejected"
        assert "rejected by ana: too dear" in row.spec["history"]


async def test_pause_holds_the_sending_and_cancel_stops_it(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    tiered_customers(settings.db_url, 12)
    cid = f"c-pause-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "c-pause.yaml"
    path.write_text(
        SPEC.format(id=cid, budget=10).replace("control: {share: 0.2}", "control: {share: 0}")
    )
    _, handle = await lifecycle.create(client, settings, path, RULES)
    await wait_stage(client, cid, "awaiting_approval")
    await lifecycle.control(client, cid, "pause")
    await lifecycle.decide(client, cid, "approve", by="ana")
    await wait_stage(client, cid, "sending")
    await asyncio.sleep(1)
    status = await lifecycle.status(client, cid)
    assert status.paused and status.sent == 0 and read_outbox(settings.outbox_dir) == []
    await lifecycle.control(client, cid, "cancel")
    final = await handle.result()
    assert final.stage == "cancelled" and read_outbox(settings.outbox_dir) == []


async def test_the_cli_drives_a_campaign(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    from tests.processes import run_cli

    tiered_customers(settings.db_url, 4, locale="en")
    cid = f"c-cli-{uuid.uuid4().hex[:8]}"
    spec = write_spec(tmp_path, cid)

    def cli(*args: str) -> object:
        return asyncio.to_thread(run_cli, settings, *args)

    created = await cli("campaign", "create", str(spec), "--json")
    assert created.returncode == 0, created.stderr  # type: ignore[attr-defined]
    assert json.loads(created.stdout)["audience"] == 4  # type: ignore[attr-defined]
    again = await cli("campaign", "create", str(spec))
    assert again.returncode == 2 and "already exists" in again.stderr  # type: ignore[attr-defined]
    await wait_stage(client, cid, "awaiting_approval")
    nobody = await cli("campaign", "approve", cid, "--by", " ")
    assert nobody.returncode == 1 and "say who does this: --by NAME" in nobody.stderr  # type: ignore[attr-defined]
    ok = await cli("campaign", "approve", cid, "--by", "ana")
    assert ok.returncode == 0, ok.stderr  # type: ignore[attr-defined]
    await wait_stage(client, cid, "tracking")
    status = await cli("campaign", "status", cid, "--json")
    data = json.loads(status.stdout)  # type: ignore[attr-defined]
    assert data["stage"] == "tracking" and data["sent"] == data["treated"] == 3
    said = await cli("campaign", "status", cid)
    text = said.stdout  # type: ignore[attr-defined]
    assert "3 to contact, 1 held out, 0 excluded" in text, text
    assert "messages: 3 of 3 handled: 3 sent" in text and "{" not in text, text
    closed = await cli("campaign", "close", cid)
    assert closed.returncode == 0  # type: ignore[attr-defined]
    assert "closing the response window now; the report follows" in closed.stdout  # type: ignore[attr-defined]
    await lifecycle.handle(client, cid).result()
    trail = await cli("audit", "list", "--subject", f"campaign:{cid}", "--json")
    actions = [e["action"] for e in json.loads(trail.stdout)]  # type: ignore[attr-defined]
    assert actions == ["campaign.close", "campaign.approved", "campaign.created"]
    listed = json.loads((await cli("campaign", "list", "--json")).stdout)  # type: ignore[attr-defined]
    assert {"id": cid, "name": "Test campaign", "stage": "done"} in listed
    unknown = await cli("campaign", "status", "no-such-campaign")
    assert unknown.returncode == 1  # type: ignore[attr-defined]


async def test_responses_posted_to_the_api_count_in_the_report(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    import httpx

    from api.app import create_app

    tiered_customers(settings.db_url, 10, locale="en")
    cid = f"c-resp-{uuid.uuid4().hex[:8]}"
    _, handle = await lifecycle.create(client, settings, write_spec(tmp_path, cid), RULES)
    await wait_stage(client, cid, "awaiting_approval")
    await lifecycle.decide(client, cid, "approve", by="ana")
    await wait_stage(client, cid, "tracking")
    members = members_of(settings.db_url, cid)
    treated = [e for m, e in members if m.group == "treated"]
    control = [e for m, e in members if m.group == "control"]
    app = create_app(settings, client)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        for customer, kind, value in (
            (treated[0], "click", None),
            (treated[0], "conversion", "40.00"),
            (treated[1], "visit", None),
            (control[0], "conversion", "15.50"),  # control customers' conversions count too
        ):
            body = {"type": kind, "customer_id": customer, "campaign": cid, "channel": "web"}
            if value:
                body["value"] = value
            r = await http.post("/events", json=body)
            assert r.status_code == 202, r.text
        live = await http.get(f"/campaigns/{cid}/report")  # the report as of now, by API
        assert live.status_code == 200 and live.json()["arms"][0]["treated"]["conversions"] == 1
        assert live.json()["campaign"]["interim"] is True  # the window is still open
        page = await http.get(f"/campaigns/{cid}/report.html")
        assert page.status_code == 200 and "<svg" in page.text
        assert (await http.get("/campaigns/nope/report")).status_code == 404
    await lifecycle.control(client, cid, "close")
    await handle.result()
    with session_scope(settings.db_url) as session:
        data = build(session, cid)
    [arm] = data["arms"]
    # A visit or a conversion is a response a held-out customer can make too; the click is
    # engagement, counted apart and never in the uplift.
    assert (arm["treated"]["responded"], arm["treated"]["visits"]) == (2, 1)
    assert arm["treated"]["engagement"]["clicked"] == 1
    # The report opens with its answer to the spec's target: a few customers cannot settle it.
    assert data["campaign"]["interim"] is False
    said = arm["verdict"]
    assert (said["metric"], said["verdict"]) == ("conversion_rate", "cannot tell yet")
    assert said["said"].startswith("Conversion rate uplift") and "straddles" in said["said"]
    # The same figures by tier (all tier C here) and channel, and over time.
    [tier] = data["breakdown"]["tier"]
    assert tier["value"] == "C" and tier["treated"]["conversions"] == 1
    assert tier["control_group"]["revenue"] == 15.5
    assert {row["value"] for row in data["breakdown"]["channel"]} == {"email"}
    assert sum(p["conversions"] for p in data["timeline"]["points"]) == 2
    assert data["timeline"]["bucket"] == "1m"  # all within seconds
    page = html.render(data)
    assert page.count("<svg") == 3 and "Arm main" in page  # forest, funnel, timeline
    assert "<b>Arm main: cannot tell yet.</b>" in page
    assert "40.00" in page and "15.50" in page
    assert (arm["treated"]["conversions"], arm["treated"]["revenue"]) == (1, 40.0)
    assert (arm["control_group"]["conversions"], arm["control_group"]["revenue"]) == (1, 15.5)
