"""`clientela customers`: import and the single customer view."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape as esc
from rich.table import Table

from commands.common import (
    _about_customer,
    _import,
    _run_temporal,
    actor,
    fail,
    out,
    settings,
)

customers_app = typer.Typer(help="The customer base.", no_args_is_help=True)


@customers_app.command("import")
def customers_import(
    path: Annotated[Path, typer.Argument(help="CSV or JSON Lines file")],
) -> None:
    """Import customers; bad rows are reported with line and field, good rows imported."""
    from clientela.customers.records import import_customers

    _import(
        lambda session: import_customers(session=session, path=path),
        lambda r: (
            f"{r.created} created, {r.updated} updated, "
            f"{len({e.line for e in r.errors})} rows rejected"
        ),
    )


@customers_app.command("show")
def customers_show(
    customer_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """The single customer view: profile, consent, messages and contact history."""
    from clientela.customers.records import customer_view

    view = _about_customer(
        customer_id, lambda session, c: customer_view(session=session, external_id=c.external_id)
    )
    if as_json:
        print(json.dumps(view, indent=2, ensure_ascii=False))
        return
    p = view["profile"]
    out.print(f"[bold]{esc(p['first_name'])} {esc(p['last_name'])}[/bold]  ({esc(p['id'])})")
    for key in ("email", "phone", "locale", "timezone", "birthday", "signup_date", "tier"):
        out.print(f"  {key:<12} {p[key] if p[key] is not None else '-'}")
    out.print(f"  {'segments':<12} {', '.join(p['segments']) or '-'}")
    if view["decision"]:
        d = view["decision"]
        out.print(f"  {'offers':<12} {', '.join(d['offers']) or '-'}")
        out.print(
            f"  {'decided by':<12} {d['tier_rule']} (rules {d['rule_version']}, {d['decided_at']})"
        )
    for name, value in p["attributes"].items():
        out.print(f"  {name:<12} {value}")
    consent = Table(title="Consent")
    for col in ("channel", "granted", "source", "at"):
        consent.add_column(col)
    for ch, c in view["consent"].items():
        consent.add_row(ch, "yes" if c["granted"] else "no", c["source"], c["at"])
    out.print(consent)
    messages = Table(title="Messages")
    for col in ("key", "channel", "state", "reason", "sent_at"):
        messages.add_column(col)
    for m in view["messages"]:
        messages.add_row(m["key"], m["channel"], m["state"], m["reason"], m["sent_at"] or "")
    out.print(messages)
    if view["tier_history"]:
        tiers = Table(title="Tier history")
        for col in ("at", "from", "to", "trigger", "reason"):
            tiers.add_column(col)
        for t in view["tier_history"]:
            tiers.add_row(t["at"], t["from"] or "-", t["to"], t["trigger"], t["reason"])
        out.print(tiers)
    if view["complaints"]:
        cases = Table(title="Complaints (clientela complaint show ID)")
        for col in ("id", "code", "state", "opened", "due", "resolved", "score"):
            cases.add_column(col)
        for k in view["complaints"]:
            cases.add_row(
                str(k["id"]),
                k["code"],
                k["state"],
                (k["opened_at"] or "")[:16],
                (k["due_at"] or "-")[:16],
                (k["resolved_at"] or "-")[:16],
                str(k["satisfaction"] or "-"),
            )
        out.print(cases)
    history = Table(title="Contact history (newest first)")
    for col in ("at", "channel", "direction", "kind", "outcome", "journey/campaign"):
        history.add_column(col)
    for h in view["history"]:
        history.add_row(
            h["at"],
            h["channel"],
            h["direction"],
            h["kind"],
            h["outcome"],
            h["journey"] or h["campaign"] or "",
        )
    out.print(history)


@customers_app.command("erase")
def customers_erase(
    customer_id: str,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: this cannot be undone")] = False,
) -> None:
    """Erase a customer's personal data from every table (their journeys and open cases
    stop first); the counts they were part of stay on an anonymous record, and each address
    is kept as a salted hash so that a re-import needs fresh consent. Recorded in the audit
    trail with counts only. Export first if needed: `clientela customers export ID`."""
    from clientela.customers.erasure import erase_customer
    from clientela.customers.records import UnknownCustomer

    if not yes:
        raise fail(f"erasing {customer_id} cannot be undone: run again with --yes")
    who = actor()
    try:
        done = _run_temporal(lambda client, s: erase_customer(client, s, customer_id, actor=who))
    except UnknownCustomer as exc:
        raise fail(str(exc)) from None
    out.print(
        f"Erased {customer_id}: {done['messages']} messages, {done['interactions']} "
        f"interactions, {done['purchases']} purchases and {done['complaints']} complaint cases "
        f"kept only as anonymous counts; {done['workflows_stopped']} workflows stopped.",
        highlight=False,
    )


@customers_app.command("export")
def customers_export(
    customer_id: str,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file (default: stdout)")
    ] = None,
) -> None:
    """Everything held about a customer as one JSON document (a data subject's access
    request): every row of every table that refers to them. Recorded in the audit trail."""
    from clientela.customers.export import export_customer
    from clientela.customers.records import UnknownCustomer
    from clientela.db import session_scope
    from clientela.people import audit

    s = settings()
    who = actor()
    try:
        with session_scope(s.db_url) as session:
            doc = export_customer(session, customer_id)
            audit.record(
                session, actor=who, action="customer.exported", subject=f"customer:{customer_id}"
            )
    except UnknownCustomer as exc:
        raise fail(str(exc)) from None
    text = json.dumps(doc, indent=2, ensure_ascii=False)
    if output is None:
        sys.stdout.write(text + "\n")
        return
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.replace(output)
    out.print(f"Wrote everything held on {customer_id} to {output}.", highlight=False)
