"""Models trained by a Temporal workflow (from the CLI and on a schedule), then a campaign
whose arms a model, marketing and chance choose, run end to end and compared in its report."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError

from activities.models import TrainInput
from clientela.campaigns import lifecycle
from clientela.campaigns.html import render
from clientela.campaigns.report import build
from clientela.db import session_scope
from clientela.predictive.schedules import ensure_model_schedules
from clientela.settings import Settings
from models import Campaign
from tests.factories import signed_in
from tests.processes import run_cli
from tests.serving import api
from tests.test_campaign_workflow import RULES, closed, wait_stage
from tests.test_predictive import past_campaign
from tests.test_rules_apply import apply_directly
from worker import build_worker
from workflows.models import ModelTraining, schedule_id, workflow_id

MODEL = """\
name: reach
kind: uplift
outcome: visit
training: {campaigns: [past], holdout: 0.3, min_rows: 100}
learner: {min_samples_leaf: 20}
"""

CAMPAIGN = """\
id: {id}
name: Three ways to choose
owner: me
target_kpi: {{metric: conversion_rate, uplift: 1}}
budget: 100
cost_per_message: {{email: 0.01}}
channel: email
template: spring_offer
control: {{share: 0.2}}
response_window: 60
arms:
  - {{name: chance, random: {{count: 60}}}}
  - {{name: model, model: {{name: reach, share: 0.3}}}}
  - {{name: marketing, when: 'attr.plan == "gold"'}}
"""


async def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in its own process, while this test's worker keeps the event loop."""
    return await asyncio.to_thread(run_cli, settings, *args)


@pytest.fixture
def modelled(settings: Settings, tmp_path: Path) -> Settings:
    folder = tmp_path / "predictive"
    folder.mkdir()
    (folder / "reach.yaml").write_text(MODEL)
    (folder / "broken.yaml").write_text(MODEL.replace("reach", "broken").replace("past", "gone"))
    return settings.model_copy(update={"predictive_dir": folder})


