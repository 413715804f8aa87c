"""Rules through the API: the file in force, a check with lines, an apply and its progress."""

from __future__ import annotations

import asyncio

from temporalio.client import Client

from clientela import ROOT
from clientela.db import session_scope
from clientela.people import audit
from clientela.settings import Settings
from tests.factories import make_customer, signed_in
from tests.serving import api

CRM = (ROOT / "rules" / "crm.yaml").read_text()


async def test_rules_are_read_checked_and_applied(client: Client, settings: Settings) -> None:
    keyed = settings.model_copy(update={"api_key": "service-key-for-this-test"})
    headers = signed_in(settings.db_url, mo=["marketer"], al=["admin"])
    for _ in range(5):
        make_customer(settings.db_url)
    async with api(client, keyed, worker=True) as http:
        shipped = (await http.get("/rules", headers=headers["mo"])).json()
        assert shipped["applied_at"] is None and shipped["source"] == CRM
        broken = CRM.replace("monthly_income > 100", "monthly_income >>> 100", 1)
        check = (
            await http.post("/rules/check", json={"source": broken}, headers=headers["mo"])
        ).json()
        assert check["ok"] is False and check["problems"][0]["severity"] == "error"
        assert (
            check["problems"][0]["line"] == CRM[: CRM.index("monthly_income > 100")].count("\n") + 1
        )
        good = (await http.post("/rules/check", json={"source": CRM}, headers=headers["mo"])).json()
        assert good["ok"] is True and good["ruleset"] == shipped["ruleset"]
        refused = await http.post("/rules/apply", json={"source": CRM}, headers=headers["mo"])
        assert refused.status_code == 403
        bad = await http.post("/rules/apply", json={"source": broken}, headers=headers["al"])
        assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "source"
        started = await http.post("/rules/apply", json={"source": CRM}, headers=headers["al"])
        assert started.status_code == 200, started.text
        ruleset = started.json()["ruleset"]
        for _ in range(200):
            progress = (await http.get(f"/rules/status/{ruleset}", headers=headers["mo"])).json()
            if progress.get("finished"):
                break
            await asyncio.sleep(0.1)
        assert progress["finished"] and progress["processed"] == 5
        now = (await http.get("/rules", headers=headers["mo"])).json()
        assert now["applied_at"] is not None and now["version"] == started.json()["version"]
    with session_scope(settings.db_url) as session:
        [event] = audit.recent(session, subject=f"rules:{ruleset}")
    assert (event.actor, event.action) == ("user:al", "rules.applied")
