"""Users with roles, argon2 passwords, personal API tokens, and the audit trail."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client

from clientela.db import session_scope
from clientela.people import audit
from clientela.people.users import PeopleError, add_user, authenticate, disable, issue_token
from clientela.settings import Settings
from models import User
from tests.factories import make_customer, signed_in
from tests.processes import run_cli
from tests.serving import api


def test_passwords_are_argon2id_and_checked(settings: Settings) -> None:
    with session_scope(settings.db_url) as session:
        user = add_user(
            session, actor="test", username="ana", roles=["marketer"], password="a long secret!"
        )
        assert user.password_hash.startswith("$argon2id$")
        assert "a long secret!" not in user.password_hash
    with session_scope(settings.db_url) as session:
        assert authenticate(session, "ana", "a long secret!") is not None
        assert authenticate(session, "ana", "a long secret?") is None
        assert authenticate(session, "nobody", "a long secret!") is None
        with pytest.raises(PeopleError, match="at least 12 characters"):
            add_user(session, actor="test", username="bo", roles=["desk"], password="short")
        with pytest.raises(PeopleError, match="no role boss"):
            add_user(session, actor="test", username="cy", roles=["boss"], password="x" * 12)
        with pytest.raises(PeopleError, match="a username is"):
            add_user(session, actor="test", username="Ana Smith", roles=[], password="x" * 12)
        disable(session, actor="test", username="ana")
    with session_scope(settings.db_url) as session:
        assert authenticate(session, "ana", "a long secret!") is None  # disabled


def test_the_users_commands_and_their_audit_trail(settings: Settings) -> None:
    added = run_cli(
        settings,
        "users",
        "add",
        "marta",
        "--role",
        "approver",
        "--role",
        "marketer",
        "--name",
        "Marta Ruiz",
    )
    assert added.returncode == 0, added.stderr
    password = re.search(r"Password \(shown once\): (\S+)", added.stdout)
    assert password is not None and len(password[1]) >= 12
    with session_scope(settings.db_url) as session:
        assert authenticate(session, "marta", password[1]) is not None
    again = run_cli(settings, "users", "add", "marta", "--role", "desk")
    assert again.returncode == 1 and "exists already" in again.stderr
    wrong = run_cli(settings, "users", "roles", "marta", "--role", "boss")
    assert wrong.returncode == 1 and "no role boss" in wrong.stderr
    assert run_cli(settings, "users", "roles", "marta", "--role", "desk").returncode == 0
    listed = json.loads(run_cli(settings, "users", "list", "--json").stdout)
    assert listed == [
        {"username": "marta", "name": "Marta Ruiz", "email": "", "roles": ["desk"], "active": True}
    ]
    token = run_cli(settings, "users", "token", "marta", "--name", "shop")
    assert token.returncode == 0 and "clt_" in token.stdout
    assert run_cli(settings, "users", "revoke-token", "1").returncode == 0
    assert run_cli(settings, "users", "disable", "marta").returncode == 0
    trail = json.loads(run_cli(settings, "audit", "list", "--subject", "user:*", "--json").stdout)
    assert [e["action"] for e in trail] == [
        "user.disabled",
        "token.revoked",
        "token.issued",
        "user.roles_changed",
        "user.added",
    ]
    assert all(e["actor"].startswith("cli:") for e in trail)
    assert trail[3]["detail"] == {"from": ["approver", "marketer"], "to": ["desk"]}
    assert "argon2" not in json.dumps(trail)  # no password, nor its hash, in the trail


async def test_a_personal_token_calls_the_api_and_its_changes_are_audited(
    client: Client, settings: Settings
) -> None:
    from clientela.service import cases as complaints

    keyed = settings.model_copy(update={"api_key": "service-key-for-this-test"})
    with session_scope(settings.db_url) as session:
        add_user(session, actor="test", username="desk1", roles=["desk"], password="x" * 16)
        _, token = issue_token(session, actor="test", username="desk1", name="desk app")
        _, other = issue_token(session, actor="test", username="desk1", name="old")
    cid = make_customer(settings.db_url)
    with session_scope(settings.db_url) as session:
        from datetime import date

        from clientela.customers.realtime import complaint

        complaint(
            session,
            customer_id=cid,
            code="DELIVERY-02",
            description="",
            channel="",
            today=date.today(),
            time_scale=1.0,
        )
    async with api(client, keyed) as http:
        mine = {"Authorization": f"Bearer {token}"}
        assert (await http.get("/complaints", headers=mine)).status_code == 200
        r = await http.post("/complaints/1/response", json={"by": "Desk One"}, headers=mine)
        assert r.status_code == 200, r.text
        forged = {"Authorization": f"Bearer {token[:-2]}xx"}
        refused = await http.get("/complaints", headers=forged)
        assert refused.status_code == 401 and "not valid" in refused.json()["detail"]
        with session_scope(settings.db_url) as session:
            disable(session, actor="test", username="desk1")
        gone = await http.get("/complaints", headers={"Authorization": f"Bearer {other}"})
        assert gone.status_code == 401
        service = {"Authorization": "Bearer service-key-for-this-test"}
        trail = (await http.get("/audit?subject=complaint:*", headers=service)).json()
    assert [(e["actor"], e["action"], e["subject"]) for e in trail] == [
        ("user:desk1", "complaint.responded", "complaint:1")
    ]
    assert trail[0]["detail"] == {"by": "Desk One"}
    with session_scope(settings.db_url) as session:
        assert complaints.get_case(session, 1).responded_by == "Desk One"
        assert [e.action for e in audit.recent(session, subject="user:desk1")] == [
            "user.disabled",
            "token.issued",
            "token.issued",
            "user.added",
        ]
        assert session.get(User, 1) is not None


async def test_four_eyes_on_campaigns_once_people_exist(
    client: Client, settings: Settings, worker: None, tmp_path: Path
) -> None:
    import asyncio

    from tests.test_campaign_workflow import tiered_customers, wait_stage, write_spec

    with session_scope(settings.db_url) as session:
        for name, roles in (
            ("marta", ["marketer", "approver"]),
            ("ana", ["approver"]),
            ("bob", ["desk"]),
        ):
            add_user(session, actor="test", username=name, roles=roles, password="x" * 16)
    tiered_customers(settings.db_url, 3, locale="en")
    cid = f"c-4eyes-{uuid.uuid4().hex[:8]}"
    spec = str(write_spec(tmp_path, cid))

    def cli(*args: str, who: str | None = None) -> Any:
        env = {"CLIENTELA_TOKEN": tokens[who]} if who else None
        return asyncio.to_thread(run_cli, settings, *args, env=env)

    with session_scope(settings.db_url) as session:
        tokens = {
            name: issue_token(session, actor="test", username=name, name="cli")[1]
            for name in ("marta", "ana", "bob")
        }
    anonymous = await cli("campaign", "create", spec, "--by", "marta")
    assert anonymous.returncode == 1 and "sign in first" in anonymous.stderr
    by_desk = await cli("campaign", "create", spec, who="bob")
    assert by_desk.returncode == 1 and "bob may not create campaigns" in by_desk.stderr
    someone_else = await cli("campaign", "create", spec, "--by", "marta", who="bob")
    assert someone_else.returncode == 1 and "signed in as bob" in someone_else.stderr
    created = await cli("campaign", "create", spec, who="marta")
    assert created.returncode == 0, created.stderr
    await wait_stage(client, cid, "awaiting_approval")
    own = await cli("campaign", "approve", cid, who="marta")
    assert own.returncode == 1 and "four eyes" in own.stderr
    desk = await cli("campaign", "approve", cid, who="bob")
    assert desk.returncode == 1 and "takes the role approver" in desk.stderr
    forged = await asyncio.to_thread(
        run_cli, settings, "campaign", "approve", cid, env={"CLIENTELA_TOKEN": "clt_forged"}
    )
    assert forged.returncode == 1 and "no longer works" in forged.stderr
    # Ana signs this account in with her password, approves, and signs out.
    wrong = await asyncio.to_thread(
        run_cli, settings, "users", "signin", "ana", "--password-stdin", input="nope\n"
    )
    assert wrong.returncode == 1 and "do not match" in wrong.stderr
    signin = await asyncio.to_thread(
        run_cli, settings, "users", "signin", "ana", "--password-stdin", input="x" * 16 + "\n"
    )
    assert signin.returncode == 0, signin.stderr
    assert (settings.home / "cli-session").stat().st_mode & 0o777 == 0o600
    ok = await cli("campaign", "approve", cid)
    assert ok.returncode == 0, ok.stderr
    assert (await cli("users", "signout")).returncode == 0
    assert "Not signed in" in (await cli("users", "whoami")).stdout
    await wait_stage(client, cid, "tracking")
    with session_scope(settings.db_url) as session:
        trail = audit.recent(session, subject=f"campaign:{cid}")
    assert [(e.actor, e.action, e.detail.get("by")) for e in trail] == [
        ("user:ana", "campaign.approved", "ana"),
        ("user:marta", "campaign.created", "marta"),
    ]
    # A team of one may allow it.
    alone = settings.model_copy(update={"self_approval": True})
    cid2 = f"c-alone-{uuid.uuid4().hex[:8]}"
    spec2 = str(write_spec(tmp_path, cid2))
    marta = {"CLIENTELA_TOKEN": tokens["marta"]}
    created = await asyncio.to_thread(run_cli, alone, "campaign", "create", spec2, env=marta)
    assert created.returncode == 0, created.stderr
    await wait_stage(client, cid2, "awaiting_approval")
    env = {"CLIENTELA_SELF_APPROVAL": "true", **marta}
    own = await asyncio.to_thread(run_cli, alone, "campaign", "approve", cid2, env=env)
    assert own.returncode == 0, own.stderr


async def test_role_limits_hold_for_personal_tokens(client: Client, settings: Settings) -> None:
    keyed = settings.model_copy(update={"api_key": "service-key-for-this-test"})
    headers = signed_in(settings.db_url, mo=["marketer"], di=["desk"], al=["admin"])
    cid = make_customer(settings.db_url)
    async with api(client, keyed) as http:

        async def status(who: str, url: str) -> int:
            r = await http.get(url, headers=headers[who])
            return r.status_code

        assert await status("di", "/complaints") == 200
        assert await status("mo", "/complaints") == 403
        assert await status("mo", "/campaigns/none-such/report") == 404  # allowed, not found
        assert await status("di", "/campaigns/none-such/report") == 403
        assert await status("di", f"/customers/{cid}") == 200
        assert await status("di", "/audit") == 403
        assert await status("al", "/audit") == 200
        r = await http.get("/complaints", headers=headers["mo"])
        assert "user:mo may not do this: it takes the role desk or admin" in r.json()["detail"]
