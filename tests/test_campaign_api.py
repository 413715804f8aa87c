"""Campaigns through the management API, as the console will drive them: roles, four eyes,
errors at their line, and the audit trail."""

from __future__ import annotations

import uuid
from pathlib import Path

from temporalio.client import Client

from clientela.db import session_scope
from clientela.devstack.smtp_catcher import SmtpCatcher
from clientela.people import audit
from clientela.settings import Settings
from tests.factories import signed_in
from tests.serving import api
from tests.test_campaign_workflow import SPEC, tiered_customers, wait_stage


def people(settings: Settings) -> dict[str, dict[str, str]]:
    return signed_in(settings.db_url, marta=["marketer", "approver"], ana=["approver"])


async def test_a_campaign_from_spec_to_approval_through_the_api(
    client: Client, settings: Settings, catcher: SmtpCatcher, tmp_path: Path
) -> None:
    keyed = settings.model_copy(update={"api_key": "service-key-for-this-test"})
    who = people(settings)
    tiered_customers(settings.db_url, 5, locale="en")
    cid = f"c-api-{uuid.uuid4().hex[:8]}"
    spec = SPEC.format(id=cid, budget=10)
    async with api(client, keyed, worker=True) as http:
        broken = spec.replace("channel: email", "channel: fax")
        r = await http.post("/campaigns/preview", json={"spec": broken}, headers=who["marta"])
        assert r.status_code == 422
        [problem] = r.json()["detail"]
        assert (problem["field"], problem["line"]) == ("spec", 7) and "channel" in problem["msg"]
        r = await http.post("/campaigns/preview", json={"spec": spec}, headers=who["marta"])
        assert r.status_code == 200 and r.json()["audience"] == 5
        r = await http.post("/campaigns", json={"spec": spec}, headers=who["ana"])
        assert r.status_code == 403 and "takes the role marketer or admin" in r.text
        r = await http.post("/campaigns", json={"spec": spec}, headers=who["marta"])
        assert r.status_code == 201, r.text
        assert r.json()["id"] == cid and r.json()["preview"]["audience"] == 5
        again = await http.post("/campaigns", json={"spec": spec}, headers=who["marta"])
        assert again.status_code == 409 and "already exists" in again.json()["detail"]
        await wait_stage(client, cid, "awaiting_approval")
        own = await http.post(f"/campaigns/{cid}/approve", json={}, headers=who["marta"])
        assert own.status_code == 403 and "four eyes" in own.json()["detail"]
        ok = await http.post(f"/campaigns/{cid}/approve", json={}, headers=who["ana"])
        assert ok.status_code == 200, ok.text
        assert ok.json()["decided_by"] == "ana"
        late = await http.post(f"/campaigns/{cid}/reject", json={"reason": "x"}, headers=who["ana"])
        assert late.status_code == 409  # no longer awaiting approval
        await wait_stage(client, cid, "tracking")
        closed = await http.post(f"/campaigns/{cid}/control/close", headers=who["marta"])
        assert closed.status_code == 200
        listed = await http.get("/campaigns", headers=who["ana"])
        assert {"id": cid, "name": "Test campaign"}.items() <= listed.json()[0].items()
        missing = await http.get("/campaigns/no-such-campaign", headers=who["ana"])
        assert missing.status_code == 404
    with session_scope(settings.db_url) as session:
        trail = audit.recent(session, subject=f"campaign:{cid}")
    assert [(e.actor, e.action) for e in trail] == [
        ("user:marta", "campaign.close"),
        ("user:ana", "campaign.approved"),
        ("user:marta", "campaign.created"),
    ]
    assert trail[2].detail["by"] == "marta"
