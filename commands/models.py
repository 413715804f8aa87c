"""`clientela models`: train predictive models, and read what each version learnt."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.table import Table

from commands.common import _audit, actor, fail, out, settings

models_app = typer.Typer(
    help="Predictive models: propensity and uplift (docs/models.md).", no_args_is_help=True
)


def _pct(x: Any) -> str:
    return "—" if x is None else f"{x * 100:+.2f} pp"


def _num(x: Any) -> str:
    return "—" if x is None else f"{x:.4f}"


@models_app.command("train")
def models_train(
    name: Annotated[str, typer.Argument(help="A model spec: predictive/NAME.yaml")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the result")] = True,
) -> None:
    """Train a new version of a model, as a Temporal workflow (one at a time per model)."""
    from temporalio.client import WorkflowFailureError
    from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
    from temporalio.exceptions import WorkflowAlreadyStartedError

    from activities.models import TrainInput, TrainResult
    from clientela.predictive import spec as model_spec
    from clientela.temporal import connect, root_cause
    from clientela.yamlfile import SpecError
    from workflows.models import ModelTraining, workflow_id

    s = settings()
    try:
        model_spec.load(s.predictive_dir, name)
    except SpecError as exc:
        raise fail(str(exc)) from None

    async def go() -> TrainResult | None:
        client = await connect(s)
        try:
            handle = await client.start_workflow(
                ModelTraining.run,
                TrainInput(name=name, requested_by=actor()),
                id=workflow_id(name),
                task_queue=s.task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            )
        except WorkflowAlreadyStartedError:
            raise fail(f"model {name} is being trained already; wait for it", code=2) from None
        out.print(f"Started {handle.id}: training model {name}")
        _audit("models.train", f"model:{name}", {"workflow": handle.id})
        if not wait:
            out.print(f"See the result with `clientela models show {name}`.")
            return None
        return await handle.result()

    try:
        result = asyncio.run(go())
    except WorkflowFailureError as exc:
        raise fail(f"training {name} failed: {root_cause(exc)}") from None
    except ConnectionError as exc:
        raise fail(str(exc)) from None
    if result is not None:
        _print_model(result.summary)


def _print_model(m: dict[str, Any]) -> None:
    rows = m["rows"]
    offer = f" for offer {m['offer']}" if m["offer"] else ""
    out.print(
        f"[bold]{m['name']}[/] version {m['version']}: {m['kind']} ({m['method']}) of "
        f"{m['outcome']}{offer}",
        highlight=False,
    )
    out.print(
        f"  learnt from {', '.join(m['campaigns'])}: {rows['learn']:,} customers, "
        f"{rows['holdout']:,} held out to measure ({rows['treated']:,} contacted, "
        f"{rows['control']:,} in control, {rows['responders']:,} responded); "
        f"trained {m['trained_at'][:19]} in {m['seconds']:.1f} s",
        highlight=False,
    )
    out.print(f"  features: {', '.join(m['features'])}", highlight=False)
    x = m["metrics"]
    if m["kind"] == "propensity":
        out.print(f"  held out: AUC {_num(x.get('auc'))}", highlight=False)
    else:
        out.print(
            f"  held out: Qini {_num(x.get('qini'))}, AUUC {_num(x.get('auuc'))}, uplift at "
            f"10% {_pct(x.get('uplift_at_10'))}, 20% {_pct(x.get('uplift_at_20'))}, "
            f"30% {_pct(x.get('uplift_at_30'))} (everyone: {_pct(x.get('uplift_overall'))})",
            highlight=False,
        )


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Every model spec, and its trained versions."""
    from sqlmodel import col, select

    from clientela.db import session_scope
    from clientela.predictive import spec as model_spec
    from clientela.predictive.training import describe
    from models import PredictiveModel

    s = settings()
    with session_scope(s.db_url) as session:
        rows = session.exec(
            select(PredictiveModel).order_by(
                col(PredictiveModel.name), col(PredictiveModel.version)
            )
        ).all()
        found = [describe(r) for r in rows]
    for m in found:
        m.pop("curve")
    if as_json:
        out.print_json(json.dumps(found))
        return
    table = Table(title="Models")
    for column in ("model", "version", "kind", "outcome", "trained", "rows", "held-out"):
        table.add_column(column)
    trained = {m["name"] for m in found}
    for m in found:
        x = m["metrics"]
        score = (
            f"AUC {_num(x.get('auc'))}"
            if m["kind"] == "propensity"
            else f"Qini {_num(x.get('qini'))}, @30% {_pct(x.get('uplift_at_30'))}"
        )
        table.add_row(
            m["name"],
            str(m["version"]),
            f"{m['kind']} ({m['method']})",
            m["outcome"],
            m["trained_at"][:16],
            f"{m['rows']['learn'] + m['rows']['holdout']:,}",
            score,
        )
    for name in model_spec.names(s.predictive_dir):
        if name not in trained:
            table.add_row(name, "—", "", "", "not trained yet", "", "")
    out.print(table)


@models_app.command("show")
def models_show(
    name: Annotated[str, typer.Argument()],
    version: Annotated[int | None, typer.Option("--version", min=1)] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One version of a model (the latest unless --version): data, features, metrics."""
    from clientela.db import session_scope
    from clientela.predictive.training import ModelMissing, describe, latest

    with session_scope(settings().db_url) as session:
        try:
            found = describe(latest(session, name, version))
        except ModelMissing as exc:
            raise fail(str(exc)) from None
    if as_json:
        out.print_json(json.dumps(found))
        return
    _print_model(found)
    if found["curve"]:
        out.print("  Qini curve (share targeted: incremental responses per customer):")
        out.print(
            "  " + ", ".join(f"{share:.0%}: {gain:+.4f}" for share, gain in found["curve"][::2]),
            highlight=False,
        )
