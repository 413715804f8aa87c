"""Rule files: YAML read with positions, validated, conditions parsed and type-checked.

A rule file looks like ``rules/crm.yaml``; ``docs/rules.md`` explains every key. Errors name
the file, line and column and say what to do.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clientela.yamlfile import Positions, Problem, SpecError, load_model, read_source
from rules.features import FEATURES
from rules.language import ConditionError, Kind, Parsed, parse

NAME = r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$"
#: An e-mail address, bare or with a display name: "Ana <ana@example.com>".
ADDRESS = r"^(?:[^<>@]*<[^<>@\s]+@[^<>@\s]+\.[^<>@\s]+>|[^<>@\s]+@[^<>@\s]+\.[^<>@\s]+)$"


class RuleFileError(SpecError):
    """Problems that make a rule file unusable; each names file, line and column."""


# --- the schema -----------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Rule(_Strict):
    name: str = Field(pattern=NAME)
    owner: str = Field(min_length=1, description="who answers for this rule")
    when: str = Field(min_length=1)
    description: str = ""


class TierRule(_Rule):
    priority: int = Field(description="higher is tried first")
    tier: str


class SegmentRule(_Rule):
    pass


class OfferRule(_Rule):
    """``when``: profitable for us and convenient for them."""

    priority: int = Field(description="higher is offered first")
    margin: float | None = Field(
        None,
        ge=0,
        description="what one acceptance is worth to us: with a propensity model for the "
        "offer (docs/models.md), offers are ordered by propensity times margin",
    )


class Ranking(_Strict):
    """A flag for the customers at the top of the whole base by a number (Def. 3 and 4)."""

    by: str = Field(min_length=1)
    top: str | int = Field(description="a count (500) or a share of the base ('10%')")
    owner: str = Field(min_length=1)
    description: str = ""

    @field_validator("top")
    @classmethod
    def _top(cls, v: str | int) -> str | int:
        if isinstance(v, int):
            if v < 1:
                raise ValueError("top must be at least 1")
            return v
        if not re.fullmatch(r"\d+(\.\d+)?%", v.strip()) or not 0 < float(v.strip()[:-1]) <= 100:
            raise ValueError("top is a count (500) or a percentage ('10%')")
        return v.strip()


class Caps(_Strict):
    day: int | None = Field(None, ge=0)
    week: int | None = Field(None, ge=0)
    month: int | None = Field(None, ge=0)


class ServiceLevel(_Strict):
    responsible: str = Field("customer service", min_length=1, description="who answers")
    responsible_email: str | None = Field(
        None, pattern=ADDRESS, description="reminders go here; default CLIENTELA_SERVICE_DESK"
    )
    escalate_to: str | None = Field(
        None, pattern=ADDRESS, description="breaches go here; default CLIENTELA_SERVICE_ESCALATION"
    )
    complaint_response_hours: float = Field(gt=0)
    complaint_resolution_hours: float | None = Field(None, gt=0)
    remind_before_hours: float | None = Field(
        None, gt=0, description="reminder lead before each due time; default a quarter of it"
    )

    @model_validator(mode="after")
    def _reminder_fits(self) -> ServiceLevel:
        if (
            self.remind_before_hours is not None
            and self.remind_before_hours >= self.complaint_response_hours
        ):
            raise ValueError(
                "remind_before_hours must be shorter than complaint_response_hours "
                f"({self.remind_before_hours} >= {self.complaint_response_hours})"
            )
        if (
            self.complaint_resolution_hours is not None
            and self.complaint_resolution_hours < self.complaint_response_hours
        ):
            raise ValueError(
                "complaint_resolution_hours cannot be shorter than complaint_response_hours"
            )
        return self

    @property
    def remind_before(self) -> float:
        """Hours before each due time that the responsible is reminded."""
        return self.remind_before_hours or self.complaint_response_hours / 4


class TierPolicy(_Strict):
    channels: list[Literal["email", "sms"]]
    caps: dict[Literal["email", "sms"], Caps] = Field(default_factory=dict)
    service_level: ServiceLevel
    offers: list[str] = Field(default_factory=list)
    max_offers: int = Field(3, ge=0, le=3)


class Tiers(_Strict):
    levels: list[str] = Field(min_length=1)
    default: str
    rules: list[TierRule] = Field(default_factory=list)


class RuleFile(_Strict):
    ruleset: str = Field(pattern=NAME)
    description: str = ""
    owner: str = Field(min_length=1)
    attributes: dict[str, Literal["number", "string", "bool"]] = Field(default_factory=dict)
    rankings: dict[str, Ranking] = Field(default_factory=dict)
    tiers: Tiers
    segments: list[SegmentRule] = Field(default_factory=list)
    offers: list[OfferRule] = Field(default_factory=list)
    policies: dict[str, TierPolicy]


# --- loaded and checked ---------------------------------------------------------------------


@dataclass
class Rules:
    """A rule file, valid, with every condition parsed."""

    spec: RuleFile
    source: str
    path: str
    digest: str
    conditions: dict[str, Parsed] = field(default_factory=dict)  # "tier:<name>", ...
    rankings: dict[str, Parsed] = field(default_factory=dict)  # ranking name -> "by" expr
    kinds: dict[str, Kind] = field(default_factory=dict)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.ruleset

    @property
    def version(self) -> str:
        return self.digest[:12]

    def tier_rules(self) -> list[TierRule]:
        """Tier rules, first-to-win first: higher priority, then file order."""
        indexed = list(enumerate(self.spec.tiers.rules))
        return [r for _, r in sorted(indexed, key=lambda ir: (-ir[1].priority, ir[0]))]


def load(path: Path) -> Rules:
    """Read, validate and parse a rule file; raises RuleFileError listing every problem."""
    try:
        source = read_source(path)
    except SpecError as exc:
        raise RuleFileError(exc.problems) from None
    return loads(source, str(path))


def loads(source: str, path: str = "<rules>") -> Rules:
    try:
        spec, positions = load_model(source, path, RuleFile, "docs/rules.md")
    except SpecError as exc:
        raise RuleFileError(exc.problems) from None
    rules = Rules(
        spec=spec,
        source=source,
        path=path,
        digest=hashlib.sha256(source.encode()).hexdigest(),
    )
    _check(rules, positions)
    return rules


def _condition_position(
    positions: Positions, path: tuple[Any, ...], error: ConditionError, source_lines: list[str]
) -> tuple[int, int]:
    """Where, in the file, a position inside a condition's text is."""
    line, col = positions.at(path)
    style = positions.styles.get(path)
    if style in ("|", ">"):
        # Block scalar: the text starts on the next line, at that line's indentation.
        first = line  # the line after the indicator (1-based index == next line)
        text_line = source_lines[first] if first < len(source_lines) else ""
        indent = len(text_line) - len(text_line.lstrip())
        return first + error.line, indent + error.column
    offset = 1 if style in ("'", '"') else 0
    return line + error.line - 1, (
        col + offset + error.column - 1 if error.line == 1 else error.column
    )


