"""Journey definitions: YAML a marketer writes, validated with file, line and field.

A journey has a trigger, an entry condition, a re-entry policy and steps. Steps run in
order; ``branch`` jumps to a step by its ``id``; ``exit`` (or the end of the list) ends it.
``journeys/*.yaml`` are the shipped definitions; docs/journeys.md lists every key.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlmodel import Session

from clientela.customers.records import get_customer
from clientela.messaging import topics
from clientela.messaging.templating import Templates
from clientela.settings import Duration
from clientela.yamlfile import Problem, SpecError, load_model, read_source
from models import CustomerDecision, RuleVersion
from rules.language import ConditionError, Parsed, holds, parse
from rules.model import Rules
from rules.service import rules_of

NAME = r"^[a-z][a-z0-9_]{0,47}$"
EVENTS = (
    "signup",
    "purchase",
    "complaint",
    "open",
    "click",
    "visit",
    "reply",
    "conversion",
)
#: A custom event's name, as a data pipeline sends it (``cart_abandoned``, ``Order Completed``).
CUSTOM_EVENT = r"^[A-Za-z][A-Za-z0-9 _.:-]{0,63}$"
EventName = Annotated[str, Field(pattern=CUSTOM_EVENT, description="built-in or custom")]
#: Kinds a custom event's property may be declared with (for conditions on it).
PROPERTY_KINDS = ("number", "string", "bool")
DATES = ("birthday", "signup_anniversary")
ATTRIBUTE = r"attr\.[A-Za-z_][A-Za-z0-9_]{0,63}"
DOCS = "docs/journeys.md"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TierChange(_Strict):
    to: list[str] = Field(default_factory=list, description="any of; empty: any tier")
    from_: list[str] = Field(default_factory=list, alias="from", description="any of")
    direction: Literal["up", "down", "any"] = "any"


class Trigger(_Strict):
    """Exactly one of: an event, a tier change, entering a segment, a date, a lapse."""

    event: EventName | None = Field(
        None, description=f"one of {', '.join(EVENTS)}, or a custom event (POST /events track)"
    )
    properties: dict[str, Literal["number", "string", "bool"]] | None = Field(
        None, description="with event: the event's properties conditions read, as event.<name>"
    )
    tier_change: TierChange | None = None
    segment_entry: str | None = None
    date: str | None = Field(
        None, description="birthday, signup_anniversary or attr.<name> (a date attribute)"
    )
    no_purchase_for: Duration | None = Field(
        None, description="whole days since the last purchase (or the sign-up, if none)"
    )

    @model_validator(mode="after")
    def _one(self) -> Trigger:
        kinds = ("event", "tier_change", "segment_entry", "date", "no_purchase_for")
        given = [k for k in kinds if getattr(self, k)]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of {', '.join(kinds)}"
                + (f" (found {', '.join(given)})" if given else "")
            )
        if self.properties and not self.event:
            raise ValueError("properties go with event: the triggering event's properties")
        for name in self.properties or {}:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name):
                raise ValueError(f"property {name!r}: letters, digits and _ (as event.{name})")
        if self.date and self.date not in DATES and not re.fullmatch(ATTRIBUTE, self.date):
            raise ValueError(
                f"date {self.date!r}: birthday, signup_anniversary or attr.<name> (a customer "
                "attribute holding YYYY-MM-DD or MM-DD)"
            )
        lapse = self.no_purchase_for
        if lapse is not None and (lapse < timedelta(days=1) or lapse % timedelta(days=1)):
            raise ValueError(f"no_purchase_for is whole days (e.g. 90d), not {lapse}")
        return self

    @property
    def scheduled(self) -> bool:
        """Entered by the hourly date run (a date or a lapse), once per occasion."""
        return bool(self.date or self.no_purchase_for)


class Reentry(_Strict):
    policy: Literal["once", "once_per", "every_time"] = "once"
    period: Duration | None = Field(None, description="with once_per: e.g. 90d, 365d")

    @model_validator(mode="after")
    def _period(self) -> Reentry:
        if (self.policy == "once_per") != (self.period is not None):
            raise ValueError("period goes with policy once_per, and only with it")
        return self


class Send(_Strict):
    template: str
    channel: Literal["preferred", "email", "sms"] = "preferred"


class WaitFor(_Strict):
    events: list[EventName] = Field(min_length=1)
    timeout: Duration


class Route(_Strict):
    if_: str = Field(
        alias="if", description="responded, event:<kind>, sent:<send step> or a rule condition"
    )
    goto: str


class Step(_Strict):
    id: str | None = Field(None, pattern=NAME)
    send: Send | None = None
    wait: Duration | None = None
    wait_until: time | None = Field(None, description="the next such local time, HH:MM")
    wait_for: WaitFor | None = None
    branch: list[Route] | None = None
    else_: str | None = Field(None, alias="else", description="with branch: where to go")
    exit: str | None = Field(None, description="end here, with the reason")

    @property
    def action(self) -> str:
        for key in ("send", "wait", "wait_until", "wait_for", "branch", "exit"):
            if getattr(self, key) is not None:
                return key
        raise AssertionError("validated")

    @model_validator(mode="after")
    def _one(self) -> Step:
        given = [
            k
            for k in ("send", "wait", "wait_until", "wait_for", "branch", "exit")
            if getattr(self, k) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "a step does exactly one of send, wait, wait_until, wait_for, branch, exit"
                + (f" (found {', '.join(given)})" if given else "")
            )
        if self.else_ is not None and self.branch is None:
            raise ValueError("else goes with branch")
        return self


class JourneySpec(_Strict):
    name: str = Field(pattern=NAME)
    description: str = ""
    owner: str = Field(min_length=1)
    trigger: Trigger
    when: str | None = Field(None, description="entry condition over the customer's fields")
    reentry: Reentry = Field(default_factory=Reentry)
    tracking: bool = Field(True, description="count clicks and opens of the journey's emails")
    topic: str | None = Field(None, description="its subscription topic (templates/_topics.yaml)")
    steps: list[Step] = Field(min_length=1)

    @field_validator("steps")
    @classmethod
    def _ids_unique(cls, steps: list[Step]) -> list[Step]:
        ids = [s.id for s in steps if s.id]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"step ids must be unique: {', '.join(dupes)}")
        return steps


class Journey:
    """A valid definition: its conditions parsed, its steps addressable, its version."""

    def __init__(
        self, spec: JourneySpec, source: str, path: str, conditions: dict[str, Parsed]
    ) -> None:
        self.spec, self.source, self.path, self.conditions = spec, source, path, conditions
        self.name = spec.name

    @property
    def version(self) -> str:
        """A digest of the definition's content: what a running journey keeps."""
        return hashlib.sha256(self.source.encode()).hexdigest()[:12]

    def as_data(self) -> dict[str, Any]:
        """The definition as plain data for a workflow's input (replayed as it was):
        durations in seconds, local times as HH:MM."""
        return _plain(self.spec.model_dump(by_alias=True, exclude_none=True))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, time):
        return value.strftime("%H:%M")
    return value


