"""`clientela campaign`: from a spec to its report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape as esc
from rich.table import Table

from clientela.messaging.counts import said
from commands.common import (
    DEFAULT_RULES,
    _audit,
    _import,
    _load_rules,
    _report_problems,
    _run_temporal,
    _write_page,
    acting_as,
    fail,
    out,
    settings,
)

campaign_app = typer.Typer(help="Campaigns and their reports.", no_args_is_help=True)


@campaign_app.command("preview")
def campaign_preview(
    spec_path: Annotated[Path, typer.Argument(help="A campaign spec (YAML)")],
    rules_path: Annotated[Path, typer.Option("--rules", help="The rule file")] = DEFAULT_RULES,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Validate a campaign spec and show whom it would reach, what it would cost."""
    from clientela.campaigns import audience, spec
    from clientela.db import session_scope
    from clientela.messaging.templating import Templates
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
    order = [a.name for a in campaign.spec.arms if a.name in result.by_arm]
    for arm in order + [a for a in result.by_arm if a not in order]:
        groups = result.by_arm[arm]
        shown = [(g, groups[g]) for g in ("treated", "control", "excluded") if groups.get(g)]
        chosen = result.models.get(arm)
        by = f" (chosen by model {chosen['name']} version {chosen['version']})" if chosen else ""
        out.print(f"  arm {arm}{by}: " + ", ".join(f"{g} {n}" for g, n in shown))
    for reason, n in result.excluded.most_common():
        out.print(f"  excluded {n}: {reason}", highlight=False)
    verdict = "[red]over budget[/red]" if result.over_budget else "within budget"
    out.print(f"  estimated cost {result.cost:.2f} of budget {result.budget:.2f}: {verdict}")
    _print_power(result.power)


def _print_power(power: dict[str, Any]) -> None:
    """What the split can measure: each arm's smallest detectable conversion uplift."""
    if not power:
        return
    for arm, measured in power["arms"].items():
        smallest = measured["mde_pp"]
        said_ = (
            "has too few held out to measure any uplift"
            if smallest is None
            else f"detects a conversion uplift of +{smallest:.2f} pp or more"
        )
        out.print(
            f"  arm {arm} {said_} (80% power, "
            f"{measured['control']} held out; baseline {power['baseline']:.1%}: "
            f"{power['baseline_from']})",
            highlight=False,
        )
    if power.get("warning"):
        out.print(f"  [red]warning:[/red] {esc(power['warning'])}")


#: ``--by`` once a team has users is the signed-in user; before that, free text.
BY_HELP = "Who decides: without users, any name; with users, the signed-in approver"


@campaign_app.command("create")
def campaign_create(
    spec_path: Annotated[Path, typer.Argument(help="A campaign spec (YAML)")],
    rules_path: Annotated[Path, typer.Option("--rules", help="The rule file")] = DEFAULT_RULES,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    by: Annotated[
        str | None, typer.Option("--by", help="Who creates it (a marketer, once users exist)")
    ] = None,
) -> None:
    """Validate, preview and start a campaign; it waits for approval before anything goes out."""
    from clientela.campaigns.lifecycle import CampaignExists, create
    from clientela.people.approval import check_creator
    from clientela.yamlfile import SpecError

    by = acting_as(by, required=False)
    _people(lambda session: check_creator(session, by))
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
    _audit(
        "campaign.created",
        f"campaign:{handle.id.removeprefix('campaign-')}",
        {
            "spec": str(spec_path),
            "audience": preview.audience,
            "cost": round(preview.cost, 2),
            **({"by": by} if by else {}),
        },
    )
    if as_json:
        print(json.dumps({"workflow_id": handle.id, **preview.as_dict()}, indent=2))
        return
    out.print(
        f"Created {handle.id}: {preview.audience} in the audience, estimated cost "
        f"{preview.cost:.2f} of {preview.budget:.2f}"
        + (" [red](over budget: it cannot be approved)[/red]" if preview.over_budget else "")
    )
    if preview.power.get("warning"):
        out.print(f"[red]warning:[/red] {esc(preview.power['warning'])}")
    out.print("An approver approves it with `clientela campaign approve ID` (or in the console).")


