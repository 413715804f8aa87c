"""Templates through the management API: list, read, a preview for a customer, a checked
write (nothing written when a part does not compile), roles and the audit trail."""

from __future__ import annotations

import shutil
from pathlib import Path

from temporalio.client import Client

from clientela import ROOT
from clientela.db import session_scope
from clientela.people import audit
from clientela.settings import Settings
from tests.factories import make_customer, signed_in
from tests.serving import api


async def test_templates_are_read_previewed_and_written_with_checks(
    client: Client, settings: Settings, tmp_path: Path
) -> None:
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    mine = settings.model_copy(
        update={"templates_dir": tmp_path / "templates", "api_key": "service-key-for-test"}
    )
    headers = signed_in(settings.db_url, marta=["marketer"], di=["desk"])
    cid = make_customer(settings.db_url, first_name="Lucía", locale="es")
    welcome = tmp_path / "templates" / "welcome" / "es" / "subject.txt"
    before = welcome.read_text()
    async with api(client, mine) as http:
        assert (await http.get("/templates", headers=headers["di"])).status_code == 403
        listed = (await http.get("/templates", headers=headers["marta"])).json()
        row = next(r for r in listed if r["name"] == "welcome")
        assert row["locales"]["es"] == ["body.html", "body.txt", "sms.txt", "subject.txt"]
        read = (await http.get("/templates/welcome/es", headers=headers["marta"])).json()
        assert read["parts"]["subject.txt"] == before
        seen = await http.post(
            "/templates/welcome/es/preview", json={"customer_id": cid}, headers=headers["marta"]
        )
        assert seen.status_code == 200 and "Lucía" in seen.json()["rendered"]["body.html"]
        draft = {"subject.txt": "Hola {{ customer.nickname }}"}
        bad = await http.post(
            "/templates/welcome/es/preview",
            json={"customer_id": cid, "parts": draft},
            headers=headers["marta"],
        )
        assert bad.status_code == 422
        [problem] = bad.json()["detail"]
        assert problem["field"] == "parts.subject.txt" and "nickname" in problem["msg"]
        broken = {"subject.txt": "Hola {{ customer.first_name }", "sms.txt": "ok"}
        refused = await http.put(
            "/templates/welcome/es", json={"parts": broken}, headers=headers["marta"]
        )
        assert refused.status_code == 422 and refused.json()["detail"][0]["line"] == 1
        assert welcome.read_text() == before  # nothing written, not even the good part
        new = {"subject.txt": "¡Hola {{ customer.first_name }}, bienvenida!"}
        done = await http.put(
            "/templates/welcome/es", json={"parts": new}, headers=headers["marta"]
        )
        assert done.status_code == 200 and welcome.read_text() == new["subject.txt"]
        again = await http.post(
            "/templates/welcome/es/preview", json={"customer_id": cid}, headers=headers["marta"]
        )
        assert again.json()["rendered"]["subject.txt"] == "¡Hola Lucía, bienvenida!"
    with session_scope(settings.db_url) as session:
        [event] = audit.recent(session, subject="template:welcome/es")
    assert (event.actor, event.action, event.detail) == (
        "user:marta",
        "template.changed",
        {"parts": ["subject.txt"], "new": []},
    )
