"""Creating a campaign from its spec and moving it through its workflow."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from clientela.campaigns import audience, spec
from clientela.db import session_scope
from clientela.messaging.templating import Templates
from clientela.settings import Settings
from clientela.yamlfile import read_source
from models import Campaign
from rules import service
from rules.model import Rules
from workflows import search
from workflows.campaign import (
    CampaignInput,
    CampaignStatus,
    CampaignWorkflow,
    Decision,
    PilotPlan,
    pages_queue,
    workflow_id,
)


class CampaignExists(RuntimeError):
    pass


async def create(
    client: Client, settings: Settings, spec_path: Path, rules: Rules
) -> tuple[audience.Preview, WorkflowHandle[CampaignWorkflow, CampaignStatus]]:
    """Validate and preview the spec, store it, and start its workflow awaiting approval."""
    return await create_from_source(client, settings, read_source(spec_path), spec_path, rules)


def preview_source(settings: Settings, source: str, name: str, rules: Rules) -> audience.Preview:
    """Validate a spec given as text (problems placed at ``name``:line:column) and preview
    whom it would reach; nothing is kept."""
    templates = Templates(settings.templates_dir, settings.default_locale)
    loaded = spec.loads(source, name, rules, templates)
    with session_scope(settings.db_url) as session:
        return audience.preview(session, loaded)


async def create_from_source(
    client: Client, settings: Settings, source: str, spec_path: Path | str, rules: Rules
) -> tuple[audience.Preview, WorkflowHandle[CampaignWorkflow, CampaignStatus]]:
    """``create`` for a spec given as text (``spec_path`` names it in errors and records)."""
    templates = Templates(settings.templates_dir, settings.default_locale)
    loaded = spec.loads(source, str(spec_path), rules, templates)
    s = loaded.spec
    with session_scope(settings.db_url) as session:
        if session.get(Campaign, s.id) is not None:
            raise CampaignExists(f"campaign {s.id!r} already exists; give the spec a new id")
        service.register(session, rules)
        preview = audience.preview(session, loaded)
        session.add(
            Campaign(
                id=s.id,
                name=s.name,
                objective=s.objective,
                stage="created",
                budget=s.budget,
                cost_per_message={str(k): v for k, v in s.cost_per_message.items()},
                spec={
                    "source": source,
                    "path": str(spec_path),
                    "rules_digest": rules.digest,
                    "template": s.template,
                    "variants": {v.name: v.template for v in s.variants},
                    "tracking": s.tracking,
                    "topic": s.topic,
                    "preview": preview.as_dict(),
                },
            )
        )
    try:
        handle = await client.start_workflow(
            CampaignWorkflow.run,
            CampaignInput(
                campaign_id=s.id,
                estimated_cost=preview.cost,
                budget=s.budget,
                response_window_seconds=s.response_window.total_seconds(),
                heartbeat_timeout_seconds=settings.heartbeat_timeout.total_seconds(),
                proof=bool(s.proof.emails or s.proof.phones),
                lanes=settings.campaign_lanes,
                pages_queue=pages_queue(settings.task_queue),
                start_at=s.start.astimezone(UTC).isoformat() if s.start else "",
                page_size=settings.campaign_page_size,
                pilot=PilotPlan(s.pilot.approval, s.pilot.wait.total_seconds())
                if s.pilot
                else None,
            ),
            id=workflow_id(s.id),
            task_queue=settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            static_summary=f"Campaign {s.name}",
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(search.STAGE, "campaign:awaiting_approval"),
                    SearchAttributePair(search.CAMPAIGN_ID, s.id),
                ]
            ),
        )
    except WorkflowAlreadyStartedError:
        raise CampaignExists(f"{workflow_id(s.id)} already exists") from None
    return preview, handle


def handle(client: Client, campaign_id: str) -> WorkflowHandle[CampaignWorkflow, CampaignStatus]:
    return client.get_workflow_handle_for(CampaignWorkflow.run, workflow_id(campaign_id))


async def decide(client: Client, campaign_id: str, verdict: str, by: str, reason: str = "") -> str:
    """approve or reject (awaiting approval), or go (after the pilot)."""
    h = handle(client, campaign_id)
    update = {
        "approve": CampaignWorkflow.approve,
        "reject": CampaignWorkflow.reject,
        "go": CampaignWorkflow.go,
    }[verdict]
    return await h.execute_update(update, Decision(by=by, reason=reason))


async def control(client: Client, campaign_id: str, action: str) -> None:
    signals: dict[str, Any] = {
        "pause": CampaignWorkflow.pause,
        "resume": CampaignWorkflow.resume,
        "cancel": CampaignWorkflow.cancel,
        "close": CampaignWorkflow.close,
    }
    await handle(client, campaign_id).signal(signals[action])


async def status(client: Client, campaign_id: str) -> CampaignStatus:
    return await handle(client, campaign_id).query(CampaignWorkflow.status)
