"""`clientela up|down|worker|demo`: the development stack and the demo."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from clientela.messaging.counts import said
from commands.campaigns import _print_report
from commands.common import (
    fail,
    out,
    settings,
)

app = typer.Typer()


@app.command()
def up(
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background")] = False,
) -> None:
    """Start Temporal, the SMTP catcher, the SMS sink, the API and the worker."""
    from clientela.db import get_engine
    from clientela.devstack import stack

    s = settings()
    get_engine(s.db_url)  # an old schema is refused here, with the command that upgrades it
    try:
        if detach:
            pid = stack.start_detached(s)
            out.print(f"Clientela is up in the background (pid {pid}); `clientela down` stops it.")
        else:
            out.print("Starting Clientela...")
            stack.run_foreground(s, log=out.print)
    except stack.StackError as exc:
        raise fail(str(exc)) from None


@app.command()
def down() -> None:
    """Stop a stack started with `clientela up --detach` or by `clientela demo`."""
    from clientela.devstack import stack

    try:
        stopped = stack.stop_detached(settings())
    except stack.StackError as exc:
        raise fail(str(exc)) from None
    out.print("Stopped." if stopped else "Nothing was running.")


@app.command()
def worker() -> None:
    """Run the Temporal worker in the foreground."""
    import worker as worker_module

    worker_module.main()


@app.command()
def demo(
    customers: Annotated[int, typer.Option(min=1, help="Generated customers to import")] = 1500,
    signups: Annotated[int, typer.Option(min=1, help="How many of them sign up")] = 15,
    follow_up: Annotated[
        float, typer.Option(min=1, help="Seconds before the welcome follow-up (stack it starts)")
    ] = 10,
) -> None:
    """The main job: import a sample base, sign customers up, run their welcome journeys."""
    from clientela.devstack.demo import DEMO_USERS, run_demo
    from clientela.devstack.stack import StackError

    s = settings()
    from clientela.db import get_engine

    get_engine(s.db_url)  # an old schema is refused before anything starts
    try:
        report = run_demo(
            s, customers=customers, signups=signups, follow_up_seconds=follow_up, log=out.print
        )
    except (StackError, ConnectionError) as exc:
        raise fail(str(exc)) from None
    tiers = Table(title=f"Tier mix of the base (rules {report.rules_version})")
    tiers.add_column("tier")
    tiers.add_column("customers", justify="right")
    for tier, n in sorted(report.tiers.items()):
        tiers.add_row(tier, str(n))
    out.print(tiers)
    table = Table(title="Welcome messages in this demo")
    for col in ("channel", "state", "messages"):
        table.add_column(col)
    for (channel, state), n in sorted(report.messages.items()):
        shown = "queued (quiet hours or a retry)" if state == "queued" else state
        table.add_row(channel, shown, str(n))
    out.print(table)
    if report.campaign is not None:
        c = report.campaign
        out.print(f"[bold]Demo campaign {c.campaign_id}[/bold] (spec {c.spec_path})")
        out.print(
            f"  stages: {' -> '.join(c.stages)}; proofs {said(c.proofs)}; {c.pilot or 'no pilot'}",
            highlight=False,
        )
        by_group: dict[str, list[str]] = {}
        for key, n in sorted(c.responses.items()):
            group, kind = key.split(" ", 1)
            by_group.setdefault(group, []).append(f"{n:,} {kind}")
        for group, parts in by_group.items():
            out.print(f"  {group}: {', '.join(parts)}", highlight=False)
        out.print(
            f"  back at the bounce address: {said(c.returned) or 'nothing'}; "
            f"{len(c.fulfilments)} orders fulfilled by their own workflows",
            highlight=False,
        )
        for line in c.sms_replies:
            out.print(f"  {line}", highlight=False)
        _print_report(c.report)
        out.print(
            f"Report page:  {c.report_path} (emailed to the stakeholders: {said(c.reported)})"
        )
    if report.next_campaign:
        _print_next(report)
    if report.birthday:
        out.print(f"Birthday:     {report.birthday}", highlight=False)
    if report.complaints:
        from clientela.service.report import render_text

        out.print("Complaints:   " + "\n              ".join(report.complaints), highlight=False)
        out.print(render_text(report.service), highlight=False)
    if report.purchase_journeys:
        out.print(
            "Purchases started journeys: "
            + ", ".join(f"{name} {n}" for name, n in sorted(report.purchase_journeys.items()))
            + " (clientela journey list)"
        )
    sign_in_note = s.home.resolve() / "demo" / "sign-in.txt"
    out.print(
        f"Journeys: {report.journeys_started} started, {report.journeys_finished} finished "
        f"({report.responses} customers responded)"
        + (
            "; the others are still on their way (an SMS waits for the end of the customer's "
            "quiet hours): clientela journey list"
            if report.journeys_finished < report.journeys_started
            else ""
        )
        + ".\n"
        f"Email outbox: {s.outbox_dir.resolve()} ({report.outbox_files} messages in all)\n"
        f"SMS sink:     {s.sms_dir.resolve() / 'messages.jsonl'} ({report.sms_stored} in all)\n"
        f"Explain a tier: clientela rules explain {report.signups[0] if report.signups else 'ID'}\n"
        f"Console:      http://{s.api_host}:{s.api_port}/console\n"
        f"  sign in as "
        + ", ".join(f"{u} ({', '.join(r)})" for u, (_n, r) in DEMO_USERS.items())
        + f"\n  password: {report.password}  (kept in {sign_in_note})\n"
        f"Temporal UI:  http://127.0.0.1:{s.temporal_ui_port}  "
        f"(temporal workflow list --query \"Journey='welcome'\")\n"
        f"The stack keeps running for you to look around; `clientela down` stops it."
    )


def _print_next(report: Any) -> None:
    """The next campaign's three ways of choosing, as previewed."""
    p, m = report.next_campaign, report.model
    out.print(
        f"[bold]Next campaign[/bold] (spec {report.next_spec}), previewed: its audience of "
        f"{p['audience']} chosen three ways, each with its own held-out control",
        highlight=False,
    )
    labels = {
        "chance": "a fifth at random (the baseline)",
        "model": f"the top 30% by model {m['name']} version {m['version']}",
        "marketing": "marketing's rule: the rankings' top payers",
    }
    for arm in [a for a in labels if a in p["by_arm"]]:
        groups = p["by_arm"][arm]
        out.print(
            f"  {arm}: {labels.get(arm, arm)}: {groups.get('treated', 0)} to contact, "
            f"{groups.get('control', 0)} held out, {groups.get('excluded', 0)} excluded",
            highlight=False,
        )
    if p["excluded"]:
        out.print(f"  {excluded_line(p['excluded'])}", highlight=False)
    warning = (p.get("power") or {}).get("warning")
    if warning:
        out.print(f"  [yellow]warning:[/yellow] {warning}", highlight=False)
    out.print(
        f"  Send it with: clientela campaign create {report.next_spec} "
        "(then approve it as ana); its report compares the three arms.",
        highlight=False,
    )


def excluded_line(excluded: dict[str, int], top: int = 3) -> str:
    """The most frequent reasons for exclusion, the rest counted together, so that the
    figures shown add up to the total."""
    reasons = sorted(excluded.items(), key=lambda kv: -kv[1])
    shown = [f"{why} ({n})" for why, n in reasons[:top]]
    if len(reasons) > top:
        rest = sum(n for _, n in reasons[top:])
        shown.append(
            f"{len(reasons) - top} other reason{'s' if len(reasons) - top > 1 else ''} ({rest})"
        )
    return f"excluded, {sum(excluded.values())} in all: " + "; ".join(shown)
