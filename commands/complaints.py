"""`clientela complaint`: the service desk's cases."""

from __future__ import annotations

import asyncio
import json
from functools import partial
from typing import Annotated, Any

import typer
from rich.markup import escape as esc
from rich.table import Table

from commands.common import acting_as, actor, err, fail, out, settings

complaint_app = typer.Typer(help="Complaint cases.", no_args_is_help=True)


def _case_change(
    complaint_id: int, change: Any, action: str = "", detail: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Apply ``change(session)`` to the case (audited as ``action``), then wake its workflow
    (if Temporal is up)."""
    from clientela.journeys.runs import tell_case
    from clientela.service import cases as complaints
    from clientela.temporal import connect

    s = settings()
    try:
        case, uid = complaints.apply(
            s.db_url, complaint_id, change, actor=actor(), action=action, detail=detail
        )
    except complaints.UnknownComplaint as exc:
        raise fail(f"{exc} (`clientela complaint list`)") from None
    except complaints.CaseConflict as exc:
        raise fail(str(exc)) from None
    if change is not None:

        async def tell() -> bool:
            return await tell_case(await connect(s), complaint_id, uid)

        try:
            case["workflow_told"] = asyncio.run(tell())
        except ConnectionError as exc:
            err.print(f"recorded; the case workflow will see it at its next deadline ({exc})")
            case["workflow_told"] = False
    return case


def _print_case(case: dict[str, Any]) -> None:
    out.print(
        f"[bold]complaint {case['id']}[/bold] {esc(case['code'])} of {esc(case['customer_id'])} "
        f"(tier {case['tier'] or '-'}): [bold]{case['state']}[/bold]"
        + (f", breached: {', '.join(case['breached'])}" if case["breached"] else "")
    )
    for label, key in [
        ("opened", "opened_at"),
        ("response due", "due_at"),
        ("resolution due", "resolution_due_at"),
        ("acknowledged", "acknowledged_at"),
        ("answered", "responded_at"),
        ("escalated", "escalated_at"),
        ("resolved", "resolved_at"),
        ("closed", "closed_at"),
    ]:
        if case[key]:
            by = case.get(key.replace("_at", "_by"))
            out.print(f"  {label:<15} {case[key][:19]}" + (f" by {by}" if by else ""))
    out.print(f"  responsible     {case['responsible'] or '-'}")
    if case["satisfaction"] is not None:
        out.print(f"  satisfaction    {case['satisfaction']}/5")
    out.print(f"  workflow        {case['workflow_id']}")


@complaint_app.command("list")
def complaint_list(
    state: Annotated[
        str | None,
        typer.Option(help="open, responded, resolved, closed, or unresolved (open+responded)"),
    ] = None,
    customer: Annotated[str | None, typer.Option(help="Only this customer's cases")] = None,
    limit: int = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Complaint cases, newest first, with the service levels they breach."""
    from clientela.db import session_scope
    from clientela.service import cases as complaints

    if state not in (None, "open", "responded", "resolved", "closed", "unresolved"):
        raise fail(f"--state {state}: one of open, responded, resolved, closed, unresolved")
    from clientela.customers.records import UnknownCustomer

    s = settings()
    try:
        with session_scope(s.db_url) as session:
            cases = complaints.list_cases(session, state=state, customer_id=customer, limit=limit)
    except UnknownCustomer as exc:
        raise fail(str(exc)) from None
    if as_json:
        print(json.dumps(cases, indent=2))
        return
    table = Table()
    for column in ("id", "customer", "tier", "code", "state", "opened (UTC)", "breached"):
        table.add_column(column)
    for c in cases:
        table.add_row(
            str(c["id"]),
            c["customer_id"],
            c["tier"] or "-",
            c["code"],
            c["state"],
            (c["opened_at"] or "")[5:16].replace("T", " "),
            ", ".join(c["breached"]) or "-",
        )
    out.print(table)


@complaint_app.command("show")
def complaint_show(
    complaint_id: int, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """One case: its times, who answered, breaches, satisfaction."""
    case = _case_change(complaint_id, None)
    if as_json:
        print(json.dumps(case, indent=2))
    else:
        _print_case(case)


@complaint_app.command("respond")
def complaint_respond(
    complaint_id: int,
    by: Annotated[str | None, typer.Option(help="Who answered (once users exist: you)")] = None,
    note: Annotated[str, typer.Option(help="What they were told")] = "",
) -> None:
    """Record the first answer to the customer: the response reminders stop."""
    from clientela.service import cases as complaints

    by = acting_as(by, required=True)
    assert by is not None

    _print_case(
        _case_change(
            complaint_id,
            partial(complaints.respond, complaint_id=complaint_id, by=by, note=note),
            "complaint.responded",
            {"by": by},
        )
    )


@complaint_app.command("resolve")
def complaint_resolve(
    complaint_id: int,
    by: Annotated[str | None, typer.Option(help="Who resolved it (once users exist: you)")] = None,
    resolution: Annotated[str, typer.Option(help="How it was resolved")] = "",
) -> None:
    """Resolve the case: the customer is asked for a satisfaction score."""
    from clientela.service import cases as complaints

    by = acting_as(by, required=True)
    assert by is not None

    _print_case(
        _case_change(
            complaint_id,
            partial(complaints.resolve, complaint_id=complaint_id, by=by, resolution=resolution),
            "complaint.resolved",
            {"by": by},
        )
    )


@complaint_app.command("rate")
def complaint_rate(
    complaint_id: int,
    score: Annotated[int, typer.Argument(help="1 (very unhappy) to 5 (very happy)")],
    comment: str = "",
) -> None:
    """Record the customer's satisfaction taken by phone or in store."""
    from clientela.service import cases as complaints

    _print_case(
        _case_change(
            complaint_id,
            partial(complaints.rate, complaint_id=complaint_id, score=score, comment=comment),
            "complaint.rated",
            {"score": score},
        )
    )
