"""The ``clientela`` command line."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape as esc
from rich.table import Table
from rich.text import Text

from clientela.counts import said

app = typer.Typer(help="Clientela: CRM rules, campaigns and journeys.", no_args_is_help=True)
customers_app = typer.Typer(help="The customer base.", no_args_is_help=True)
journey_app = typer.Typer(help="Customer journeys.", no_args_is_help=True)
rules_app = typer.Typer(help="Business rules: tiers, segments, offers.", no_args_is_help=True)
campaign_app = typer.Typer(help="Campaigns and their reports.", no_args_is_help=True)
events_app = typer.Typer(help="Responses and other customer events.", no_args_is_help=True)
app.add_typer(campaign_app, name="campaign")
app.add_typer(events_app, name="events")
app.add_typer(customers_app, name="customers")
app.add_typer(journey_app, name="journey")
app.add_typer(rules_app, name="rules")
complaint_app = typer.Typer(help="Complaint cases.", no_args_is_help=True)
service_app = typer.Typer(help="Customer service indicators.", no_args_is_help=True)
app.add_typer(complaint_app, name="complaint")
app.add_typer(service_app, name="service")
DEFAULT_RULES = Path(__file__).resolve().parent / "rules" / "crm.yaml"

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


@app.command()
def up(
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background")] = False,
) -> None:
    """Start Temporal, the SMTP catcher, the SMS sink, the API and the worker."""
    from clientela.devstack import stack

    s = settings()
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
    from clientela.demo import run_demo
    from clientela.devstack.stack import StackError

    s = settings()
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
            by_group.setdefault(group, []).append(f"{n:,} {kind}{'s' if n != 1 else ''}")
        posted = "; ".join(f"{g}: {', '.join(parts)}" for g, parts in by_group.items())
        out.print(
            f"  responses posted: {posted}; "
            f"{len(c.fulfilments)} orders fulfilled by their own workflows",
            highlight=False,
        )
        _print_report(c.report)
        out.print(
            f"Report page:  {c.report_path} (emailed to the stakeholders: {said(c.reported)})"
        )
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
    out.print(
        f"Journeys: {report.journeys_started} started, {report.journeys_finished} finished "
        f"({report.responses} customers responded).\n"
        f"Email outbox: {s.outbox_dir.resolve()} ({report.outbox_files} messages in all)\n"
        f"SMS sink:     {s.sms_dir.resolve() / 'messages.jsonl'} ({report.sms_stored} in all)\n"
        f"Explain a tier: clientela rules explain {report.signups[0] if report.signups else 'ID'}\n"
        f"Temporal UI:  http://127.0.0.1:{s.temporal_ui_port}  "
        f"(temporal workflow list --query \"Journey='welcome'\")\n"
        f"The stack keeps running for you to look around; `clientela down` stops it."
    )


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
    from clientela.customers import UnknownCustomer, get_customer
    from clientela.db import session_scope

    s = settings()
    try:
        with session_scope(s.db_url) as session:
            return read(session, get_customer(session=session, external_id=customer_id))
    except UnknownCustomer as exc:
        raise fail(str(exc)) from None


@customers_app.command("import")
def customers_import(
    path: Annotated[Path, typer.Argument(help="CSV or JSON Lines file")],
) -> None:
    """Import customers; bad rows are reported with line and field, good rows imported."""
    from clientela.customers import import_customers

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
    from clientela.customers import customer_view

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
    from clientela.journey_router import rules_for_journeys
    from clientela.journey_spec import load_valid
    from clientela.templating import Templates

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
    from clientela.customers import UnknownCustomer, get_customer
    from clientela.db import session_scope
    from clientela.journey_router import BOOK, start_by_name
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
    from clientela.journeys import JourneyNotFound, journey_status

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
    from clientela.journeys import journey_list

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
    from clientela.journeys import journey_cancel

    cancelled = _run_temporal(lambda client, s: journey_cancel(client, journey, customer_id))
    if not cancelled:
        raise fail(f"no running {journey} journey for customer {customer_id!r}")
    out.print(f"Cancelled {', '.join(cancelled)}")


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


@rules_app.command("check")
def rules_check(path: Annotated[Path, typer.Argument(help="A rule file")] = DEFAULT_RULES) -> None:
    """Validate a rule file without touching any data; exit 1 on errors."""
    rules = _load_rules(path)
    for warning in rules.warnings:
        err.print(str(warning), highlight=False, soft_wrap=True)
    spec = rules.spec
    out.print(
        f"{path}: rule set {rules.name}, version {rules.version}: "
        f"{len(spec.tiers.rules)} tier rules over tiers {', '.join(spec.tiers.levels)} "
        f"(default {spec.tiers.default}), {len(spec.segments)} segments, "
        f"{len(spec.offers)} offers, {len(spec.rankings)} rankings: "
        f"OK{f', {len(rules.warnings)} warning(s)' if rules.warnings else ''}",
        highlight=False,
    )


@rules_app.command("apply")
def rules_apply(
    path: Annotated[Path, typer.Argument(help="A rule file")] = DEFAULT_RULES,
    wait: Annotated[bool, typer.Option("--wait", help="Follow it to the end")] = False,
    page_size: Annotated[int, typer.Option(min=1, max=1000)] = 1000,
) -> None:
    """Re-tier the whole base with this rule file, as a Temporal workflow."""
    from clientela.rules_apply import ApplyRunning, start_apply
    from clientela.temporal import connect

    s = settings()
    rules = _load_rules(path)
    for warning in rules.warnings:
        err.print(str(warning), highlight=False, soft_wrap=True)

    async def go() -> None:
        client = await connect(s)
        handle = await start_apply(
            client, s, rules, started_by=os.environ.get("USER", ""), page_size=page_size
        )
        out.print(f"Started {handle.id}: rule set {rules.name} version {rules.version}")
        if wait:
            await _follow(client, rules.name)
        else:
            out.print("Follow it with `clientela rules status`.")

    try:
        asyncio.run(go())
    except (ApplyRunning, ConnectionError) as exc:
        raise fail(str(exc), code=2 if isinstance(exc, ApplyRunning) else 1) from None


async def _follow(client: Any, ruleset: str) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from clientela.rules_apply import apply_progress

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), console=out
    ) as bar:
        task = bar.add_task("ranking", total=None)
        while True:
            progress, finished = await apply_progress(client, ruleset)
            bar.update(
                task,
                description=progress.stage,
                total=progress.total or None,
                completed=progress.processed,
            )
            if finished:
                break
            await asyncio.sleep(0.5)
    _print_tiers(progress)


def _print_tiers(progress: Any) -> None:
    table = Table(title=f"Tier mix, version {progress.version}")
    table.add_column("tier")
    table.add_column("customers", justify="right")
    table.add_column("share", justify="right")
    total = sum(progress.tiers.values()) or 1
    for tier, n in sorted(progress.tiers.items()):
        table.add_row(tier, str(n), f"{100 * n / total:.1f}%")
    out.print(table)
    out.print(
        f"{progress.processed} customers decided, {progress.changed} changed tier "
        f"(stage: {progress.stage})."
    )


@rules_app.command("status")
def rules_status(
    ruleset: Annotated[str, typer.Argument(help="Rule set name")] = "crm",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Progress of the latest `rules apply`."""
    from dataclasses import asdict

    from temporalio.service import RPCError

    from clientela.rules_apply import apply_progress
    from clientela.temporal import connect

    s = settings()

    async def get() -> tuple[Any, bool]:
        return await apply_progress(await connect(s), ruleset)

    try:
        progress, finished = asyncio.run(get())
    except (RPCError, RuntimeError, ConnectionError) as exc:
        raise fail(f"no apply of rule set {ruleset!r} to show: {exc}") from None
    if as_json:
        print(json.dumps({**asdict(progress), "finished": finished}, indent=2))
        return
    _print_tiers(progress)


