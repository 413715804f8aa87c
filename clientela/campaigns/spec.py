"""Campaign specs: YAML a marketer writes, validated with file, line and field.

``campaigns/spring-loyalty.yaml`` is a documented example; ``docs/campaigns.md`` lists keys.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from clientela.messaging import topics
from clientela.messaging.templating import Templates
from clientela.settings import Duration
from clientela.yamlfile import Positions, Problem, SpecError, load_model, read_source
from models.schemas import check_email
from rules.language import ConditionError, Parsed, parse
from rules.model import Rules

SLUG = r"^[a-z0-9][a-z0-9-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Kpi(_Strict):
    metric: Literal["response_rate", "conversion_rate", "revenue_per_customer"]
    uplift: float = Field(description="the uplift that would make it a success")


class Audience(_Strict):
    tiers: list[str] = Field(default_factory=list, description="any of; empty: every tier")
    segments: list[str] = Field(default_factory=list, description="any of; empty: no filter")
    when: str | None = Field(None, description="a rule condition over customer fields")


class _HowMany(_Strict):
    share: float | None = Field(
        None, gt=0, le=1, description="of the audience not taken by an arm above"
    )
    count: int | None = Field(None, ge=1, description="customers, of those not taken above")

    @model_validator(mode="after")
    def _one_size(self) -> _HowMany:
        if (self.share is None) == (self.count is None):
            raise ValueError("give either `share` or `count`")
        return self


class RandomPick(_HowMany):
    """Customers drawn by a stable hash of the campaign and the customer."""


class ModelPick(_HowMany):
    """The customers a trained model scores highest (docs/models.md)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$", description="predictive/NAME.yaml")
    version: int | None = Field(None, ge=1, description="a version; default: the latest")


