"""Business rules: the rule file in force, a check of a new one, applying it, its progress."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field
from temporalio.service import RPCError

from api.deps import SettingsDep, audited, client_of, for_roles
from api.limits import unprocessable
from api.models import RulesCheck, RulesInForce, RulesProgressOut, RulesStarted, errors
from clientela.db import session_scope
from clientela.journeys.router import SHIPPED_RULES
from clientela.rules_apply import ApplyRunning, apply_progress, start_apply
from clientela.yamlfile import read_source
from rules.check import analyse
from rules.model import RuleFileError, Rules, loads
from rules.service import latest_run

router = APIRouter(tags=["rules"])


class RulesIn(BaseModel):
    """A rule file, as the YAML docs/rules.md describes."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, max_length=500_000)


def _checked(source: str) -> tuple[Rules | None, dict[str, Any]]:
    """The rules (None when they have errors) and what the check says, line by line."""
    rules: Rules | None = None
    try:
        rules = loads(source, "rules.yaml")
    except RuleFileError as exc:
        problems = exc.problems
    else:
        problems = analyse(rules)
    return rules, {
        "ok": rules is not None,
        "ruleset": rules.name if rules else None,
        "version": rules.version if rules else None,
        "problems": [
            {"line": p.line, "column": p.column, "severity": p.severity, "message": p.message}
            for p in problems
        ],
    }


@router.get(
    "/rules",
    dependencies=for_roles("marketer", "approver", "admin"),
    response_model=RulesInForce,
    responses=errors(401, 403),
)
async def rules_in_force(settings: SettingsDep) -> dict[str, Any]:
    """The rule file the base was last tiered with (else the shipped one), as text."""

    def read() -> dict[str, Any]:
        with session_scope(settings.db_url) as session:
            latest = latest_run(session)
            if latest is not None:
                run, version = latest
                return {
                    "ruleset": version.ruleset,
                    "version": version.digest[:12],
                    "applied_at": run.started_at.isoformat() if run.started_at else None,
                    "source": version.source,
                }
        source = read_source(SHIPPED_RULES)
        shipped = loads(source)
        return {
            "ruleset": shipped.name,
            "version": shipped.version,
            "applied_at": None,
            "source": source,
        }

    return await asyncio.to_thread(read)


@router.post(
    "/rules/check",
    dependencies=for_roles("marketer", "approver", "admin"),
    response_model=RulesCheck,
    responses=errors(400, 401, 403, 413),
)
async def rules_check(body: RulesIn) -> dict[str, Any]:
    """Validate a rule file without touching any data: errors and warnings with their line."""
    return (await asyncio.to_thread(_checked, body.source))[1]


@router.post(
    "/rules/apply",
    dependencies=for_roles("admin"),
    response_model=RulesStarted,
    responses=errors(400, 401, 403, 409, 413, 503),
)
async def rules_apply(settings: SettingsDep, body: RulesIn, request: Request) -> Any:
    """Re-tier the whole base with this rule file (a workflow); 422 with the check's
    problems when it has errors, 409 while an apply of the same rule set runs."""
    rules, check = await asyncio.to_thread(_checked, body.source)
    if rules is None:
        return unprocessable(
            [
                {
                    **p,
                    "loc": ["body", "source"],
                    "field": "source",
                    "msg": p["message"],
                    "type": "rules_error",
                }
                for p in check["problems"]
            ]
        )
    actor = getattr(request.state, "actor", "api")
    client = await client_of(request.app)
    try:
        handle = await start_apply(client, settings, rules, started_by=actor)
    except ApplyRunning as exc:
        raise HTTPException(409, str(exc)) from None

    await audited(
        request, "rules.applied", f"rules:{rules.name}", version=rules.version, workflow=handle.id
    )
    return {"workflow_id": handle.id, "ruleset": rules.name, "version": rules.version}


@router.get(
    "/rules/status/{ruleset}",
    dependencies=for_roles("marketer", "approver", "admin"),
    response_model=RulesProgressOut,
    responses=errors(401, 403, 404, 503),
)
async def rules_status(ruleset: str, request: Request) -> dict[str, Any]:
    """Progress of the latest apply of a rule set (``finished`` once it is done)."""
    client = await client_of(request.app)
    try:
        progress, finished = await apply_progress(client, ruleset[:64])
    except (RPCError, RuntimeError) as exc:
        raise HTTPException(404, f"no apply of rule set {ruleset[:64]!r}: {exc}") from None
    return {**asdict(progress), "finished": finished}