async def test_train_from_the_cli_then_a_campaign_with_three_arms(
    client: Client, modelled: Settings, tmp_path: Path
) -> None:
    db = modelled.db_url
    past_campaign(db, n=400)
    apply_directly(db)
    async with build_worker(client, modelled):
        trained = await cli(modelled, "models", "train", "reach")
        assert trained.returncode == 0, trained.stderr
        assert "reach version 1: uplift (two_model) of visit" in trained.stdout
        assert "learnt from past: 280 customers, 120 held out" in trained.stdout
        assert "Qini" in trained.stdout and "uplift at 10%" in trained.stdout
        broken = await cli(modelled, "models", "train", "broken")
        assert broken.returncode == 1
        assert "training broken failed" in broken.stderr and "no campaign gone" in broken.stderr
        listed = await cli(modelled, "models", "list", "--json")
        [model] = json.loads(listed.stdout)
        assert (model["name"], model["version"], model["campaigns"]) == ("reach", 1, ["past"])
        shown = json.loads((await cli(modelled, "models", "show", "reach", "--json")).stdout)
        assert shown["metrics"] == model["metrics"] and len(shown["curve"]) == 21
        missing = await cli(modelled, "models", "show", "reach", "--version", "7")
        assert missing.returncode == 1 and "no trained version 7" in missing.stderr
        nothing = await cli(modelled, "models", "train", "nothing")
        assert nothing.returncode == 1 and "no model spec 'nothing'" in nothing.stderr
    people = signed_in(db, marta=["marketer"], desk=["desk"])
    async with api(client, modelled) as http:
        got = await http.get("/models", headers=people["marta"])
        assert got.status_code == 200 and [m["version"] for m in got.json()] == [1]
        one = await http.get("/models/reach", headers=people["marta"])
        assert one.json()["metrics"] == model["metrics"]
        assert (
            await http.get("/models/reach?version=2", headers=people["marta"])
        ).status_code == 404
        assert (await http.get("/models/reach", headers=people["desk"])).status_code == 403
        assert (await http.get("/models/Bad%00Name", headers=people["marta"])).status_code == 422
    async with build_worker(client, modelled):
        cid = f"three-{uuid.uuid4().hex[:6]}"
        spec = tmp_path / f"{cid}.yaml"
        spec.write_text(CAMPAIGN.format(id=cid))
        preview, handle = await lifecycle.create(client, modelled, spec, RULES)
        assert preview.models == {"model": {"name": "reach", "version": 1, "kind": "uplift"}}
        assert sum(preview.by_arm["chance"].values()) == 60
        await wait_stage(client, cid, "awaiting_approval")
        await lifecycle.decide(client, cid, "approve", by="ana")
        await wait_stage(client, cid, "tracking")
        final = await closed(client, cid, handle)
        assert final.stage == "done"
    with session_scope(db) as session:
        assert session.get(Campaign, cid).spec["models"]["model"]["version"] == 1  # type: ignore[union-attr]
        report = build(session, cid)
    arms = {a["arm"]: a for a in report["arms"]}
    assert set(arms) == {"chance", "model", "marketing"}
    assert arms["chance"]["selection"]["said"] == "60 customers at random (stable hash)"
    assert arms["model"]["selection"]["said"] == "the top 30% by model reach (version 1)"
    assert arms["model"]["selection"]["model"]["metrics"] == model["metrics"]
    assert arms["marketing"]["selection"]["said"] == 'rule: attr.plan == "gold"'
    for arm in arms.values():  # each arm keeps its own control
        assert arm["control"] == "own" and arm["control_group"]["targeted"] > 0
    pairs = report["arm_comparison"]["pairs"]
    assert {(p["a"], p["b"]) for p in pairs} == {
        ("chance", "marketing"),
        ("chance", "model"),
        ("marketing", "model"),
    }
    page = render(report)
    assert "Qini curve of model reach version 1" in page
    assert "Chosen: the top 30% by model reach (version 1)." in page
    text = await cli(modelled, "campaign", "report", cid)
    assert "Arm model: the top 30% by model reach (version 1)." in text.stdout
    assert "model reach v1 held out: Qini" in text.stdout


async def test_training_on_a_schedule_and_a_retry_keeps_one_version(
    client: Client, modelled: Settings
) -> None:
    past_campaign(modelled.db_url, n=200)
    (modelled.predictive_dir / "reach.yaml").write_text(MODEL + "retrain: 7d\n")
    assert await ensure_model_schedules(client, modelled) == ["reach"]
    described = await client.get_schedule_handle(schedule_id("reach")).describe()
    [interval] = described.schedule.spec.intervals
    assert interval.every.days == 7
    (modelled.predictive_dir / "reach.yaml").write_text(MODEL)  # no longer asks: unscheduled
    assert await ensure_model_schedules(client, modelled) == []
    with pytest.raises(RPCError):
        await client.get_schedule_handle(schedule_id("reach")).describe()
    async with build_worker(client, modelled):
        first = await client.execute_workflow(
            ModelTraining.run,
            TrainInput(name="reach", requested_by="test"),
            id=workflow_id("reach"),
            task_queue=modelled.task_queue,
        )
        second = await client.execute_workflow(
            ModelTraining.run,
            TrainInput(name="reach"),
            id=workflow_id("reach"),
            task_queue=modelled.task_queue,
        )
        assert (first.version, second.version) == (1, 2)
        assert first.summary["trained_by"] == "test"
        with pytest.raises(WorkflowFailureError) as failed:
            await client.execute_workflow(
                ModelTraining.run,
                TrainInput(name="broken"),
                id=workflow_id("broken"),
                task_queue=modelled.task_queue,
            )
    assert "no campaign gone" in str(failed.value.cause.cause)  # type: ignore[union-attr]
