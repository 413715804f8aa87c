"""Finding a customer and why they are in their tier, through the API."""

from __future__ import annotations

from temporalio.client import Client

from clientela.settings import Settings
from tests.factories import make_customer
from tests.serving import api
from tests.test_rules_apply import apply_directly


async def test_search_by_id_email_phone_and_name_start(client: Client, settings: Settings) -> None:
    ana = make_customer(
        settings.db_url,
        first_name="Ana",
        last_name="Zubiría",
        email="ana.z@example.com",
        phone="+34600111222",
    )
    make_customer(settings.db_url, first_name="Anabel", last_name="Ortiz")
    make_customer(settings.db_url, first_name="Bruno", last_name="Anaya")
    apply_directly(settings.db_url)
    async with api(client, settings) as http:

        async def ids(q: str) -> list[str]:
            r = await http.get("/customers", params={"q": q})
            assert r.status_code == 200, r.text
            return [hit["id"] for hit in r.json()]

        assert await ids(ana) == [ana]
        assert await ids("ANA.Z@example.com") == [ana]
        assert await ids("+34 600 111 222") == [ana]
        by_name = await ids("ana")  # Anaya (last name), then Ana and Anabel (first names)
        assert len(by_name) == 3 and ana in by_name
        assert await ids("zub") == [ana]
        assert await ids("nobody-like-this") == []
        assert (await http.get("/customers", params={"q": ""})).status_code == 422
        why = await http.get(f"/customers/{ana}/explanation")
        assert why.status_code == 200, why.text
        body = why.json()
        assert body["tier"] in ("A", "B", "C") and body["tier_rules_tried"]
        missing = await http.get("/customers/NOBODY-1/explanation")
        assert missing.status_code == 404


async def test_erasing_a_customer_stops_their_workflows_and_deletes_everything(
    client: Client, settings: Settings, catcher: object
) -> None:
    from sqlmodel import func, select

    from clientela.db import session_scope
    from clientela.people import audit
    from models import Complaint, Consent, Customer, Message
    from tests.factories import signed_in

    who = signed_in(settings.db_url, root=["admin"], marta=["marketer"])
    keep = make_customer(settings.db_url, email="keep@example.com")
    async with api(client, settings, worker=True) as http:
        r = await http.post(
            "/events",
            json={
                "type": "signup",
                "external_id": "GONE-1",
                "email": "gone@example.com",
                "email_consent": True,
            },
        )
        assert r.status_code == 202, r.text
        [welcome] = r.json()["journeys"]
        r = await http.post(
            "/events",
            json={"type": "complaint", "customer_id": "GONE-1", "code": "BILLING"},
        )
        assert r.status_code == 202, r.text
        assert (await http.delete("/customers/GONE-1", headers=who["marta"])).status_code == 403
        r = await http.delete("/customers/GONE-1", headers=who["root"])
        assert r.status_code == 200, r.text
        done = r.json()
        assert done["complaints"] == 1 and done["workflows_stopped"] >= 2
        assert (await http.get("/customers/GONE-1")).status_code == 404
        assert (await http.delete("/customers/GONE-1", headers=who["root"])).status_code == 404
        assert (await http.get(f"/customers/{keep}")).status_code == 200
    described = await client.get_workflow_handle(welcome["workflow_id"]).describe()
    assert described.status is not None and described.status.name in ("CANCELED", "COMPLETED")
    with session_scope(settings.db_url) as session:
        gone = session.exec(select(Customer).where(Customer.external_id == "GONE-1")).first()
        assert gone is None
        for table in (Message, Complaint, Consent):
            left = session.exec(
                select(func.count())
                .select_from(table)
                .join(Customer)
                .where(Customer.external_id == "GONE-1")
            ).one()
            assert left == 0
        [erased] = audit.recent(session, subject="customer:GONE-1")
    assert (erased.actor, erased.action) == ("user:root", "customer.erased")
    assert "gone@example.com" not in str(erased.detail)


def test_the_cli_erases_only_when_told_twice(settings: Settings) -> None:
    from tests.processes import run_cli

    cid = make_customer(settings.db_url)
    first = run_cli(settings, "customers", "erase", cid)
    assert first.returncode == 1 and "cannot be undone: run again with --yes" in first.stderr
    assert run_cli(settings, "customers", "show", cid).returncode == 0
    done = run_cli(settings, "customers", "erase", cid, "--yes")
    assert done.returncode == 0, done.stderr
    assert f"Erased {cid}: 0 messages" in done.stdout
    gone = run_cli(settings, "customers", "show", cid)
    assert gone.returncode == 1 and "no customer" in gone.stderr
