"""`clientela journey`: check, start, follow and cancel journeys."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from commands.common import (
    _report_problems,
    _run_temporal,
    fail,
    out,
    settings,
)

journey_app = typer.Typer(help="Customer journeys.", no_args_is_help=True)


@journey_app.command("check")
def journey_check(
    path: Annotated[
        Path | None, typer.Argument(help="A journey file or folder (default: the journeys folder)")
    ] = None,
) -> None:
    """Validate journey definitions without starting anything; exit 1 on errors.

    A file with an error is left out when the service loads the folder (the others keep
    working); this shows the same problems, with file:line:column, before that happens.
    """
    from clientela.journeys.router import rules_for_journeys
    from clientela.journeys.spec import load_valid
    from clientela.messaging.templating import Templates

    s = settings()
    target = path or s.journeys_dir
    if not target.exists():
        raise fail(f"{target}: no such file or folder")
    templates = Templates(s.templates_dir, s.default_locale)
    folder, only = (target.parent, target.name) if target.is_file() else (target, None)
    found, problems = load_valid(folder, rules_for_journeys(s), templates, only=only)
    _report_problems(problems)
    for journey in found.values():
        spec = journey.spec
        out.print(
            f"{journey.path}: journey {spec.name}, version {journey.version}: "
            f"{len(spec.steps)} steps: OK",
            highlight=False,
            markup=False,
        )
    if problems:
        files = len({p.path for p in problems})
        raise fail(f"{len(problems)} error(s) in {files} file(s); those journeys are left out")


@journey_app.command("start")
def journey_start(journey: str, customer_id: str) -> None:
    """Start a journey for a customer by hand (its condition and re-entry policy apply)."""
    from clientela.customers.records import UnknownCustomer, get_customer
    from clientela.db import session_scope
    from clientela.journeys.router import BOOK, start_by_name
    from clientela.temporal import connect

    s = settings()
    known = BOOK.journeys(s)
    if journey not in known:
        _report_problems(BOOK.problems)
        raise fail(f"no journey named {journey!r}; journeys: {', '.join(sorted(known))}")
    try:
        with session_scope(s.db_url) as session:
            get_customer(session=session, external_id=customer_id)
    except UnknownCustomer as exc:
        raise fail(str(exc)) from None

    async def start() -> Any:
        return await start_by_name(await connect(s), s, journey, customer_id)

    try:
        entry = asyncio.run(start())
    except (LookupError, ConnectionError) as exc:
        raise fail(str(exc)) from None
    if not entry.started:
        raise fail(f"{entry.workflow_id} not started: {entry.reason}", code=2)
    out.print(f"Started {entry.workflow_id}")


@journey_app.command("status")
def journey_status_cmd(
    journey: str,
    customer_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Where a customer's journey stands: each step taken, messages, events."""
    from clientela.journeys.runs import JourneyNotFound, journey_status

    try:
        data = _run_temporal(lambda client, s: journey_status(client, journey, customer_id))
    except JourneyNotFound as exc:
        raise fail(str(exc)) from None
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return
    out.print(
        f"[bold]{data['workflow_id']}[/bold]: {data['execution']}, step {data['step']} "
        f"(version {data['version']})",
        highlight=False,
    )
    for line in data["trail"]:
        out.print(f"  {line}", highlight=False)
    if data["events"]:
        out.print(f"  events: {', '.join(data['events'])}", highlight=False)
    if data["waiting_until"]:
        out.print(f"  waiting until {data['waiting_until']}", highlight=False)


@journey_app.command("list")
def journey_list_cmd(
    customer: Annotated[str | None, typer.Option("--customer", help="One customer's")] = None,
    journey: Annotated[str | None, typer.Option("--journey", help="One journey's")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Journeys that ran or run, newest first (of a customer, of a journey, or all)."""
    from clientela.journeys.runs import journey_list

    rows = _run_temporal(lambda client, s: journey_list(client, customer, journey))
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table()
    for name in ("journey", "customer", "step", "execution", "started", "workflow id"):
        table.add_column(name)
    for r in rows:
        table.add_row(
            r["journey"] or "", r["customer_id"] or "", r["step"], r["execution"],
            (r["started"] or "")[:19], r["workflow_id"],
        )  # fmt: skip
    out.print(table)


@journey_app.command("cancel")
def journey_cancel_cmd(journey: str, customer_id: str) -> None:
    """Cancel a customer's running journey of that name (nothing more is sent)."""
    from clientela.journeys.runs import journey_cancel

    cancelled = _run_temporal(lambda client, s: journey_cancel(client, journey, customer_id))
    if not cancelled:
        raise fail(f"no running {journey} journey for customer {customer_id!r}")
    out.print(f"Cancelled {', '.join(cancelled)}")
