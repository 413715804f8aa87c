"""Campaign activities: build the lead list, proofs, send it wave by wave, check the pilot."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.contracts import DEFERRED, MessageRequest, SendMessagesInput
from activities.messaging import MessagingActivities
from clientela.campaigns import audience, html, report
from clientela.campaigns.spec import Spec
from clientela.campaigns.spec import loads as load_spec
from clientela.customers.records import internal_recipient
from clientela.db import refresh_statistics, session_scope
from clientela.messaging.links import report_url
from clientela.timeutil import utcnow
from models import Campaign, CampaignMember, Customer, Message, RuleVersion
from models.ledger import MessageState
from rules.service import rules_of

_MEMBER = CampaignMember.__table__  # type: ignore[attr-defined]
_CUSTOMER = Customer.__table__  # type: ignore[attr-defined]

#: Waves of a campaign's sending: the pilot share, everyone else, and deferred messages.
WAVES = ("pilot", "main", "deferred")


@dataclass
class CampaignRef:
    campaign_id: str


@dataclass
class Prepared:
    treated: int  # to be contacted
    control: int  # held out (including any excluded)
    excluded: int  # neither: unreachable, capped or a duplicate address
    pilot: int = 0  # of the treated, sent first


@dataclass
class PageInput:
    campaign_id: str
    after_member: int  # member id (pilot, main) or ledger row id (deferred) already done
    page_size: int = 500
    wave: str = "main"
    lane: int = 0  # this page takes ids that are lane modulo lanes
    lanes: int = 1


@dataclass
class PageResult:
    last_member: int
    sent: int = 0  # messages handled in this page (whatever their outcome)
    counts: dict[str, int] = field(default_factory=dict)
    done: bool = False
    retry_at: str = ""  # the earliest time a deferred message of this page may go


@dataclass
class StageInput:
    campaign_id: str
    stage: str
    note: str = ""
    window_days: float | None = None


@dataclass
class PilotCheck:
    handed: int  # pilot messages handed to a provider or refused by it
    failed: int
    failure_rate: float
    threshold: float
    passed: bool


def proof_recipient_id(address: str, locale: str) -> str:
    return f"proof:{locale}:{address.lower()}"


@dataclass
class Reported:
    path: str  # the HTML page
    emailed: dict[str, int] = field(default_factory=dict)  # stakeholder messages by state


log = logging.getLogger(__name__)


class CampaignActivities:
    def __init__(self, messaging: MessagingActivities) -> None:
        self.messaging = messaging
        self.settings = messaging.settings

    def _campaign(self, session: Session, campaign_id: str) -> Campaign:
        campaign = session.get(Campaign, campaign_id)
        if campaign is None:
            raise ApplicationError(f"no campaign {campaign_id!r}", non_retryable=True)
        return campaign

    def _spec(self, session: Session, campaign: Campaign) -> Spec:
        version = session.exec(
            select(RuleVersion).where(RuleVersion.digest == campaign.spec["rules_digest"])
        ).one()
        return load_spec(
            campaign.spec["source"],
            campaign.spec["path"],
            rules_of(version),
            self.messaging.templates,
        )

    @activity.defn(name="campaign_stage")
    def stage(self, params: StageInput) -> None:
        """Record where the campaign stands (and who decided what) on its row."""
        with session_scope(self.settings.db_url) as session:
            campaign = self._campaign(session, params.campaign_id)
            campaign.stage = params.stage
            if params.note:
                campaign.spec = {
                    **campaign.spec,
                    "history": [*campaign.spec.get("history", []), params.note],
                }
            # Responses count from the first message out until the window after the last.
            if params.stage in ("pilot", "sending") and campaign.window_start is None:
                campaign.window_start = utcnow()
            if params.window_days is not None:
                campaign.window_start = campaign.window_start or utcnow()
                campaign.window_end = utcnow() + timedelta(days=params.window_days)
            session.add(campaign)
            if params.stage == "tracking":  # the messages are written: reports read them now
                refresh_statistics(session, "message")

    @activity.defn(name="campaign_prepare")
    def prepare(self, ref: CampaignRef) -> Prepared:
        """The lead list, written whole: arms, control group, exclusions with reasons."""
        with session_scope(self.settings.db_url) as session:
            campaign = self._campaign(session, ref.campaign_id)
            # A retried preparation starts again from nothing: the list is one transaction.
            listed = audience.build(session, ref.campaign_id, self._spec(session, campaign))
            refresh_statistics(session, "campaign_member")
            log.info(
                "lead list built: %d to contact, %d held out, %d excluded",
                listed.treated,
                listed.control,
                sum(listed.excluded.values()),
                extra={"campaign_id": ref.campaign_id},
            )
            return Prepared(
                treated=listed.treated,
                control=listed.control,
                excluded=sum(listed.excluded.values()),
                pilot=listed.pilot,
            )

    @activity.defn(name="campaign_proof")
    async def proof(self, ref: CampaignRef) -> dict[str, int]:
        """Every template (and variant) in every locale to the internal proof list, once."""
        requests = await asyncio.to_thread(self._proof_requests, ref.campaign_id)
        if not requests:
            return {}
        result = await self.messaging.deliver_all(
            SendMessagesInput(messages=requests, detail=False)
        )
        return result.counts

    def _proof_requests(self, campaign_id: str) -> list[MessageRequest]:
        templates = self.messaging.templates
        with session_scope(self.settings.db_url) as session:
            campaign = self._campaign(session, campaign_id)
            s = self._spec(session, campaign).spec
            # With variants every treated customer gets one of them; without, the template.
            used = [(v.name, v.template) for v in s.variants] or [("", s.template)]
            channels = ["email", "sms"] if s.channel == "preferred" else [s.channel]
            requests = []
            for channel in channels:
                addresses = s.proof.emails if channel == "email" else s.proof.phones
                part = "body.html" if channel == "email" else "sms.txt"
                for variant, template in used:
                    for locale in templates.locales(template, part):
                        for address in addresses:
                            recipient = internal_recipient(
                                session,
                                external_id=proof_recipient_id(address, locale),
                                channel=channel,
                                address=address,
                                locale=locale,
                                name="Proof",
                            )
                            requests.append(
                                MessageRequest(
                                    key=f"campaign:{campaign_id}:proof:{variant or '-'}:"
                                    f"{template}:{locale}:{channel}:{address.lower()}",
                                    customer_id=recipient,
                                    template=template,
                                    channel=channel,
                                    campaign=campaign_id,
                                    context={"proof": True, "variant": variant},
                                    tracking=False,  # the team's own check: no clicks
                                )
                            )
            return requests

    @activity.defn(name="campaign_send_page")
    async def send_page(self, page: PageInput) -> PageResult:
        """Send the next page of a wave through the ledger (each message at most once)."""
        requests, last = await asyncio.to_thread(self._page, page)
        if not requests:
            return PageResult(last_member=page.after_member, done=True)
        result = await self.messaging.deliver_all(SendMessagesInput(messages=requests, detail=True))
        log.info(
            "page sent: lane %d of %d, %d messages (%s)",
            page.lane + 1,
            page.lanes,
            len(requests),
            ", ".join(f"{n} {state}" for state, n in sorted(result.counts.items())),
            extra={"campaign_id": page.campaign_id},
        )
        deferred = [o.retry_at for o in result.outcomes if o.state == DEFERRED]
        return PageResult(
            last_member=last,
            sent=len(requests),
            counts=result.counts,
            retry_at=min(deferred) if deferred else "",
        )

    def _page(self, page: PageInput) -> tuple[list[MessageRequest], int]:
        with session_scope(self.settings.db_url) as session:
            campaign = self._campaign(session, page.campaign_id)
            if page.wave == "deferred":
                return self._deferred_page(session, page, campaign.spec)
            templates: dict[str, str] = campaign.spec.get("variants", {})
            # Rows of the tables, not ORM objects: a page is only read, and building a
            # thousand members as objects was 5% of a sending worker's CPU (bench.campaign).
            member, customer = _MEMBER.c, _CUSTOMER.c
            rows = session.execute(
                sa_select(
                    member.id, member.variant, member.channel, member.arm, customer.external_id
                )
                .join_from(_MEMBER, _CUSTOMER, customer.id == member.customer_id)
                .where(
                    member.campaign_id == page.campaign_id,
                    member.group == "treated",
                    member.excluded == "",
                    member.pilot == (page.wave == "pilot"),
                    member.id > page.after_member,
                    member.id % page.lanes == page.lane,
                )
                .order_by(member.id)
                .limit(page.page_size)
            ).all()
            tracking, topic = bool(campaign.spec.get("tracking", True)), campaign.spec.get("topic")
            requests = [
                MessageRequest(
                    key=member_key(page.campaign_id, external_id),
                    customer_id=external_id,
                    template=templates.get(variant, campaign.spec["template"]),
                    channel=channel or None,
                    campaign=page.campaign_id,
                    context={"variant": variant, "arm": arm},
                    tracking=tracking,
                    topic=topic,
                )
                for _, variant, channel, arm, external_id in rows
            ]
            last = rows[-1][0] if rows else page.after_member
            return requests, last or page.after_member

    @staticmethod
    def _deferred_page(
        session: Session, page: PageInput, spec: dict[str, Any]
    ) -> tuple[list[MessageRequest], int]:
        """Messages of the campaign still queued (deferred by quiet hours), by ledger row."""
        rows = session.exec(
            select(Message, Customer.external_id)
            .join(Customer, col(Customer.id) == col(Message.customer_id))
            .where(
                Message.campaign == page.campaign_id,
                Message.state == MessageState.queued,
                col(Message.id) > page.after_member,
                col(Message.id) % page.lanes == page.lane,
            )
            .order_by(col(Message.id))
            .limit(page.page_size)
        ).all()
        requests = [
            MessageRequest(
                key=m.key,
                customer_id=external_id,
                template=m.template,
                channel=m.channel or None,
                campaign=page.campaign_id,
                tracking=bool(spec.get("tracking", True)),
                topic=spec.get("topic"),
            )
            for m, external_id in rows
        ]
        return requests, (rows[-1][0].id or page.after_member) if rows else page.after_member

    @activity.defn(name="campaign_report")
    async def report(self, ref: CampaignRef) -> Reported:
        """Write the report page and email it to the campaign's stakeholders (once each)."""
        path, requests = await asyncio.to_thread(self._report, ref.campaign_id)
        if not requests:
            return Reported(str(path))
        result = await self.messaging.deliver_all(
            SendMessagesInput(messages=requests, detail=False)
        )
        return Reported(str(path), result.counts)

    def _report(self, campaign_id: str) -> tuple[Path, list[MessageRequest]]:
        with session_scope(self.settings.db_url) as session:
            data = report.build(session, campaign_id)
            campaign = self._campaign(session, campaign_id)
            stakeholders = self._spec(session, campaign).spec.stakeholders
            path = self.settings.home / "reports" / f"{campaign_id}.html"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(html.render(data), encoding="utf-8")
            tmp.replace(path)
            locale = self.settings.default_locale
            context = {
                "report": data,
                "report_url": report_url(self.settings, campaign_id),
                "pct": lambda v: "-" if v is None else f"{v * 100:.2f}%",
                "uplift": html.uplift_text,
            }
            requests = [
                MessageRequest(
                    key=f"campaign:{campaign_id}:report:{address.lower()}",
                    customer_id=internal_recipient(
                        session,
                        external_id=f"staff:{address.lower()}",
                        channel="email",
                        address=address,
                        locale=locale,
                        name="Team",
                    ),
                    template="campaign_report",
                    channel="email",
                    campaign=campaign_id,
                    context=context,
                    tracking=False,  # the team's own mail
                )
                for address in stakeholders
            ]
            return path, requests

    @activity.defn(name="campaign_pilot_check")
    def pilot_check(self, params: CampaignRef) -> PilotCheck:
        """How the pilot wave went: the share of its messages that failed or bounced."""
        with session_scope(self.settings.db_url) as session:
            campaign = self._campaign(session, params.campaign_id)
            pilot = self._spec(session, campaign).spec.pilot
            threshold = pilot.max_failure_rate if pilot else 1.0
            counts: dict[str, Any] = dict(
                session.exec(
                    select(Message.state, func.count(col(Message.id)))
                    .join(
                        CampaignMember,
                        col(CampaignMember.customer_id) == col(Message.customer_id),
                    )
                    .where(
                        Message.campaign == params.campaign_id,
                        CampaignMember.campaign_id == params.campaign_id,
                        col(CampaignMember.pilot).is_(True),
                        col(Message.key).like(f"campaign:{params.campaign_id}:%:message"),
                    )
                    .group_by(col(Message.state))
                ).all()
            )
        failed = int(counts.get(MessageState.failed, 0)) + int(counts.get(MessageState.bounced, 0))
        handed = (
            failed
            + int(counts.get(MessageState.sent, 0))
            + int(counts.get(MessageState.delivered, 0))
        )
        rate = failed / handed if handed else 0.0
        return PilotCheck(handed, failed, rate, threshold, handed > 0 and rate <= threshold)


def member_key(campaign_id: str, external_id: str) -> str:
    """The idempotency key of a member's campaign message: one per customer and campaign."""
    return f"campaign:{campaign_id}:{external_id}:message"