@rules_app.command("explain")
def rules_explain(
    customer_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Why a customer is in its tier: the rule, its version, each condition and its values."""
    from rules.service import explain_customer

    data = _about_customer(customer_id, explain_customer)
    if data is None:
        raise fail(f"no decision for {customer_id!r} yet: run `clientela rules apply` first")
    if as_json:
        print(json.dumps(data, indent=2, default=str, ensure_ascii=False))
        return
    out.print(
        f"[bold]{esc(customer_id)}[/bold]: tier {data['tier']}, decided by {data['decided_by']} "
        f"(rule set {data['ruleset']} version {data['version']}, {data['decided_at']})"
    )
    for tried in data["tier_rules_tried"]:
        out.print(
            f"  {tried['rule']} (priority {tried['priority']}, tier {tried['tier']}, "
            f"owner {tried['owner']}): {tried['when']} -> {tried['holds']}",
            highlight=False,
        )
        for leaf in tried["conditions"]:
            shown = ", ".join(f"{k}={v}" for k, v in leaf["values"].items())
            out.print(f"      {leaf['condition']}: {leaf['holds']} ({shown})", highlight=False)
    out.print(f"  segments: {', '.join(data['segments']) or '-'}")
    out.print(f"  offers:   {', '.join(data['offers']) or '-'}")
    policy = data["policy"]
    out.print(
        f"  policy:   channels {', '.join(policy['channels'])}; complaint response "
        f"{policy['service_level']['complaint_response_hours']}h",
        highlight=False,
    )


def _report_problems(errors: list[Any]) -> None:
    for problem in errors:
        err.print(str(problem), highlight=False, soft_wrap=True)


@campaign_app.command("preview")
def campaign_preview(
    spec_path: Annotated[Path, typer.Argument(help="A campaign spec (YAML)")],
    rules_path: Annotated[Path, typer.Option("--rules", help="The rule file")] = DEFAULT_RULES,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Validate a campaign spec and show whom it would reach, what it would cost."""
    from clientela.campaigns import audience, spec
    from clientela.db import session_scope
    from clientela.templating import Templates
    from clientela.yamlfile import SpecError

    s = settings()
    rules = _load_rules(rules_path)
    try:
        campaign = spec.load(spec_path, rules, Templates(s.templates_dir, s.default_locale))
    except SpecError as exc:
        _report_problems(exc.problems)
        raise fail(f"{spec_path}: {len(exc.problems)} error(s)") from None
    with session_scope(s.db_url) as session:
        result = audience.preview(session, campaign)
    data = {"campaign": campaign.spec.id, **result.as_dict()}
    if as_json:
        print(json.dumps(data, indent=2))
        return
    out.print(
        f"[bold]{esc(campaign.spec.name)}[/bold] ({campaign.spec.id}): "
        f"{result.audience} in the audience: {result.treated} to contact, "
        f"{result.control} held out, {result.excluded_total} excluded"
    )
    for title, counts in (
        ("by tier", result.by_tier),
        ("by segment", result.by_segment),
        ("by channel (treated)", result.by_channel),
    ):
        out.print(
            f"  {title}: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "-")
        )
    for arm, groups in result.by_arm.items():
        shown = [(g, groups[g]) for g in ("treated", "control", "excluded") if groups.get(g)]
        out.print(f"  arm {arm}: " + ", ".join(f"{g} {n}" for g, n in shown))
    for reason, n in result.excluded.most_common():
        out.print(f"  excluded {n}: {reason}", highlight=False)
    verdict = "[red]over budget[/red]" if result.over_budget else "within budget"
    out.print(f"  estimated cost {result.cost:.2f} of budget {result.budget:.2f}: {verdict}")


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


@campaign_app.command("create")
def campaign_create(
    spec_path: Annotated[Path, typer.Argument(help="A campaign spec (YAML)")],
    rules_path: Annotated[Path, typer.Option("--rules", help="The rule file")] = DEFAULT_RULES,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Validate, preview and start a campaign; it waits for approval before anything goes out."""
    from clientela.campaigns.lifecycle import CampaignExists, create
    from clientela.yamlfile import SpecError

    rules = _load_rules(rules_path)

    async def go(client: Any, s: Any) -> Any:
        return await create(client, s, spec_path, rules)

    try:
        preview, handle = _run_temporal(go)
    except SpecError as exc:
        _report_problems(exc.problems)
        raise fail(f"{spec_path}: {len(exc.problems)} error(s)") from None
    except CampaignExists as exc:
        raise fail(str(exc), code=2) from None
    if as_json:
        print(json.dumps({"workflow_id": handle.id, **preview.as_dict()}, indent=2))
        return
    out.print(
        f"Created {handle.id}: {preview.audience} in the audience, estimated cost "
        f"{preview.cost:.2f} of {preview.budget:.2f}"
        + (" [red](over budget: it cannot be approved)[/red]" if preview.over_budget else "")
    )
    out.print("Approve it with `clientela campaign approve ID --by NAME`.")


@campaign_app.command("approve")
def campaign_approve(
    campaign_id: str, by: Annotated[str, typer.Option("--by", help="Who approves")]
) -> None:
    """Approve a campaign awaiting approval (refused when it is over budget)."""
    from clientela.campaigns.lifecycle import decide

    _run_temporal(lambda client, s: decide(client, campaign_id, "approve", by))
    out.print(f"{campaign_id} approved by {by}.")


@campaign_app.command("reject")
def campaign_reject(
    campaign_id: str,
    by: Annotated[str, typer.Option("--by", help="Who rejects")],
    reason: Annotated[str, typer.Option("--reason", help="Why")],
) -> None:
    """Reject a campaign awaiting approval, with the reason."""
    from clientela.campaigns.lifecycle import decide

    _run_temporal(lambda client, s: decide(client, campaign_id, "reject", by, reason))
    out.print(f"{campaign_id} rejected by {by}.")


@campaign_app.command("go")
def campaign_go(
    campaign_id: str, by: Annotated[str, typer.Option("--by", help="Who decides")]
) -> None:
    """After the pilot: send to everyone else (when the pilot waits for a decision)."""
    from clientela.campaigns.lifecycle import decide

    _run_temporal(lambda client, s: decide(client, campaign_id, "go", by))
    out.print(f"{campaign_id}: go after the pilot, by {by}.")


def _campaign_signal(action: str) -> Any:
    def command(campaign_id: str) -> None:
        from clientela.campaigns.lifecycle import control, status

        async def act(client: Any, s: Any) -> Any:
            await control(client, campaign_id, action)
            return await status(client, campaign_id)

        now = _run_temporal(act)
        out.print(f"{campaign_id}: {_what_follows(action, now)}", highlight=False)

    command.__doc__ = {
        "pause": "Hold the sending after the current page.",
        "resume": "Carry on sending.",
        "cancel": "Stop the campaign; nothing more is sent.",
        "close": "Close the response window now.",
    }[action]
    return command


def _what_follows(action: str, now: Any) -> str:
    """What the signal will do, said from where the campaign stands."""
    stage, waiting = now.stage, now.counts.get("deferred", 0)
    if stage in ("done", "cancelled", "rejected"):
        return f"{action} received; the campaign is {stage} already, so nothing changes"
    if action == "close":
        if stage == "waiting":
            return (
                f"close received: {waiting:,} messages wait for quiet hours (until "
                f"{now.waiting_until or 'the hours open'}); the response window closes and "
                "the report follows once they are sent. Cancel the campaign to drop them."
            )
        if stage in ("tracking", "reporting"):
            return "closing the response window now; the report follows"
        return f"close received: the response window will close as soon as sending ends ({stage})"
    if action == "pause":
        return f"pausing: sending holds after the current page ({stage})"
    if action == "resume":
        return f"resuming ({stage})"
    return f"cancelling: nothing more is sent ({stage})"


for _action in ("pause", "resume", "cancel", "close"):
    campaign_app.command(_action)(_campaign_signal(_action))


@campaign_app.command("status")
def campaign_status(
    campaign_id: str, as_json: Annotated[bool, typer.Option("--json")] = False
) -> None:
    """Stage and counts of a campaign while it runs."""
    from dataclasses import asdict

    from clientela.campaigns.lifecycle import status

    data = asdict(_run_temporal(lambda client, s: status(client, campaign_id)))
    if as_json:
        print(json.dumps(data, indent=2))
        return
    out.print(
        f"[bold]{campaign_id}[/bold]: {data['stage']}{' (paused)' if data['paused'] else ''}; "
        f"{data['treated']:,} to contact, {data['control']:,} held out, "
        f"{data['excluded']:,} excluded",
        highlight=False,
    )
    out.print(
        f"  messages: {data['sent']:,} of {data['treated']:,} handled: {said(data['counts'])}",
        highlight=False,
    )
    if data["proofs"]:
        out.print(f"  proofs: {said(data['proofs'])}", highlight=False)
    if (check := data["pilot_check"]) is not None:
        out.print(
            f"  pilot of {data['pilot']}: {check['failed']} of {check['handed']} failed "
            f"({check['failure_rate']:.1%}, threshold {check['threshold']:.1%}): "
            + ("passed" if check["passed"] else "[red]did not pass[/red]")
        )
    if data["stage"] == "pilot_review":
        out.print(f"  Go on with `clientela campaign go {campaign_id} --by NAME`, or cancel it.")
    if data["waiting_until"]:
        out.print(f"  deferred messages wait for quiet hours until {data['waiting_until']}")


@campaign_app.command("register")
def campaign_register(
    campaign_id: Annotated[str, typer.Argument(help="A slug: letters, digits, -")],
    name: Annotated[str, typer.Option(help="The campaign's name")],
    objective: Annotated[str, typer.Option(help="What it is for")] = "",
    cost: Annotated[
        list[str], typer.Option(help="Cost per message, CHANNEL=AMOUNT (repeatable)")
    ] = [],  # noqa: B006 - typer reads the default
) -> None:
    """Record a campaign run elsewhere, to import its members and responses and report it."""
    import re

    from clientela.db import session_scope
    from models import Campaign

    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,63}", campaign_id):
        raise fail(f"campaign id {campaign_id!r}: use lower-case letters, digits and -")
    costs: dict[str, float] = {}
    for item in cost:
        channel, _, amount = item.partition("=")
        try:
            costs[channel] = float(amount)
        except ValueError:
            raise fail(f"--cost {item!r}: write CHANNEL=AMOUNT, e.g. email=0.002") from None
    s = settings()
    with session_scope(s.db_url) as session:
        if session.get(Campaign, campaign_id) is not None:
            raise fail(f"campaign {campaign_id!r} already exists", code=2)
        session.add(
            Campaign(
                id=campaign_id,
                name=name,
                objective=objective,
                stage="imported",
                cost_per_message=costs,
            )
        )
    out.print(f"Registered campaign {campaign_id}")


@campaign_app.command("import-members")
def campaign_import_members(campaign_id: str, path: Path) -> None:
    """Arms and control groups decided elsewhere (customer_id, arm, group[, variant])."""
    from clientela.campaigns.imports import import_members

    _import(
        lambda session: import_members(session, campaign_id=campaign_id, path=path),
        lambda r: f"{r.imported} members imported, {len(r.errors)} problems",
    )


@events_app.command("import")
def events_import(path: Path) -> None:
    """Responses after the fact (type, customer_id[, campaign, channel, value, at])."""
    from clientela.campaigns.imports import import_events

    _import(
        lambda session: import_events(session, path=path),
        lambda r: (
            f"{r.imported} events imported, {r.skipped} already imported before (skipped), "
            f"{len(r.errors)} problems"
        ),
    )


@campaign_app.command("list")
def campaign_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every campaign with its id, name and stage."""
    from sqlmodel import col, select

    from clientela.db import session_scope
    from models import Campaign

    s = settings()
    with session_scope(s.db_url) as session:
        rows = [
            {"id": c.id, "name": c.name, "stage": c.stage}
            for c in session.exec(select(Campaign).order_by(col(Campaign.created_at))).all()
        ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table()
    for heading in ("id", "name", "stage"):
        table.add_column(heading)
    for row in rows:
        table.add_row(row["id"], row["name"], row["stage"])
    out.print(table)


@campaign_app.command("report")
def campaign_report(
    campaign_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="The documented JSON report")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="One row per arm and group")] = False,
    html_path: Annotated[
        Path | None, typer.Option("--html", help="Also write a standalone page with charts")
    ] = None,
) -> None:
    """Per arm: treated against control, responses, conversions, revenue, cost, uplift."""
    from clientela.campaigns import html, report
    from clientela.db import session_scope

    s = settings()
    try:
        with session_scope(s.db_url) as session:
            data = report.build(session, campaign_id)
    except report.UnknownCampaign as exc:
        raise fail(str(exc)) from None
    if html_path is not None:
        try:
            html_path.parent.mkdir(parents=True, exist_ok=True)
            html_path.write_text(html.render(data), encoding="utf-8")
        except OSError as exc:
            raise fail(f"--html {html_path}: {exc.strerror or exc}") from None
        err.print(f"report page: {html_path.resolve()}", highlight=False)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    if as_csv:
        print(report.to_csv(data), end="")
        return
    _print_report(data)


