"""From what durable_rules matched to a decision, and why."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from rules.engine import DEFAULT_RULE, Match
from rules.language import (
    And,
    Arith,
    Compare,
    Cond,
    Const,
    Expr,
    Field,
    In,
    Not,
    Or,
    Truth,
    evaluate,
    render,
    value_of,
)
from rules.model import Rules


@dataclass
class Decision:
    key: str
    version: str
    tier: str
    tier_rule: str  # the rule that decided, or "__default__"
    segments: list[str] = field(default_factory=list)
    offers: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(rules: Rules, match: Match, values: dict[str, float] | None = None) -> Decision:
    """``values``: for the offers a propensity model predicts, what offering each is worth
    for this customer (propensity times margin). Those offers trade places among themselves
    by it; the others keep the place their priority gives them."""
    spec = rules.spec
    if match.tier_rule == DEFAULT_RULE:
        tier = spec.tiers.default
    else:
        tier = next(r.tier for r in spec.tiers.rules if r.name == match.tier_rule)
    matched = set(match.matched)
    segments = [s.name for s in spec.segments if f"segment:{s.name}" in matched]
    policy = spec.policies[tier]
    allowed = set(policy.offers)
    ranked = sorted(
        (o for o in spec.offers if f"offer:{o.name}" in matched and o.name in allowed),
        key=lambda o: -o.priority,
    )
    if values:
        slots = [i for i, o in enumerate(ranked) if o.name in values]
        best = sorted((ranked[i] for i in slots), key=lambda o: -values[o.name])
        for i, offer in zip(slots, best, strict=True):
            ranked[i] = offer
    return Decision(
        key=match.key,
        version=rules.version,
        tier=tier,
        tier_rule=match.tier_rule,
        segments=segments,
        offers=[o.name for o in ranked][: policy.max_offers],
    )


# --- explanations ---------------------------------------------------------------------------


def _shown(value: Any) -> Any:
    return "unknown" if value is None else value


def _leaves(cond: Cond, facts: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each comparison of a condition with the values it saw and its outcome."""
    if isinstance(cond, And | Or):
        return [leaf for part in cond.parts for leaf in _leaves(part, facts)]
    if isinstance(cond, Not):
        return _leaves(cond.operand, facts)
    values: dict[str, Any] = {}
    exprs: list[Expr] = []
    if isinstance(cond, Compare):
        exprs = [cond.left, cond.right]
    elif isinstance(cond, In):
        exprs = [cond.item]
    elif isinstance(cond, Truth):
        exprs = [cond.field]
    for expr in exprs:
        _collect(expr, facts, values)
    return [{"condition": render(cond), "values": values, "holds": _outcome(evaluate(cond, facts))}]


def _collect(expr: Expr, facts: Mapping[str, Any], into: dict[str, Any]) -> None:
    if isinstance(expr, Field):
        into[expr.name] = _shown(facts.get(expr.name))
    elif isinstance(expr, Arith):
        _collect(expr.left, facts, into)
        _collect(expr.right, facts, into)
        into[render(expr)] = _shown(value_of(expr, facts))
    else:
        assert isinstance(expr, Const)


def _outcome(value: bool | None) -> str:
    return {True: "true", False: "false", None: "unknown"}[value]


def explain(rules: Rules, facts: Mapping[str, Any], decision: Decision) -> dict[str, Any]:
    """Which rules were tried in order, what each saw, and what decided."""
    tried = []
    for rule in rules.tier_rules():
        parsed = rules.conditions[f"tier:{rule.name}"]
        tried.append(
            {
                "rule": rule.name,
                "tier": rule.tier,
                "priority": rule.priority,
                "owner": rule.owner,
                "when": parsed.text,
                "holds": _outcome(evaluate(parsed.tree, facts)),
                "conditions": _leaves(parsed.tree, facts),
            }
        )
        if rule.name == decision.tier_rule:
            break
    other = []
    for kind, items in (("segment", rules.spec.segments), ("offer", rules.spec.offers)):
        for item in items:
            parsed = rules.conditions[f"{kind}:{item.name}"]
            other.append(
                {
                    "kind": kind,
                    "name": item.name,
                    "owner": item.owner,
                    "when": parsed.text,
                    "holds": _outcome(evaluate(parsed.tree, facts)),
                    "conditions": _leaves(parsed.tree, facts),
                }
            )
    decided_by = (
        f"no tier rule held: the default tier {rules.spec.tiers.default}"
        if decision.tier_rule == DEFAULT_RULE
        else f"rule {decision.tier_rule!r}"
    )
    return {
        "ruleset": rules.name,
        "version": rules.version,
        "tier": decision.tier,
        "decided_by": decided_by,
        "tier_rules_tried": tried,
        "segments": decision.segments,
        "offers": decision.offers,
        "policy": rules.spec.policies[decision.tier].model_dump(),
        "segment_and_offer_rules": other,
    }
