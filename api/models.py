"""What the API answers: one model per response, so that the OpenAPI document is a contract
clients, the fuzzer and the console can rely on."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Problem(_Out):
    """Every 4xx and 5xx but 422: what is wrong and what to do."""

    detail: str


class Health(_Out):
    status: Literal["ok"]


class Readiness(_Out):
    status: Literal["ready", "not ready"]
    checks: dict[str, str] = Field(description="database, temporal: ok, or why not")


class JourneyEntry(_Out):
    """A journey the event could start, and whether it did (``reason`` when not)."""

    journey: str
    workflow_id: str
    started: bool
    reason: str | None = None


class JourneyDefinition(_Out):
    name: str
    description: str
    owner: str
    version: str = Field(description="a digest of the file: a running journey keeps its own")
    trigger: dict[str, Any]
    when: str | None
    steps: list[str]


class JourneyBook(_Out):
    journeys: list[JourneyDefinition]
    problems: list[str] = Field(description="files left out: file:line:column: what is wrong")


class JourneyRun(_Out):
    workflow_id: str
    journey: str | None
    customer_id: str | None
    step: str
    execution: str
    started: str | None


class JourneyRunStatus(_Out):
    """A run: each step taken (``trail``), messages and events (``journey status --json``)."""

    model_config = ConfigDict(extra="allow")

    workflow_id: str
    execution: str
    runs: int
    name: str
    customer_id: str
    step: str = ""
    trail: list[str] = Field(default_factory=list)


class CaseOpened(_Out):
    id: int
    code: str
    responsible: str | None
    due_at: str | None
    resolution_due_at: str | None
    workflow_id: str


class SignupAccepted(_Out):
    customer_id: str
    created: bool = Field(description="false when the customer existed and was updated")
    journeys: list[JourneyEntry]


class EventAccepted(_Out):
    """A response, purchase, complaint or profile change: recorded, the tier decided again."""

    customer_id: str
    tier: str | None
    tier_changed: bool
    recorded: bool | None = None
    created: bool | None = Field(None, description="a profile event for a new customer")
    journeys_told: list[str] = Field(description="running journeys told what the customer did")
    journeys: list[JourneyEntry] = Field(description="journeys this event could start")
    order: int | None = Field(None, description="the order a conversion with a value placed")
    fulfilment: str | None = Field(None, description="the order's fulfilment workflow")
    complaint: CaseOpened | None = None
    code: str | None = None
    value: float | None = None


class BouncesApplied(_Out):
    """What a forwarded bounce-mailbox message did, by kind (hard, soft, delivered,
    complaint, duplicate, unmatched, not understood)."""

    applied: dict[str, int]


class TrackAccepted(_Out):
    """A custom event (``track``): recorded once, and what it started and told."""

    customer_id: str
    event: str
    recorded: bool = Field(description="false for a messageId posted before")
    duplicate: bool
    journeys_told: list[str] = Field(description="running journeys told (or to be told)")
    journeys: list[JourneyEntry] = Field(description="journeys this event could start")


class CaseView(_Out):
    """A complaint case, with the service levels it broke (or is breaking now)."""

    id: int
    customer_id: str
    code: str
    description: str
    channel: str
    tier: str | None
    state: Literal["open", "responded", "resolved", "closed"]
    responsible: str | None
    opened_at: str | None
    due_at: str | None
    resolution_due_at: str | None
    acknowledged_at: str | None
    responded_at: str | None
    responded_by: str | None
    resolved_at: str | None
    resolved_by: str | None
    resolution: str | None
    escalated_at: str | None
    breached: list[Literal["response", "resolution"]]
    satisfaction: int | None
    closed_at: str | None
    steps: dict[str, dict[str, Any]] = Field(
        description="each step the case took (acknowledged, reminded:<level>, escalated:<level>, "
        "surveyed, closed): when, and the messages it sent with their states"
    )
    workflow_id: str
    workflow_told: bool | None = Field(None, description="after a change: its workflow woke")


class CustomerView(_Out):
    """The single customer view (``clientela customers show --json``)."""

    profile: dict[str, Any]
    decision: dict[str, Any] | None
    tier_history: list[dict[str, Any]]
    consent: dict[str, dict[str, Any]]
    messages: list[dict[str, Any]]
    history: list[dict[str, Any]]
    transactions: list[dict[str, Any]]
    complaints: list[dict[str, Any]]


class CustomerHit(_Out):
    id: str
    name: str
    email: str | None
    phone: str | None
    tier: str | None
    locale: str


class TierExplanation(_Out):
    """Why a customer is in its tier (`clientela rules explain --json`)."""

    ruleset: str
    version: str
    tier: str
    decided_by: str
    tier_rules_tried: list[dict[str, Any]]
    segments: list[str]
    offers: list[str]
    policy: dict[str, Any]
    segment_and_offer_rules: list[dict[str, Any]] | dict[str, Any]
    decided_at: str | None
    values: dict[str, Any]


class CampaignReport(_Out):
    """The campaign report; its keys are documented in docs/campaigns.md."""

    campaign: dict[str, Any]
    checks: dict[str, Any] = Field(description="sample-ratio test and control contacted")
    arms: list[dict[str, Any]]
    arm_comparison: dict[str, Any] | None = Field(
        None, description="each pair of arms by the difference of their uplifts"
    )
    breakdown: dict[str, Any]
    timeline: dict[str, Any]


class ServiceReport(_Out):
    """Service indicators; their keys are documented in docs/complaints.md."""

    generated_at: str
    since: str | None
    overall: dict[str, Any]
    by_tier: list[dict[str, Any]]
    codes: list[dict[str, Any]]
    overdue: list[dict[str, Any]]


class ArmPower(_Out):
    treated: int
    control: int
    mde_pp: float | None = Field(
        description="the smallest conversion uplift it detects (80% power, 5% level); null: "
        "too few to measure"
    )


class PreviewPower(_Out):
    """What the split can measure, against the spec's target."""

    baseline: float = Field(description="the conversion rate the detectable uplift is for")
    baseline_from: str
    target_pp: float | None
    arms: dict[str, ArmPower]
    warning: str | None = Field(description="when an arm cannot detect the target")