def _print_report(data: dict[str, Any]) -> None:
    """The report as tables: one per arm, treated against control, with the uplift."""
    about = data["campaign"]
    out.print(f"[bold]{esc(about['name'])}[/bold] ({about['id']}, {about['stage']})")
    for arm in data["arms"]:
        table = Table(title=f"arm {arm['arm']} against its {arm['control']} control")
        table.add_column("")
        table.add_column("treated", justify="right")
        table.add_column("control", justify="right")
        table.add_column("uplift", justify="right")
        t, c, u = arm["treated"], arm["control_group"], arm["uplift"]
        table.add_row("customers", str(t["targeted"]), str(c["targeted"]), "")
        table.add_row("sent", str(t["sent"]), str(c["sent"]), "")
        for label, rate, key in (
            ("responded", "response_rate", "response"),
            ("visited", "visit_rate", "visit"),
            ("converted", "conversion_rate", "conversion"),
        ):
            table.add_row(label, _pct(t[rate]), _pct(c[rate]), _uplift_text(u[key], "pp"))
        table.add_row(
            "revenue per customer",
            f"{t['revenue_per_customer']:.4f}",
            f"{c['revenue_per_customer']:.4f}",
            _uplift_text(u["revenue_per_customer"], ""),
        )
        table.add_row("revenue", f"{t['revenue']:.2f}", f"{c['revenue']:.2f}", "")
        table.add_row("cost", f"{t['cost']:.2f}", f"{c['cost']:.2f}", "")
        table.add_row("ROI", "-" if t["roi"] is None else f"{t['roi']:.2f}", "", "")
        out.print(table)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _uplift_text(u: dict[str, Any], unit: str) -> str:
    if "insufficient" in u:
        return "too little data"
    diff = u["uplift_pp"] if unit == "pp" else u["diff"]
    low, high = u["ci95"]
    return f"{diff:+.2f}{unit} [{low:+.2f}, {high:+.2f}] p={u['p_value']:.2g}"


