"""Home: what is running, what waits for a decision, today's messages, cases due."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from sqlmodel import Session, col, func, select

from clientela.service import cases
from console.web import CAMPAIGN_READERS, DESK, Signed, in_thread, page, settings_of
from models import Campaign, Complaint, Message

router = APIRouter()

#: Stages in which a campaign is under way (not yet decided, or finished).
RUNNING = (
    "preparing",
    "proof",
    "pilot",
    "pilot_review",
    "waiting",
    "sending",
    "tracking",
    "reporting",
)


def summary(session: Session) -> dict[str, Any]:
    midnight = datetime.combine(datetime.now(UTC).date(), time(), tzinfo=UTC)
    campaigns = session.exec(
        select(Campaign)
        .where(col(Campaign.stage).in_((*RUNNING, "awaiting_approval")))
        .order_by(col(Campaign.created_at).desc())
        .limit(50)
    ).all()
    progress = dict(
        session.exec(
            select(Message.campaign, func.count())
            .where(col(Message.campaign).in_([c.id for c in campaigns]))
            .where(col(Message.state).in_(("sent", "delivered", "failed", "suppressed")))
            .group_by(Message.campaign)
        ).all()
    )
    planned = dict(
        session.exec(
            select(Message.campaign, func.count())
            .where(col(Message.campaign).in_([c.id for c in campaigns]))
            .group_by(Message.campaign)
        ).all()
    )
    today: dict[str, dict[str, int]] = {}
    for channel, state, n in session.exec(
        select(Message.channel, Message.state, func.count())
        .where(col(Message.created_at) >= midnight)
        .group_by(Message.channel, Message.state)
    ).all():
        today.setdefault(channel, {})[state] = n
    due = session.exec(
        select(Complaint)
        .where(col(Complaint.resolved_at).is_(None))
        .order_by(col(Complaint.due_at))
        .limit(20)
    ).all()
    now = datetime.now(UTC)
    return {
        "running": [
            {
                "id": c.id,
                "name": c.name,
                "stage": c.stage,
                "done": progress.get(c.id, 0),
                "planned": planned.get(c.id, 0),
            }
            for c in campaigns
            if c.stage != "awaiting_approval"
        ],
        "awaiting": [c for c in campaigns if c.stage == "awaiting_approval"],
        "today": today,
        "due": [cases.view(c, "", now) for c in due],
    }


@router.get("", response_class=HTMLResponse)
async def home(viewer: Signed) -> HTMLResponse:
    settings = settings_of(viewer.request)  # type: ignore[arg-type]
    data = await in_thread(settings, summary)
    return page(
        viewer,
        "home.html",
        **data,
        show_campaigns=viewer.can(*CAMPAIGN_READERS),
        show_desk=viewer.can(*DESK),
    )
