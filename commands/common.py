"""What every command shares: the consoles, errors, settings, Temporal and import runners."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

DEFAULT_RULES = Path(__file__).resolve().parent.parent / "rules" / "crm.yaml"

out = Console()
# What goes to standard error is data (file:line: messages quoting what was read): never markup.
err = Console(stderr=True, markup=False, highlight=False)


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True)
    return typer.Exit(code)


def settings() -> Any:
    from clientela.settings import configuration_problems, load_settings

    try:
        return load_settings()
    except ValidationError as exc:
        raise fail(f"configuration: {configuration_problems(exc)}") from None


def _import(run: Any, summary: Any) -> None:
    """Run an import in one session; report every bad row; exit 1 when any was rejected."""
    from clientela.db import session_scope
    from clientela.tables import ImportFileError

    s = settings()
    try:
        with session_scope(s.db_url) as session:
            result = run(session)
    except (ImportFileError, LookupError) as exc:
        raise fail(str(exc)) from None
    for problem in result.errors:
        err.print(str(problem), highlight=False, soft_wrap=True)
    out.print(summary(result))
    if result.errors:
        raise typer.Exit(1)


def _about_customer(customer_id: str, read: Any) -> Any:
    """read(session, customer) in one session; an unknown customer is a one-line error."""
    from clientela.customers.records import UnknownCustomer, get_customer
    from clientela.db import session_scope

    s = settings()
    try:
        with session_scope(s.db_url) as session:
            return read(session, get_customer(session=session, external_id=customer_id))
    except UnknownCustomer as exc:
        raise fail(str(exc)) from None


def _load_rules(path: Path) -> Any:
    from rules.check import analyse
    from rules.model import RuleFileError, load

    try:
        rules = load(path)
    except RuleFileError as exc:
        for problem in exc.problems:
            err.print(str(problem), highlight=False, soft_wrap=True)
        errors = sum(p.severity == "error" for p in exc.problems)
        raise fail(f"{path}: {errors} error(s); nothing was changed") from None
    rules.warnings.extend(analyse(rules))
    return rules


def _report_problems(errors: list[Any]) -> None:
    for problem in errors:
        err.print(str(problem), highlight=False, soft_wrap=True)


def _run_temporal(coro_factory: Any) -> Any:
    """Run ``coro_factory(client, settings)``; Temporal's refusals become one-line errors."""
    from temporalio.client import WorkflowUpdateFailedError
    from temporalio.service import RPCError

    from clientela.temporal import connect

    s = settings()

    async def go() -> Any:
        return await coro_factory(await connect(s), s)

    try:
        return asyncio.run(go())
    except WorkflowUpdateFailedError as exc:
        raise fail(str(exc.cause or exc)) from None
    except RPCError as exc:
        raise fail(f"{exc}: check the id (`clientela campaign list`, `journey list`)") from None
    except ConnectionError as exc:
        raise fail(str(exc)) from None


def _write_page(path: Path, page: str) -> None:
    """Write an HTML report page where --html says; a path that cannot be written is one
    line naming it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise fail(f"--html {path}: {exc.strerror or exc}") from None
    err.print(f"report page: {path.resolve()}", highlight=False)


def _audit(action: str, subject: str, detail: dict[str, Any] | None = None) -> None:
    """Record a change made from the command line in the audit trail."""
    from clientela.people import audit

    audit.record_now(
        settings().db_url, actor=actor(), action=action, subject=subject, detail=detail
    )


# --- who runs a command ------------------------------------------------------------------
#
# Once a team has users, a change is made by the signed-in user: `clientela users signin`
# keeps a personal token in <home>/cli-session (readable by this account only), or
# CLIENTELA_TOKEN holds one (scripts). Without users, `--by` stays free text.

SESSION_FILE = "cli-session"


def session_path() -> Path:
    path: Path = settings().home / SESSION_FILE
    return path


def _token() -> str:
    import os

    given = os.environ.get("CLIENTELA_TOKEN", "").strip()
    if given:
        return given
    path = session_path()
    return path.read_text(encoding="utf-8").strip() if path.is_file() else ""


def signed_in_user() -> str | None:
    """The signed-in user's name, or None when no one is signed in; a token that no longer
    works (revoked, its user disabled) is an error, not an anonymous run."""
    from clientela.db import session_scope
    from clientela.people.users import user_for_token

    token = _token()
    if not token:
        return None
    with session_scope(settings().db_url) as session:
        user = user_for_token(session, token)
        if user is None:
            raise fail(
                "this sign-in no longer works (the token was revoked or its user disabled); "
                "sign in again: clientela users signin USERNAME"
            )
        return user.username


def has_users() -> bool:
    from clientela.db import session_scope
    from clientela.people.approval import has_users as any_user

    with session_scope(settings().db_url) as session:
        return any_user(session)


def acting_as(by: str | None, *, required: bool) -> str | None:
    """Who this change is made by. Once people exist: the signed-in user (``--by``, if given,
    must name them); before that, what ``--by`` says."""
    if not has_users():
        if required and not (by or "").strip():
            raise fail("say who does this: --by NAME")
        return by
    who = signed_in_user()
    if who is None:
        raise fail(
            "sign in first: clientela users signin USERNAME (or set CLIENTELA_TOKEN to a "
            "personal token from `clientela users token`)"
        )
    if by and by != who:
        raise fail(f"you are signed in as {who}; --by cannot name someone else")
    return who


def actor() -> str:
    """The audit trail's name for who runs this command."""
    from clientela.people import audit

    try:
        who = signed_in_user() if _token() else None
    except typer.Exit:
        who = None
    return f"user:{who}" if who else audit.cli_actor()
