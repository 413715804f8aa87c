"""Activities of a complaint case: read its clock, prepare each step's messages, record steps.

What a step sends is decided from the case as it is in the database at that moment: a
reminder for an answer that has been given meanwhile prepares nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.contracts import MessageRequest
from clientela.customers.records import internal_recipient
from clientela.db import session_scope
from clientela.messaging.links import survey_url
from clientela.service import cases as complaints
from clientela.service.cases import ACKNOWLEDGED, SURVEYED
from clientela.settings import Settings
from clientela.timeutil import as_utc
from models import Complaint, Customer


@dataclass
class CaseClock:
    """What the case workflow needs to know of its case now (times in ISO 8601 UTC)."""

    complaint_id: int
    uid: str
    customer_id: str
    code: str
    state: str
    opened_at: str
    due_at: str | None
    resolution_due_at: str | None
    remind_before_s: float
    responded: bool
    resolved: bool
    rated: bool
    survey_wait_s: float
    steps: list[str] = field(default_factory=list)


@dataclass
class CaseStep:
    complaint_id: int
    step: str
    detail: dict[str, Any] = field(default_factory=dict)


class ComplaintActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn(name="complaint_clock")
    def clock(self, complaint_id: int) -> CaseClock:
        with session_scope(self.settings.db_url) as session:
            row = self._case(session, complaint_id)
            customer = session.get(Customer, row.customer_id)
            assert customer is not None
            return self._clock(row, customer.external_id)

    @activity.defn(name="complaint_messages")
    def messages(self, step: CaseStep) -> list[MessageRequest]:
        """The messages of a step, or none when the case no longer needs it."""
        with session_scope(self.settings.db_url) as session:
            row = self._case(session, step.complaint_id)
            customer = session.get(Customer, row.customer_id)
            assert customer is not None and row.id is not None
            case = complaints.view(row, customer.external_id)
            context: dict[str, Any] = {"complaint": case}
            key = f"complaint:{row.id}-{row.uid}:{step.step}"
            if step.step == ACKNOWLEDGED:
                if row.due_at is not None:
                    span = as_utc(row.due_at) - as_utc(row.opened_at)  # type: ignore[operator]
                    context["answer_within_hours"] = max(1, round(span.total_seconds() / 3600))
                return [self._to_customer(key, row, customer, "complaint_received", context)]
            if step.step == SURVEYED:
                if row.satisfaction is not None:
                    return []
                context["survey_url"] = survey_url(self.settings, row.id, row.uid)
                return [self._to_customer(key, row, customer, "complaint_survey", context)]
            phase = step.step.split(":")[1]
            if (phase == "response" and row.responded_at is not None) or row.resolved_at:
                return []  # answered (or resolved) meanwhile: nothing to remind or escalate
            context["phase"] = phase
            context["case_url"] = f"{self.settings.recipient_base_url}/complaints/{row.id}"
            desk = row.responsible_email or self.settings.service_desk
            if step.step.startswith("reminded:"):
                return [self._to_staff(session, key, desk, "complaint_reminder", context)]
            lead = row.escalate_to or self.settings.service_escalation
            return [
                self._to_staff(session, f"{key}:{who}", address, "complaint_escalation", context)
                for who, address in (("lead", lead), ("desk", desk))
            ]

    @activity.defn(name="complaint_mark")
    def mark(self, step: CaseStep) -> CaseClock:
        """Record that the case took a step (once); the case's clock after it."""
        with session_scope(self.settings.db_url) as session:
            row = complaints.mark(session, step.complaint_id, step.step, step.detail)
            customer = session.get(Customer, row.customer_id)
            assert customer is not None
            return self._clock(row, customer.external_id)

    # -----------------------------------------------------------------------------------

    @staticmethod
    def _case(session: Any, complaint_id: int) -> Complaint:
        try:
            return complaints.get_case(session, complaint_id)
        except complaints.UnknownComplaint as exc:
            raise ApplicationError(str(exc), non_retryable=True) from None

    def _clock(self, row: Complaint, customer_id: str) -> CaseClock:
        assert row.id is not None
        return CaseClock(
            complaint_id=row.id,
            uid=row.uid,
            customer_id=customer_id,
            code=row.code,
            state=row.state,
            opened_at=complaints.iso(row.opened_at) or "",
            due_at=complaints.iso(row.due_at),
            resolution_due_at=complaints.iso(row.resolution_due_at),
            remind_before_s=row.remind_before_s,
            responded=row.responded_at is not None,
            resolved=row.resolved_at is not None,
            rated=row.satisfaction is not None,
            survey_wait_s=self.settings.satisfaction_wait.total_seconds()
            * self.settings.journey_time_scale,
            steps=sorted(row.steps),
        )

    @staticmethod
    def _to_customer(
        key: str, row: Complaint, customer: Customer, template: str, context: dict[str, Any]
    ) -> MessageRequest:
        """A service message to the customer: on the channel they complained through when
        we send on it, otherwise on their preferred one."""
        return MessageRequest(
            key=key,
            customer_id=customer.external_id,
            template=template,
            channel=row.channel if row.channel in ("email", "sms") else None,
            context=context,
            service=True,
        )

    def _to_staff(
        self, session: Any, key: str, address: str, template: str, context: dict[str, Any]
    ) -> MessageRequest:
        name, email = parseaddr(address)
        return MessageRequest(
            key=key,
            customer_id=internal_recipient(
                session,
                external_id=f"staff:{email.lower()}",
                channel="email",
                address=email,
                locale=self.settings.default_locale,
                name=name or "Team",
            ),
            template=template,
            channel="email",
            context=context,
            tracking=False,  # the team's own mail
        )
