"""Campaign activities: build the lead list, send it page by page, record stages."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import delete
from sqlmodel import col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.contracts import MessageRequest, SendMessagesInput
from activities.messaging import MessagingActivities
from clientela.campaigns import audience
from clientela.campaigns.spec import loads as load_spec
from clientela.db import session_scope
from clientela.timeutil import utcnow
from models import Campaign, CampaignMember, Customer, RuleVersion
from rules.service import rules_of


@dataclass
class CampaignRef:
    campaign_id: str


@dataclass
class Prepared:
    treated: int
    control: int
    excluded: int


@dataclass
class PageInput:
    campaign_id: str
    after_member: int
    page_size: int = 500


@dataclass
class PageResult:
    last_member: int
    sent: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    done: bool = False


@dataclass
class StageInput:
    campaign_id: str
    stage: str
    note: str = ""
    window_days: float | None = None


class CampaignActivities:
    def __init__(self, messaging: MessagingActivities) -> None:
        self.messaging = messaging
        self.settings = messaging.settings

    @activity.defn(name="campaign_stage")
    def stage(self, params: StageInput) -> None:
        """Record where the campaign stands (and who decided what) on its row."""
        with session_scope(self.settings.db_url) as session:
            campaign = session.get(Campaign, params.campaign_id)
            if campaign is None:
                raise ApplicationError(f"no campaign {params.campaign_id!r}", non_retryable=True)
            campaign.stage = params.stage
            if params.note:
                campaign.spec = {
                    **campaign.spec,
                    "history": [*campaign.spec.get("history", []), params.note],
                }
            if params.window_days is not None:
                campaign.window_start = utcnow()
                campaign.window_end = campaign.window_start + timedelta(days=params.window_days)
            session.add(campaign)

    @activity.defn(name="campaign_prepare")
    def prepare(self, ref: CampaignRef) -> Prepared:
        """The lead list, written whole: arms, control group, exclusions with reasons."""
        with session_scope(self.settings.db_url) as session:
            campaign = session.get(Campaign, ref.campaign_id)
            if campaign is None:
                raise ApplicationError(f"no campaign {ref.campaign_id!r}", non_retryable=True)
            version = session.exec(
                select(RuleVersion).where(RuleVersion.digest == campaign.spec["rules_digest"])
            ).one()
            spec = load_spec(
                campaign.spec["source"],
                campaign.spec["path"],
                rules_of(version),
                self.messaging.templates,
            )
            members = audience.select_members(session, spec)
            # A retried preparation starts again from nothing: the list is one transaction.
            session.execute(
                delete(CampaignMember).where(col(CampaignMember.campaign_id) == ref.campaign_id)
            )
            for m in members:
                session.add(
                    CampaignMember(
                        campaign_id=ref.campaign_id,
                        customer_id=m.customer_pk,
                        arm=m.arm,
                        group=m.group,
                        channel=m.channel,
                        excluded=m.excluded,
                    )
                )
            return Prepared(
                treated=sum(1 for m in members if m.group == "treated" and not m.excluded),
                control=sum(1 for m in members if m.group == "control"),
                excluded=sum(1 for m in members if m.excluded),
            )

    @activity.defn(name="campaign_send_page")
    async def send_page(self, page: PageInput) -> PageResult:
        """Send the next page of treated members through the ledger (at most once each)."""
        requests, last = await asyncio.to_thread(self._page, page)
        if not requests:
            return PageResult(last_member=page.after_member, done=True)
        result = await self.messaging.deliver_all(
            SendMessagesInput(messages=requests, detail=False)
        )
        return PageResult(last_member=last, sent=len(requests), counts=result.counts)

    def _page(self, page: PageInput) -> tuple[list[MessageRequest], int]:
        with session_scope(self.settings.db_url) as session:
            campaign = session.get(Campaign, page.campaign_id)
            assert campaign is not None
            rows = session.exec(
                select(CampaignMember, Customer.external_id)
                .join(Customer, col(Customer.id) == col(CampaignMember.customer_id))
                .where(
                    CampaignMember.campaign_id == page.campaign_id,
                    CampaignMember.group == "treated",
                    CampaignMember.excluded == "",
                    col(CampaignMember.id) > page.after_member,
                )
                .order_by(col(CampaignMember.id))
                .limit(page.page_size)
            ).all()
            template = campaign.spec["template"]
            requests = [
                MessageRequest(
                    key=f"campaign:{page.campaign_id}:{external_id}:message",
                    customer_id=external_id,
                    template=template,
                    channel=member.channel or None,
                    campaign=page.campaign_id,
                )
                for member, external_id in rows
            ]
            last = rows[-1][0].id if rows else page.after_member
            return requests, last or page.after_member