class Arm(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    when: str | None = Field(None, description="how this arm selects; none: the rest")
    random: RandomPick | None = Field(
        None, description="selects at random (stable hash) instead of by a rule"
    )
    model: ModelPick | None = Field(None, description="selects by a model's score")
    description: str = ""

    @model_validator(mode="after")
    def _one_way(self) -> Arm:
        ways = [w for w in ("when", "random", "model") if getattr(self, w) is not None]
        if len(ways) > 1:
            both = " and ".join(f"`{w}`" for w in ways)
            raise ValueError(f"an arm selects one way (`when`, `random` or `model`), not {both}")
        return self

    @property
    def takes_the_rest(self) -> bool:
        return self.when is None and self.random is None and self.model is None

    @property
    def ranked(self) -> bool:
        """Selects a number or a share of what the arms above left, in an order of its own
        (a model's score, or a random draw for a count): the whole audience is looked at
        before anyone is placed."""
        return self.model is not None or (self.random is not None and self.random.count is not None)


class Variant(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    template: str


class Control(_Strict):
    share: float = Field(0.1, ge=0, lt=1, description="held out, never contacted")


class Pilot(_Strict):
    share: float = Field(gt=0, lt=1, description="of the treated, sent first")
    max_failure_rate: float = Field(0.05, ge=0, le=1, description="go/no-go threshold")
    approval: Literal["auto", "manual"] = "auto"
    wait: Duration = Field(timedelta(0), description="for bounces and reports before the check")


class Proof(_Strict):
    emails: list[str] = Field(default_factory=list)
    phones: list[str] = Field(default_factory=list)

    @field_validator("emails")
    @classmethod
    def _emails(cls, v: list[str]) -> list[str]:
        for e in v:
            check_email(e)  # (kept as written: proof addresses are our own people's)
        return v


class CampaignSpec(_Strict):
    id: str = Field(pattern=SLUG)
    name: str = Field(min_length=1, max_length=200)
    objective: str = ""
    owner: str = Field(min_length=1)
    target_kpi: Kpi
    stakeholders: list[str] = Field(
        default_factory=list, description="emails of who gets the report"
    )

    @field_validator("stakeholders")
    @classmethod
    def _stakeholders(cls, v: list[str]) -> list[str]:
        for e in v:
            check_email(e)
        return v

    budget: float = Field(ge=0)
    cost_per_message: dict[Literal["email", "sms"], float]
    audience: Audience = Field(default_factory=Audience)
    channel: Literal["preferred", "email", "sms"] = "preferred"
    offer: str | None = None
    template: str
    variants: list[Variant] = Field(default_factory=list)
    arms: list[Arm] = Field(default_factory=lambda: [Arm(name="main")])
    control: Control = Field(default_factory=Control)
    start: AwareDatetime | None = Field(
        None, description="when to build the list and send, after approval (with a time zone)"
    )
    response_window: Duration = timedelta(days=14)
    pilot: Pilot | None = None
    proof: Proof = Field(default_factory=Proof)
    tracking: bool = Field(
        True, description="count clicks and opens of this campaign's emails (docs/tracking.md)"
    )
    topic: str | None = Field(
        None, description="its subscription topic (templates/_topics.yaml): opted-out left out"
    )

    @model_validator(mode="after")
    def _names_unique(self) -> CampaignSpec:
        for kind, names in (
            ("arm", [a.name for a in self.arms]),
            ("variant", [v.name for v in self.variants]),
        ):
            dupes = {n for n in names if names.count(n) > 1}
            if dupes:
                raise ValueError(f"{kind} names must be unique: {', '.join(sorted(dupes))}")
        return self


class Spec:
    """A valid campaign spec, its conditions parsed against the rules' fields."""

    def __init__(
        self,
        spec: CampaignSpec,
        path: str,
        conditions: dict[str, Parsed],
        positions: Positions | None = None,
    ) -> None:
        self.spec, self.path, self.conditions = spec, path, conditions
        self.positions = positions or Positions()

    def problem(self, loc: tuple[Any, ...], message: str) -> SpecError:
        """A problem found later (a model not trained, say), placed in the spec."""
        line, col = self.positions.at(loc)
        return SpecError([Problem(self.path, line, col, f"{'.'.join(map(str, loc))}: {message}")])


def load(path: Path, rules: Rules, templates: Templates) -> Spec:
    return loads(read_source(path), str(path), rules, templates)


def loads(source: str, path: str, rules: Rules, templates: Templates) -> Spec:
    spec, positions = load_model(source, path, CampaignSpec, "docs/campaigns.md")
    problems: list[Problem] = []

    def problem(loc: tuple[Any, ...], message: str) -> None:
        line, col = positions.at(loc)
        problems.append(Problem(path, line, col, f"{'.'.join(map(str, loc))}: {message}"))

    conditions: dict[str, Parsed] = {}

    def condition(loc: tuple[Any, ...], text: str | None, key: str) -> None:
        if text is None:
            return
        try:
            conditions[key] = parse(text, rules.kinds)
        except ConditionError as exc:
            line, col = _position(positions, loc, exc)
            problems.append(Problem(path, line, col, f"{'.'.join(map(str, loc))}: {exc.message}"))

    levels = rules.spec.tiers.levels
    for i, tier in enumerate(spec.audience.tiers):
        if tier not in levels:
            problem(
                ("audience", "tiers", i), f"no tier {tier!r} in rule set {rules.name} ({levels})"
            )
    segments = [s.name for s in rules.spec.segments]
    for i, segment in enumerate(spec.audience.segments):
        if segment not in segments:
            problem(("audience", "segments", i), f"no segment {segment!r} in rule set {rules.name}")
    if spec.offer is not None and spec.offer not in {o.name for o in rules.spec.offers}:
        problem(("offer",), f"no offer {spec.offer!r} in rule set {rules.name}")
    condition(("audience", "when"), spec.audience.when, "audience")
    for i, arm in enumerate(spec.arms):
        condition(("arms", i, "when"), arm.when, f"arm:{arm.name}")
    if sum(1 for a in spec.arms if a.takes_the_rest) > 1:
        problem(
            ("arms",), "only one arm may go without `when`, `random` or `model` (it takes the rest)"
        )
    channels = ["email", "sms"] if spec.channel == "preferred" else [spec.channel]
    used = [(("template",), spec.template)] + [
        (("variants", i, "template"), v.template) for i, v in enumerate(spec.variants)
    ]
    for loc, name in used:
        for channel in channels:
            part = "body.html" if channel == "email" else "sms.txt"
            if not templates.has(name, part):
                problem(loc, f"template {name!r} has no {part} (needed for {channel})")
    if spec.topic is not None:
        known = topics.load(templates.directory).topics
        if spec.topic not in known:
            listed = ", ".join(sorted(known)) or "none"
            problem(("topic",), f"no topic {spec.topic!r} in templates/_topics.yaml ({listed})")
    for channel in channels:
        if channel not in spec.cost_per_message:
            problem(("cost_per_message",), f"no cost per message for {channel}")
    if problems:
        raise SpecError(problems)
    return Spec(spec, path, conditions, positions)


def _position(positions: Positions, loc: tuple[Any, ...], exc: ConditionError) -> tuple[int, int]:
    line, col = positions.at(loc)
    offset = 1 if positions.styles.get(loc) in ("'", '"') else 0
    return line + exc.line - 1, (col + offset + exc.column - 1 if exc.line == 1 else exc.column)