# --- complaints and service -----------------------------------------------------------------


def _case_change(complaint_id: int, change: Any) -> dict[str, Any]:
    """Apply ``change(session)`` to the case, then wake its workflow (if Temporal is up)."""
    from clientela import complaints
    from clientela.journeys import tell_case
    from clientela.temporal import connect

    s = settings()
    try:
        case, uid = complaints.apply(s.db_url, complaint_id, change)
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
    from clientela import complaints
    from clientela.db import session_scope

    if state not in (None, "open", "responded", "resolved", "closed", "unresolved"):
        raise fail(f"--state {state}: one of open, responded, resolved, closed, unresolved")
    from clientela.customers import UnknownCustomer

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
    by: Annotated[str, typer.Option(help="Who answered the customer")],
    note: Annotated[str, typer.Option(help="What they were told")] = "",
) -> None:
    """Record the first answer to the customer: the response reminders stop."""
    from clientela import complaints

    _print_case(
        _case_change(
            complaint_id, partial(complaints.respond, complaint_id=complaint_id, by=by, note=note)
        )
    )


@complaint_app.command("resolve")
def complaint_resolve(
    complaint_id: int,
    by: Annotated[str, typer.Option(help="Who resolved it")],
    resolution: Annotated[str, typer.Option(help="How it was resolved")] = "",
) -> None:
    """Resolve the case: the customer is asked for a satisfaction score."""
    from clientela import complaints

    _print_case(
        _case_change(
            complaint_id,
            partial(complaints.resolve, complaint_id=complaint_id, by=by, resolution=resolution),
        )
    )


