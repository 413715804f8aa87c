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
    from clientela.settings import load_settings

    try:
        return load_settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise fail(f"configuration: {problems}") from None


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
        settings().db_url, actor=audit.cli_actor(), action=action, subject=subject, detail=detail
    )