def condition_kinds(rules: Rules, event: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Fields a journey condition may use: the rules' fields, ``tier``, each segment, and
    ``event.<name>`` for each declared property of the triggering event."""
    return {
        **rules.kinds,
        "tier": "string",
        **{segment.name: "bool" for segment in rules.spec.segments},
        **{f"event.{name}": kind for name, kind in (event or {}).items()},
    }


class CustomerFacts:
    """A customer's fields as the rules last decided them, with tier and segment flags."""

    def __init__(self, rules: Rules | None, values: dict[str, Any]) -> None:
        self.rules, self.values = rules, values

    def holds(
        self,
        condition: str,
        event: Mapping[str, str] | None = None,
        properties: Mapping[str, Any] | None = None,
    ) -> bool:
        """Whether the condition holds; unknown (no decision yet, a missing field or
        property, a property of another kind than declared) is no. ``event``: the declared
        kinds of the triggering event's properties; ``properties``: their values."""
        if self.rules is None:
            return False
        values = dict(self.values)
        for name, kind in (event or {}).items():
            value = (properties or {}).get(name)
            if _of_kind(value, kind):
                values[f"event.{name}"] = value
        return holds(parse(condition, condition_kinds(self.rules, event)).tree, values)


def _of_kind(value: Any, kind: str) -> bool:
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, str)


def facts_of(session: Session, customer_id: str) -> CustomerFacts:
    customer = get_customer(session=session, external_id=customer_id)
    decision = session.get(CustomerDecision, customer.id)
    if decision is None:
        return CustomerFacts(None, {})
    version = session.get(RuleVersion, decision.rule_version_id)
    if version is None:
        return CustomerFacts(None, {})
    rules = rules_of(version)
    values: dict[str, Any] = dict(decision.features)
    values["tier"] = decision.tier
    for segment in rules.spec.segments:
        values[segment.name] = segment.name in decision.segments
    return CustomerFacts(rules, values)


def step_ids(spec: JourneySpec) -> list[str]:
    return [s.id or f"step{i + 1}" for i, s in enumerate(spec.steps)]


