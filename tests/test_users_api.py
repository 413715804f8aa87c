"""Users and personal tokens through the management API: admins manage people, anyone their
own tokens and password; every change is in the audit trail under its author."""

from __future__ import annotations

from temporalio.client import Client

from clientela.db import session_scope
from clientela.people import audit
from clientela.settings import Settings
from tests.factories import signed_in
from tests.serving import api


async def test_admins_manage_users_and_everyone_their_own_tokens(
    client: Client, settings: Settings
) -> None:
    who = signed_in(settings.db_url, root=["admin"], marta=["marketer"])
    async with api(client, settings) as http:
        new = {
            "username": "ana",
            "name": "Ana",
            "email": "ana@example.com",
            "roles": ["approver"],
            "password": "long-enough-password",
        }
        r = await http.post("/users", json=new, headers=who["marta"])
        assert r.status_code == 403 and "admin" in r.json()["detail"]
        r = await http.post("/users", json=new, headers=who["root"])
        assert r.status_code == 201, r.text
        assert r.json()["roles"] == ["approver"] and r.json()["active"] is True
        assert "password" not in r.text and "hash" not in r.text
        r = await http.post("/users", json=new, headers=who["root"])
        assert r.status_code == 409 and "exists already" in r.json()["detail"]
        r = await http.post(
            "/users", json={**new, "username": "b", "password": "short"}, headers=who["root"]
        )
        assert r.status_code == 422
        assert {e["field"] for e in r.json()["detail"]} == {"username", "password"}
        r = await http.put(
            "/users/ana/roles", json={"roles": ["approver", "desk"]}, headers=who["root"]
        )
        assert r.status_code == 200 and r.json()["roles"] == ["approver", "desk"]
        r = await http.put("/users/root/roles", json={"roles": ["desk"]}, headers=who["root"])
        assert r.status_code == 409
        r = await http.put("/users/nobody/roles", json={"roles": []}, headers=who["root"])
        assert r.status_code == 404
        listed = await http.get("/users", headers=who["root"])
        assert [u["username"] for u in listed.json()] == ["ana", "marta", "root"]
        # Marta makes her own token and can see and revoke it; not someone else's.
        r = await http.post("/users/marta/tokens", json={"name": "script"}, headers=who["marta"])
        assert r.status_code == 201 and r.json()["token"].startswith("clt_")
        token_id, token = r.json()["id"], r.json()["token"]
        mine = {"Authorization": f"Bearer {token}"}
        assert (await http.get("/users/marta/tokens", headers=mine)).status_code == 200
        r = await http.post("/users/ana/tokens", json={"name": "x"}, headers=who["marta"])
        assert r.status_code == 403
        r = await http.put(
            "/users/ana/password", json={"password": "another-long-one"}, headers=who["marta"]
        )
        assert r.status_code == 403
        r = await http.post(f"/users/tokens/{token_id}/revoke", headers=mine)
        assert r.status_code == 200 and r.json()["revoked_at"]
        assert (await http.get("/users/marta/tokens", headers=mine)).status_code == 401
        r = await http.post("/users/ana/disable", headers=who["root"])
        assert r.status_code == 200 and r.json()["active"] is False
        r = await http.post("/users/root/disable", headers=who["root"])
        assert r.status_code == 409
    with session_scope(settings.db_url) as session:
        trail = [(e.actor, e.action, e.subject) for e in audit.recent(session, limit=20)]
    assert ("user:root", "user.added", "user:ana") in trail
    assert ("user:root", "user.roles_changed", "user:ana") in trail
    assert ("user:root", "user.disabled", "user:ana") in trail
    assert ("user:marta", "token.issued", "user:marta") in trail
    assert ("user:marta", "token.revoked", "user:marta") in trail