@campaign_app.command("approve")
def campaign_approve(
    campaign_id: str,
    by: Annotated[str | None, typer.Option("--by", help=BY_HELP)] = None,
) -> None:
    """Approve a campaign awaiting approval (refused when it is over budget)."""
    from clientela.campaigns.lifecycle import decide

    by = _may_decide(campaign_id, by)
    _run_temporal(lambda client, s: decide(client, campaign_id, "approve", by))
    _audit("campaign.approved", f"campaign:{campaign_id}", {"by": by})
    out.print(f"{campaign_id} approved by {by}.")


@campaign_app.command("reject")
def campaign_reject(
    campaign_id: str,
    reason: Annotated[str, typer.Option("--reason", help="Why")],
    by: Annotated[str | None, typer.Option("--by", help=BY_HELP)] = None,
) -> None:
    """Reject a campaign awaiting approval, with the reason."""
    from clientela.campaigns.lifecycle import decide

    by = _may_decide(campaign_id, by)
    _run_temporal(lambda client, s: decide(client, campaign_id, "reject", by, reason))
    _audit("campaign.rejected", f"campaign:{campaign_id}", {"by": by, "reason": reason})
    out.print(f"{campaign_id} rejected by {by}.")


@campaign_app.command("go")
def campaign_go(
    campaign_id: str,
    by: Annotated[str | None, typer.Option("--by", help=BY_HELP)] = None,
) -> None:
    """After the pilot: send to everyone else (when the pilot waits for a decision)."""
    from clientela.campaigns.lifecycle import decide

    by = _may_decide(campaign_id, by)
    _run_temporal(lambda client, s: decide(client, campaign_id, "go", by))
    _audit("campaign.go", f"campaign:{campaign_id}", {"by": by})
    out.print(f"{campaign_id}: go after the pilot, by {by}.")


def _people(check: Any) -> None:
    """Run a check of who may do this; its refusal is one clear line."""
    from clientela.db import session_scope
    from clientela.people.users import PeopleError

    try:
        with session_scope(settings().db_url) as session:
            check(session)
    except PeopleError as exc:
        raise fail(str(exc)) from None


def _may_decide(campaign_id: str, by: str | None) -> str:
    """Who decides (the signed-in approver, once people exist), if they may."""
    from clientela.people.approval import check_decider

    s = settings()
    who = acting_as(by, required=True)
    assert who is not None
    _people(lambda session: check_decider(session, campaign_id, who, self_approval=s.self_approval))
    return who