@complaint_app.command("rate")
def complaint_rate(
    complaint_id: int,
    score: Annotated[int, typer.Argument(help="1 (very unhappy) to 5 (very happy)")],
    comment: str = "",
) -> None:
    """Record the customer's satisfaction taken by phone or in store."""
    from clientela import complaints

    _print_case(
        _case_change(
            complaint_id,
            partial(complaints.rate, complaint_id=complaint_id, score=score, comment=comment),
        )
    )


@service_app.command("report")
def service_report(
    since: Annotated[
        datetime | None, typer.Option(help="Only cases opened since (e.g. 2026-11-01)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The documented JSON report")] = False,
    html_path: Annotated[Path | None, typer.Option("--html", help="Also write a page")] = None,
) -> None:
    """Response and resolution times, breaches, frequent codes and satisfaction, by tier."""
    from clientela.db import session_scope
    from clientela.service import report

    s = settings()
    start = since.replace(tzinfo=UTC) if since is not None and since.tzinfo is None else since
    with session_scope(s.db_url) as session:
        data = report.build(session, since=start)
    if html_path is not None:
        try:
            html_path.parent.mkdir(parents=True, exist_ok=True)
            html_path.write_text(report.render_html(data), encoding="utf-8")
        except OSError as exc:
            raise fail(f"--html {html_path}: {exc.strerror or exc}") from None
        err.print(f"report page: {html_path.resolve()}", highlight=False)
    if as_json:
        print(json.dumps(data, indent=2))
        return
    out.print(report.render_text(data), highlight=False)


def main() -> None:
    from clientela.db import SchemaOutdated

    try:
        app()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except SchemaOutdated as exc:
        err.print(Text.assemble(("error:", "red"), " ", str(exc)), soft_wrap=True)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # The Temporal client's Rust threads can abort CPython's finalisation with "PyGILState_
    # Release: thread state must be current" (temporalio/sdk-python#300). Everything is
    # flushed and closed by now, so skip the interpreter's teardown.
    os._exit(code)


if __name__ == "__main__":
    main()