class CampaignPreview(_Out):
    """Whom a spec would reach and what it would cost (to contact + held out + excluded =
    audience)."""

    audience: int
    excluded: dict[str, int]
    by_tier: dict[str, int]
    by_segment: dict[str, int]
    by_channel: dict[str, int]
    by_arm: dict[str, dict[str, int]]
    by_variant: dict[str, int]
    pilot: int
    estimated_cost: float
    budget: float
    over_budget: bool
    power: PreviewPower | None = None
    models: dict[str, dict[str, Any]] | None = Field(
        None, description="per model arm: the model version that would choose it"
    )


class CampaignCreated(_Out):
    id: str
    workflow_id: str
    preview: CampaignPreview


class CampaignRow(_Out):
    id: str
    name: str
    stage: str


class TemplateRow(_Out):
    name: str
    locales: dict[str, list[str]] = Field(description="each locale and the parts it has")


class TemplateParts(_Out):
    name: str
    locale: str
    parts: dict[str, str]


class TemplatePreview(_Out):
    name: str
    locale: str
    customer_id: str
    rendered: dict[str, str]


class RulesInForce(_Out):
    ruleset: str
    version: str
    applied_at: str | None
    source: str


class RuleProblem(_Out):
    line: int
    column: int
    severity: str
    message: str


class RulesCheck(_Out):
    ok: bool = Field(description="no errors (warnings may remain)")
    ruleset: str | None
    version: str | None
    problems: list[RuleProblem]


class RulesStarted(_Out):
    workflow_id: str
    ruleset: str
    version: str


class RulesProgressOut(_Out):
    stage: str
    version: str
    run_id: int | None
    total: int
    processed: int
    changed: int
    tiers: dict[str, int]
    finished: bool


class AuditEntry(_Out):
    """One change of state: who, when, what, on what, and the detail."""

    id: int
    at: str
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]


class CustomerErased(_Out):
    """What erasing a customer removed (counts only) and how many workflows it stopped."""

    customer_id: str
    messages: int
    interactions: int
    purchases: int
    complaints: int
    workflows_stopped: int


class UserOut(_Out):
    """A user: the roles they hold and whether they may sign in."""

    username: str
    name: str
    email: str
    roles: list[str]
    active: bool
    created_at: str


class TokenOut(_Out):
    """A personal API token's record (never the token itself)."""

    id: int
    name: str
    created_at: str
    last_used_at: str | None
    revoked_at: str | None


class TokenIssued(TokenOut):
    """A new token: ``token`` is shown this once and kept only as its hash."""

    token: str


def errors(*codes: int, html: bool = False) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route: each status it can answer besides 200 and 422. On a
    route that answers a page (``html``), errors are still JSON, and said so."""
    said = {
        400: "the body could not be read (not UTF-8 form data)",
        401: "an API key is required: Authorization: Bearer <CLIENTELA_API_KEY>",
        403: "the caller's roles do not allow this (or a signature does not match)",
        404: "no such customer, campaign or case",
        409: "the case is not in a state that allows this",
        413: "the request body is larger than CLIENTELA_MAX_BODY_BYTES",
        415: "the body is not of a type this route reads",
        503: "Temporal cannot be reached; send the same request again later",
    }
    if html:
        schema = Problem.model_json_schema()
        return {
            code: {
                "description": said[code],
                "content": {"application/json": {"schema": schema}},
            }
            for code in codes
        }
    return {code: {"model": Problem, "description": said[code]} for code in codes}


class PredictiveModelOut(_Out):
    """One trained version of a predictive model (docs/models.md)."""

    name: str
    version: int
    kind: str = Field(description="propensity or uplift")
    method: str
    outcome: str
    offer: str | None
    features: list[str]
    campaigns: list[str] = Field(description="the campaigns it learnt from")
    window: list[str | None] = Field(description="their start and end")
    rows: dict[str, int]
    metrics: dict[str, Any] = Field(description="held out: auc, or qini, auuc, uplift_at_*")
    curve: list[list[float]] = Field(description="held-out Qini curve: [share, per customer]")
    trained_at: str | None
    trained_by: str
    seconds: float
