"""A data subject's rights on the real stack: export holds everything held about them;
erasure leaves no personal data in any table (every column of every row is read), keeps the
campaign report's totals, and a later import of the same address stays without consent
until the person signs up afresh."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlmodel import SQLModel, select
from temporalio.client import Client

from activities.campaigns import member_key
from activities.contracts import MessageRequest
from clientela.campaigns import report
from clientela.customers.records import consents, import_customers
from clientela.db import get_engine, session_scope
from clientela.devstack.smtp_catcher import SmtpCatcher
from clientela.settings import Settings
from models import Campaign, CampaignMember, Customer
from tests.factories import make_customer, signed_in
from tests.processes import run_cli
from tests.serving import api
from tests.test_sms_inbound import signed
from tests.test_tracking import BROWSER, hrefs, later, parts, send

PERSON = {
    "external_id": "ERASE-ME-7",
    "first_name": "Rosalía",
    "last_name": "Villanueva",
    "email": "rosalia.villanueva@example.org",
    "phone": "+34611987654",
    "birthday": "1988-04-12",
    "email_consent": True,
    "sms_consent": True,
    "locale": "es",
}


def everything(settings: Settings) -> list[tuple[str, dict[str, Any]]]:
    """Every row of every table, as (table, row)."""
    engine = get_engine(settings.db_url)
    rows = []
    with engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            for row in conn.execute(text(f'SELECT * FROM "{table.name}"')).mappings():
                rows.append((table.name, dict(row)))
    return rows


def mentions(rows: list[tuple[str, dict[str, Any]]], needles: list[str]) -> list[str]:
    found = []
    for table, row in rows:
        for column, value in row.items():
            if value is None:
                continue
            written = json.dumps(value, default=str, ensure_ascii=False).lower()
            written += " " + str(value).lower()
            for needle in needles:
                if needle.lower() in written:
                    found.append(f"{table}.{column} holds {needle!r}: {str(value)[:120]}")
    return found


async def a_customer_with_a_history(client: Client, settings: Settings) -> None:
    """Signed up, in a campaign whose email they opened and clicked, who bought through it,
    replied to an SMS and complained."""
    with session_scope(settings.db_url) as session:
        session.add(Campaign(id="rights", name="Rights", spec={}, stage="tracking"))
    async with api(client, settings, worker=True) as http:
        r = await http.post(
            "/events", json={"type": "signup", **PERSON, "consent_source": "signup"}
        )
        assert r.status_code == 202, r.text
        with session_scope(settings.db_url) as session:
            pk = session.exec(
                select(Customer.id).where(Customer.external_id == PERSON["external_id"])
            ).one()
            assert pk is not None
            session.add(CampaignMember(campaign_id="rights", customer_id=pk, channel="email",
                                       address=PERSON["email"], tier="A"))  # fmt: skip
        key = member_key("rights", PERSON["external_id"])
        await send(
            settings,
            MessageRequest(
                key=key,
                customer_id=PERSON["external_id"],
                template="spring_offer",
                channel="email",
                campaign="rights",
            ),
        )
        html, _ = parts(settings, key)
        later(settings, key)
        [link] = [u for u in hrefs(html) if "/c/" in u]
        r = await http.get(link.removeprefix(settings.recipient_base_url),
                           headers={"User-Agent": BROWSER})  # fmt: skip
        assert r.status_code == 302
        r = await http.post("/events", json={"type": "conversion", "customer_id": "ERASE-ME-7",
                                             "campaign": "rights", "value": "42.50"})  # fmt: skip
        assert r.status_code == 202, r.text
        r = await http.post("/webhooks/twilio/inbound", **signed(settings, {
            "MessageSid": "SMrights1", "From": PERSON["phone"],
            "Body": "Soy Rosalía Villanueva, llamadme al +34611987654",
        }))  # fmt: skip
        assert r.status_code == 200, r.text
        r = await http.post("/events", json={
            "type": "complaint", "customer_id": "ERASE-ME-7", "code": "BILLING-01",
            "description": "Rosalía Villanueva: me cobraron dos veces",
        })  # fmt: skip
        assert r.status_code == 202, r.text


async def test_export_holds_everything_and_erasure_keeps_only_anonymous_counts(
    client: Client, settings: Settings, catcher: SmtpCatcher, sms_sink: object, tmp_path: Path
) -> None:
    await a_customer_with_a_history(client, settings)
    who = signed_in(settings.db_url, root=["admin"], marta=["marketer"])
    cid = PERSON["external_id"]
    with session_scope(settings.db_url) as session:
        before = report.build(session, "rights")
    async with api(client, settings, worker=True) as http:
        assert (await http.get(f"/customers/{cid}/export", headers=who["marta"])).status_code == 403
        r = await http.get(f"/customers/{cid}/export", headers=who["root"])
        assert r.status_code == 200, r.text
        doc = r.json()
        assert doc["profile"]["email"] == PERSON["email"]
        assert doc["profile"]["birthday"] == PERSON["birthday"]
        assert {(c["channel"], c["granted"]) for c in doc["consent"]} == {
            ("email", True), ("sms", True)
        }  # fmt: skip
        assert [(c["channel"], c["source"]) for c in doc["consent_log"]][:2] == [
            ("email", "signup"), ("sms", "signup")
        ]  # fmt: skip
        assert any(m["address"] == PERSON["email"] for m in doc["messages"])
        kinds = {h["kind"] for h in doc["history"]}
        assert {"click", "conversion", "reply", "consent", "message"} <= kinds
        assert any("llamadme" in json.dumps(h["detail"]) for h in doc["history"])
        assert doc["complaints"][0]["description"] == "Rosalía Villanueva: me cobraron dos veces"
        assert doc["campaigns"][0]["campaign_id"] == "rights"
        assert doc["orders"] and doc["orders"][0]["value"] == "42.50"
        needles = [cid, PERSON["email"], PERSON["phone"], PERSON["first_name"],
                   PERSON["last_name"], "rosalia.villanueva", "llamadme", "cobraron"]  # fmt: skip
        held_before = mentions(everything(settings), needles)
        for needle in needles:  # the check below would see each of them
            assert any(repr(needle) in m for m in held_before), needle
        r = await http.delete(f"/customers/{cid}", headers=who["root"])
        assert r.status_code == 200, r.text
        assert (await http.get(f"/customers/{cid}/export", headers=who["root"])).status_code == 404
    # No personal data anywhere but the audit record that proves the erasure happened.
    rows = [
        (t, row) for t, row in everything(settings)
        if not (t == "audit_event" and row["action"] == "customer.erased")
    ]  # fmt: skip
    assert mentions(rows, needles) == []
    assert all(
        row["subject"] != f"customer:{cid}"
        for t, row in everything(settings)
        if t == "audit_event" and row["action"] == "customer.exported"
    )
    # The campaign's report keeps its totals.
    with session_scope(settings.db_url) as session:
        after = report.build(session, "rights")
    keep = ("targeted", "sent", "responded", "conversions", "revenue", "visits", "engagement")
    for field in keep:
        assert after["arms"][0]["treated"][field] == before["arms"][0]["treated"][field], field
    assert before["arms"][0]["treated"]["conversions"] == 1
    assert before["arms"][0]["treated"]["engagement"]["clicked"] == 1
    # The same address imported again has no consent until the person signs up afresh.
    csv = tmp_path / "again.csv"
    csv.write_text(
        "external_id,first_name,email,phone,email_consent,sms_consent\n"
        f"BACK-1,Rosalía,{PERSON['email'].upper()},{PERSON['phone']},true,true\n"
        "FRESH-1,Nuevo,nuevo@example.org,,true,false\n"
    )
    with session_scope(settings.db_url) as session:
        done = import_customers(session=session, path=csv)
        assert done.errors == []
    with session_scope(settings.db_url) as session:
        back, fresh = (
            session.exec(select(Customer.id).where(Customer.external_id == x)).one()
            for x in ("BACK-1", "FRESH-1")
        )
        held = consents(session=session, customer_id=back or 0)
        assert not held["email"].granted and not held["sms"].granted
        assert "erased earlier and needs fresh consent" in held["email"].source
        assert consents(session=session, customer_id=fresh or 0)["email"].granted
    sender_outcome = await send_outcome(settings, "BACK-1")
    assert sender_outcome == ("suppressed", "email: no consent; sms: no consent")
    async with api(client, settings, worker=True) as http:
        body = {"type": "signup", "external_id": "BACK-1", "email_consent": True}
        r = await http.post("/events", json=body)
        assert r.status_code == 202, r.text
    with session_scope(settings.db_url) as session:
        assert consents(session=session, customer_id=back or 0)["email"].granted


async def send_outcome(settings: Settings, customer_id: str) -> tuple[str, str]:
    from clientela.messaging.sending import Sender

    sender = Sender(settings, "t/1/1")
    try:
        o = await sender.deliver(
            MessageRequest(key=f"again:{customer_id}", customer_id=customer_id, template="welcome")
        )
    finally:
        await sender.close()
    return o.state, o.reason


def test_the_cli_exports_everything_to_a_file(settings: Settings, tmp_path: Path) -> None:
    cid = make_customer(settings.db_url, birthday=date(1990, 1, 2), first_name="Inés")
    out = tmp_path / "export.json"
    done = run_cli(settings, "customers", "export", cid, "--output", str(out))
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert doc["customer_id"] == cid and doc["profile"]["first_name"] == "Inés"
    assert doc["profile"]["birthday"] == "1990-01-02"
    assert [c["source"] for c in doc["consent_log"]] == ["test", "test"]
    stdout = run_cli(settings, "customers", "export", cid)
    assert json.loads(stdout.stdout)["customer_id"] == cid
    missing = run_cli(settings, "customers", "export", "NOBODY-9")
    assert missing.returncode == 1 and "no customer" in missing.stderr
