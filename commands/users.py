"""`clientela users` and `clientela audit`: the people who work in Clientela, and what they did."""

from __future__ import annotations

import json
import secrets
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from commands.common import actor, fail, out, session_path, settings

users_app = typer.Typer(help="People, their roles and API tokens.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail: who changed what, when.", no_args_is_help=True)

Roles = Annotated[
    list[str],
    typer.Option("--role", "-r", help="marketer, approver, desk or admin; repeat for several"),
]
FromStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input")
]


def _change(work: Any) -> Any:
    """Run a change with the audit actor of this command; a refusal is one clear line."""
    from clientela.db import session_scope
    from clientela.people.users import PeopleError

    try:
        with session_scope(settings().db_url) as session:
            return work(session, actor())
    except PeopleError as exc:
        raise fail(str(exc)) from None


def _password(from_stdin: bool) -> tuple[str, bool]:
    """(the password, whether it was made here and must be shown once)."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\n"), False
    return secrets.token_urlsafe(15), True


@users_app.command("add")
def users_add(
    username: str,
    roles: Roles,
    name: Annotated[str, typer.Option(help="Full name")] = "",
    email: Annotated[str, typer.Option(help="Where the console's notices go")] = "",
    password_stdin: FromStdin = False,
) -> None:
    """Add a user with roles; without --password-stdin a password is made and shown once."""
    from clientela.people.users import add_user

    password, made = _password(password_stdin)
    user = _change(
        lambda session, actor: add_user(
            session,
            actor=actor,
            username=username,
            roles=roles,
            password=password,
            name=name,
            email=email,
        )
    )
    out.print(f"Added {user.username} ({', '.join(user.roles)}).", highlight=False)
    if made:
        out.print(f"Password (shown once): {password}", highlight=False, markup=False)


@users_app.command("list")
def users_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every user, with roles and whether they may sign in."""
    from clientela.people.users import all_users

    users = _change(lambda session, actor: [u.model_dump() for u in all_users(session)])
    rows = [{k: u[k] for k in ("username", "name", "email", "roles", "active")} for u in users]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("user", "name", "email", "roles", "active")
    for r in rows:
        table.add_row(r["username"], r["name"], r["email"], ", ".join(r["roles"]), str(r["active"]))
    out.print(table)


@users_app.command("disable")
def users_disable(username: str) -> None:
    """A disabled user can neither sign in nor use their tokens; their history stays."""
    from clientela.people.users import disable

    _change(lambda session, actor: disable(session, actor=actor, username=username))
    out.print(f"Disabled {username}.")


@users_app.command("set-password")
def users_set_password(username: str, password_stdin: FromStdin = False) -> None:
    """Set a new password; without --password-stdin one is made and shown once."""
    from clientela.people.users import set_password

    password, made = _password(password_stdin)
    _change(
        lambda session, actor: set_password(
            session, actor=actor, username=username, password=password
        )
    )
    out.print(f"Password of {username} changed.")
    if made:
        out.print(f"Password (shown once): {password}", highlight=False, markup=False)


@users_app.command("roles")
def users_roles(username: str, roles: Roles) -> None:
    """Replace a user's roles."""
    from clientela.people.users import set_roles

    user = _change(
        lambda session, actor: set_roles(session, actor=actor, username=username, roles=roles)
    )
    out.print(f"{username}: {', '.join(user.roles) or 'no roles'}.", highlight=False)


@users_app.command("token")
def users_token(
    username: str, name: Annotated[str, typer.Option(help="What it is for")] = "script"
) -> None:
    """Make a personal API token (`Authorization: Bearer <token>`); it is shown once."""
    from clientela.people.users import issue_token

    row, token = _change(
        lambda session, actor: issue_token(session, actor=actor, username=username, name=name)
    )
    out.print(f"Token {row.id} ({name}) for {username}, shown once:", highlight=False)
    out.print(token, highlight=False, markup=False)


@users_app.command("tokens")
def users_tokens(username: str) -> None:
    """A user's tokens: id, name, made, last used, revoked (never the token itself)."""
    from clientela.people.users import tokens_of

    rows = _change(lambda session, actor: [t.model_dump() for t in tokens_of(session, username)])
    table = Table("id", "name", "made", "last used", "revoked")
    for t in rows:
        table.add_row(
            str(t["id"]),
            t["name"],
            f"{t['created_at']:%Y-%m-%d %H:%M}",
            f"{t['last_used_at']:%Y-%m-%d %H:%M}" if t["last_used_at"] else "-",
            f"{t['revoked_at']:%Y-%m-%d %H:%M}" if t["revoked_at"] else "-",
        )
    out.print(table)


@users_app.command("revoke-token")
def users_revoke_token(token_id: int) -> None:
    """Revoke a token at once."""
    from clientela.people.users import revoke_token

    _change(lambda session, actor: revoke_token(session, actor=actor, token_id=token_id))
    out.print(f"Token {token_id} revoked.")


@audit_app.command("list")
def audit_list(
    subject: Annotated[
        str | None, typer.Option(help="e.g. campaign:spring-2027, or campaign:* for all")
    ] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000)] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Changes of state, newest first."""
    from clientela.people import audit

    events = _change(
        lambda session, _: [
            audit.as_dict(e)
            for e in audit.recent(session, limit=limit, subject=subject, actor=actor)
        ]
    )
    if as_json:
        print(json.dumps(events, indent=2))
        return
    table = Table("when", "who", "what", "on", "detail")
    for e in events:
        detail = "; ".join(
            f"{k} {', '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in e["detail"].items()
            if v not in ("", None, [])
        )
        table.add_row(e["at"][:19].replace("T", " "), e["actor"], e["action"], e["subject"], detail)
    out.print(table)


@users_app.command("signin")
def users_signin(username: str, password_stdin: FromStdin = False) -> None:
    """Sign this account in as USERNAME: the changes its commands make are then that user's
    (four eyes included). A personal token is kept in <home>/cli-session for this account."""
    import os
    import socket

    from clientela.db import session_scope
    from clientela.people import audit as trail
    from clientela.people.users import authenticate, issue_token

    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True)
    with session_scope(settings().db_url) as session:
        user = authenticate(session, username, password)
        if user is None:
            trail.record(
                session,
                actor=trail.cli_actor(),
                action="session.sign_in_failed",
                subject=f"user:{username}",
            )
    if user is None:
        raise fail("that username and password do not match")
    with session_scope(settings().db_url) as session:
        name = f"cli: {trail.cli_actor().removeprefix('cli:')}@{socket.gethostname()}"[:64]
        _row, token = issue_token(session, actor=f"user:{username}", username=username, name=name)
    path = session_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    out.print(f"Signed in as {username} (until `clientela users signout`).")


@users_app.command("signout")
def users_signout() -> None:
    """Sign this account out: its token is revoked and forgotten."""
    from clientela.db import session_scope
    from clientela.people.users import revoke_token, token_record

    path = session_path()
    if not path.is_file():
        out.print("Not signed in.")
        return
    token = path.read_text(encoding="utf-8").strip()
    with session_scope(settings().db_url) as session:
        row = token_record(session, token)
        if row is not None and row.id is not None:
            revoke_token(session, actor=actor(), token_id=row.id)
    path.unlink()
    out.print("Signed out.")


@users_app.command("whoami")
def users_whoami() -> None:
    """Who this account is signed in as."""
    from commands.common import signed_in_user

    who = signed_in_user()
    out.print(f"Signed in as {who}." if who else "Not signed in (clientela users signin USERNAME).")