def load(path: Path, rules: Rules, templates: Templates) -> Journey:
    return loads(read_source(path), str(path), rules, templates)


def loads(source: str, path: str, rules: Rules, templates: Templates) -> Journey:
    spec, positions = load_model(source, path, JourneySpec, DOCS)
    problems: list[Problem] = []

    def problem(loc: tuple[Any, ...], message: str) -> None:
        line, col = positions.at(loc)
        problems.append(Problem(path, line, col, f"{'.'.join(map(str, loc))}: {message}"))

    conditions: dict[str, Parsed] = {}
    kinds = condition_kinds(rules, spec.trigger.properties)

    def condition(loc: tuple[Any, ...], text: str, key: str) -> None:
        try:
            conditions[key] = parse(text, kinds)
        except ConditionError as exc:
            problem(loc, exc.message)

    if spec.when is not None:
        condition(("when",), spec.when, "when")
    levels = rules.spec.tiers.levels
    change = spec.trigger.tier_change
    if change is not None:
        for key, tiers in (("to", change.to), ("from", change.from_)):
            for i, tier in enumerate(tiers):
                if tier not in levels:
                    problem(("trigger", "tier_change", key, i), f"no tier {tier!r} ({levels})")
    segment = spec.trigger.segment_entry
    if segment is not None and segment not in {s.name for s in rules.spec.segments}:
        problem(("trigger", "segment_entry"), f"no segment {segment!r} in rule set {rules.name}")
    if spec.topic is not None:
        known = topics.load(templates.directory).topics
        if spec.topic not in known:
            listed = ", ".join(sorted(known)) or "none"
            problem(("topic",), f"no topic {spec.topic!r} in templates/_topics.yaml ({listed})")
    ids = step_ids(spec)
    for i, step in enumerate(spec.steps):
        if step.send is not None:
            channels = ["email", "sms"] if step.send.channel == "preferred" else [step.send.channel]
            for channel in channels:
                part = "body.html" if channel == "email" else "sms.txt"
                if not templates.has(step.send.template, part):
                    problem(
                        ("steps", i, "send", "template"),
                        f"template {step.send.template!r} has no {part} (needed for {channel})",
                    )
        for j, route in enumerate(step.branch or []):
            if route.goto not in ids:
                problem(("steps", i, "branch", j, "goto"), f"no step {route.goto!r}")
            test = route.if_
            if test.startswith("sent:"):
                sends = [ids[k] for k, s in enumerate(spec.steps) if s.send is not None]
                if test[5:] not in sends:
                    problem(
                        ("steps", i, "branch", j, "if"),
                        f"sent:<step> names a send step ({', '.join(sends) or 'none'}), "
                        f"not {test[5:]!r}",
                    )
            elif test != "responded" and not test.startswith("event:"):
                condition(("steps", i, "branch", j, "if"), test, f"{ids[i]}:{j}")
            elif test.startswith("event:") and not re.fullmatch(CUSTOM_EVENT, test[6:]):
                problem(
                    ("steps", i, "branch", j, "if"),
                    f"event:{test[6:]!r}: an event is named with letters, digits, spaces and "
                    "_ . : - (one of " + ", ".join(EVENTS) + ", or a custom event)",
                )
        if step.else_ is not None and step.else_ not in ids:
            problem(("steps", i, "else"), f"no step {step.else_!r}")
        if step.wait is not None and step.wait <= timedelta(0):
            problem(("steps", i, "wait"), "a wait must be longer than zero")
    if problems:
        raise SpecError(problems)
    return Journey(spec, source, path, conditions)


def load_all(directory: Path, rules: Rules, templates: Templates) -> dict[str, Journey]:
    """Every definition in a folder, by name; all problems of all files together."""
    found, problems = load_valid(directory, rules, templates)
    if problems:
        raise SpecError(problems)
    return found


def load_valid(
    directory: Path, rules: Rules, templates: Templates, only: str | None = None
) -> tuple[dict[str, Journey], list[Problem]]:
    """The valid definitions of a folder, by name, and the problems of the others (each
    left out whole: a file with an error never half-runs). ``only``: one file's name."""
    found: dict[str, Journey] = {}
    problems: list[Problem] = []
    paths = [directory / only] if only else sorted(directory.glob("*.yaml"))
    for path in paths:
        try:
            journey = load(path, rules, templates)
        except SpecError as exc:
            problems.extend(exc.problems)
            continue
        if journey.name in found:
            other = found[journey.name].path
            problems.append(
                Problem(str(path), 1, 1, f"name: {journey.name!r} is also {other}; left out")
            )
            continue
        found[journey.name] = journey
    return found, problems