def _check(rules: Rules, positions: Positions) -> None:
    spec, path = rules.spec, rules.path
    problems: list[Problem] = []
    lines = rules.source.splitlines()

    def problem(loc: tuple[Any, ...], message: str, severity: str = "error") -> None:
        line, col = positions.at(loc)
        problems.append(Problem(path, line, col, message, severity))  # type: ignore[arg-type]

    kinds: dict[str, Kind] = {name: f.kind for name, f in FEATURES.items()}
    for name, declared in spec.attributes.items():
        kinds[f"attr.{name}"] = declared
    for name in spec.rankings:
        if name in kinds:
            problem(("rankings", name, "__key__"), f"ranking {name!r} hides the field {name!r}")
        kinds[name] = "bool"
    rules.kinds = kinds

    def condition(loc: tuple[Any, ...], text: str, key: str) -> None:
        try:
            rules.conditions[key] = parse(text, kinds)
        except ConditionError as exc:
            line, col = _condition_position(positions, loc, exc, lines)
            problems.append(Problem(path, line, col, exc.message))

    for name, ranking in spec.rankings.items():
        loc = ("rankings", name, "by")
        try:
            parsed = parse(ranking.by, kinds, as_number=True)
            if name in parsed.fields:
                raise ConditionError("a ranking cannot rank by itself", 1, 1)
            rules.rankings[name] = parsed
        except ConditionError as exc:
            line, col = _condition_position(positions, loc, exc, lines)
            problems.append(Problem(path, line, col, f"rankings.{name}.by: {exc.message}"))

    levels = spec.tiers.levels
    if spec.tiers.default not in levels:
        problem(
            ("tiers", "default"), f"default tier {spec.tiers.default!r} is not in levels {levels}"
        )
    seen: dict[str, tuple[Any, ...]] = {}
    sections: list[tuple[str, tuple[Any, ...], Sequence[_Rule]]] = [
        ("tier", ("tiers", "rules"), spec.tiers.rules),
        ("segment", ("segments",), spec.segments),
        ("offer", ("offers",), spec.offers),
    ]
    for kind, section, items in sections:
        for i, item in enumerate(items):
            loc = (*section, i)
            if item.name in seen:
                problem((*loc, "name"), f"the name {item.name!r} is used twice; names are unique")
            seen[item.name] = loc
            condition((*loc, "when"), item.when, f"{kind}:{item.name}")
            if isinstance(item, TierRule) and item.tier not in levels:
                problem((*loc, "tier"), f"tier {item.tier!r} is not in levels {levels}")
    priorities: dict[int, str] = {}
    for i, rule in enumerate(spec.tiers.rules):
        if rule.priority in priorities:
            problem(
                ("tiers", "rules", i, "priority"),
                f"priority {rule.priority} is also {priorities[rule.priority]!r}'s; the one "
                "written first wins, give them different priorities to say which",
                "warning",
            )
        priorities.setdefault(rule.priority, rule.name)
    offer_names = {o.name for o in spec.offers}
    for tier in levels:
        if tier not in spec.policies:
            problem(("policies",), f"tier {tier!r} has no policy (channels, caps, service level)")
    for tier, policy in spec.policies.items():
        if tier not in levels:
            problem(("policies", tier, "__key__"), f"policy for {tier!r}, which is not a tier")
        for j, offer in enumerate(policy.offers):
            if offer not in offer_names:
                problem(("policies", tier, "offers", j), f"no offer named {offer!r}")
        for channel in policy.caps:
            if channel not in policy.channels:
                problem(
                    ("policies", tier, "caps", channel, "__key__"),
                    f"a cap for {channel}, which tier {tier!r} may not use",
                    "warning",
                )
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise RuleFileError(problems)
    rules.warnings.extend(problems)