def _campaign_signal(action: str) -> Any:
    def command(campaign_id: str) -> None:
        from clientela.campaigns.lifecycle import control, status

        async def act(client: Any, s: Any) -> Any:
            await control(client, campaign_id, action)
            return await status(client, campaign_id)

        now = _run_temporal(act)
        _audit(f"campaign.{action}", f"campaign:{campaign_id}", {"stage": now.stage})
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
        _write_page(html_path, html.render(data))
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
    if about.get("interim"):
        out.print(
            "Interim figures: the response window is still open, and the intervals hold for "
            "its close; a verdict may still change.",
            highlight=False,
        )
    checks = data.get("checks") or {}
    ratio = checks.get("sample_ratio")
    if ratio and ratio["alarm"]:
        out.print(
            f"ALARM: the split does not match the spec: {ratio['observed_control_share']:.1%} "
            f"held out where {ratio['expected_control_share']:.1%} was asked "
            f"(p = {ratio['p_value']:.2g}); the assignment went wrong, so do not trust the "
            "uplift.",
            highlight=False,
        )
    if checks.get("control_contacted"):
        out.print(
            f"ALARM: {checks['control_contacted']} held-out customers were contacted.",
            highlight=False,
        )
    for arm in data["arms"]:
        said = arm.get("verdict")
        if said:
            out.print(f"Did arm {arm['arm']} work? {said['verdict'].upper()}. {said['said']}",
                      highlight=False, markup=False)  # fmt: skip
    for arm in data["arms"]:
        chosen = arm.get("selection") or {}
        if chosen.get("said"):
            out.print(f"Arm {arm['arm']}: {chosen['said']}.", highlight=False, markup=False)
        m = chosen.get("model")
        if m and m["kind"] == "uplift":
            x = m["metrics"]

            def pp(v: float | None) -> str:
                return "-" if v is None else f"{v * 100:+.2f} pp"

            out.print(
                f"  model {m['name']} v{m['version']} held out: Qini {x.get('qini') or 0:.3f}, "
                f"AUUC {x.get('auuc') or 0:.3f}, uplift of its top 30% "
                f"{pp(x.get('uplift_at_30'))} (everyone {pp(x.get('uplift_overall'))})",
                highlight=False,
                markup=False,
            )
        table = Table(title=f"arm {arm['arm']} against its {arm['control']} control")
        table.add_column("")
        table.add_column("treated", justify="right")
        table.add_column("control", justify="right")
        table.add_column("uplift", justify="right")
        t, c, u = arm["treated"], arm["control_group"], arm["uplift"]
        table.add_row("customers", str(t["targeted"]), str(c["targeted"]), "")
        table.add_row("sent", str(t["sent"]), str(c["sent"]), "")
        if t.get("bounced"):
            table.add_row("bounced", str(t["bounced"]), "", "")
        e = t.get("engagement") or {}
        if e:  # only the contacted can open or click: engagement, not uplift
            table.add_row("opened (people)", _count_rate(e["opened"], e["open_rate"]), "", "")
            table.add_row("clicked (people)", _count_rate(e["clicked"], e["click_rate"]), "", "")
            table.add_row("replied", str(e.get("replied", 0)), "", "")
            table.add_row("opened only by machines", str(e["machine_opened"]), "", "")
            table.add_row("links followed only by machines", str(e["machine_clicked"]), "", "")
        for label, rate, key in (
            ("responded (visited or converted)", "response_rate", "response"),
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
        table.add_row("ROI on all sales", "-" if t["roi"] is None else f"{t['roi']:.2f}", "", "")
        inc = arm.get("incremental") or {}
        if inc.get("roi") is not None:
            low, high = inc["roi_ci95"]
            table.add_row(
                "incremental ROI",
                f"{inc['roi']:.2f}",
                "",
                f"[{low:.2f}, {high:.2f}]",
            )
        if inc.get("revenue") is not None:
            low, high = inc["revenue_ci95"]
            table.add_row(
                "incremental revenue", f"{inc['revenue']:.2f}", "", f"[{low:.2f}, {high:.2f}]"
            )
        out.print(table)
        compared = arm.get("variant_comparison")
        if compared:
            out.print(f"  variants: {compared['said']}", highlight=False, markup=False)
            for pair in compared["pairs"]:
                out.print(
                    f"    {pair['a']} against {pair['b']}: "
                    + _uplift_text(pair, "pp")
                    + (
                        f", Holm-adjusted p={pair['p_adjusted']:.2g}"
                        if "p_adjusted" in pair
                        else ""
                    ),
                    highlight=False,
                    markup=False,
                )
        if t.get("bounce_reasons"):
            out.print(
                "  bounces by reason: "
                + "; ".join(f"{n} {why}" for why, n in t["bounce_reasons"].items()),
                highlight=False,
                markup=False,
            )
    _print_arm_comparison(data)


def _print_arm_comparison(data: dict[str, Any]) -> None:
    compared = data.get("arm_comparison")
    if not compared:
        return
    out.print("Arms against each other (difference of their conversion uplifts):")
    for pair in compared["pairs"]:
        if "insufficient" in pair:
            out.print(f"  {pair['a']} - {pair['b']}: {pair['insufficient']}", highlight=False)
            continue
        low, high = pair["ci95"]
        out.print(
            f"  {pair['a']} - {pair['b']}: {pair['diff_pp']:+.2f} pp [{low:+.2f}, {high:+.2f}], "
            f"p={pair['p_value']:.2g}, Holm-adjusted p={pair['p_adjusted']:.2g}",
            highlight=False,
        )


def _count_rate(n: int, rate: float | None) -> str:
    return f"{n} ({_pct(rate)} of sent)"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _uplift_text(u: dict[str, Any], unit: str) -> str:
    if "insufficient" in u:
        return "too little data"
    diff = u["uplift_pp"] if unit == "pp" else u["diff"]
    low, high = u["ci95"]
    return f"{diff:+.2f}{unit} [{low:+.2f}, {high:+.2f}] p={u['p_value']:.2g}"
