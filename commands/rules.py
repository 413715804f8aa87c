"""`clientela rules`: check, apply, follow and explain the business rules."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape as esc
from rich.table import Table

from commands.common import (
    DEFAULT_RULES,
    _about_customer,
    _audit,
    _load_rules,
    err,
    fail,
    out,
    settings,
)

rules_app = typer.Typer(help="Business rules: tiers, segments, offers.", no_args_is_help=True)


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
        _audit(
            "rules.applied",
            f"rules:{rules.name}",
            {"version": rules.version, "file": str(path), "workflow": handle.id},
        )
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
