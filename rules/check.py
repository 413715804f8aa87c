"""Warnings about tiers: rules that overlap, rules that never decide, tiers never reached.

Exact answers need a solver; this samples instead. For every field the tier rules use, the
candidate values are the constants the rules compare it with, a step either side, zero and
"unknown"; thousands of combinations are drawn and evaluated with the reference evaluator.
A warning carries an example customer, so a marketer can see the case for themselves.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from rules.language import And as AndCond
from rules.language import Arith, Compare, Cond, Const, Expr, Field, In, Not, Truth, holds
from rules.language import Or as OrCond
from rules.model import Problem, Rules


def _constants(cond: Cond) -> Iterator[tuple[str, Any]]:
    """(field, constant) pairs a condition compares directly."""
    if isinstance(cond, AndCond | OrCond):
        for part in cond.parts:
            yield from _constants(part)
    elif isinstance(cond, Not):
        yield from _constants(cond.operand)
    elif isinstance(cond, Compare):
        for a, b in ((cond.left, cond.right), (cond.right, cond.left)):
            for name in _fields(a):
                if isinstance(b, Const):
                    yield name, b.value
    elif isinstance(cond, In):
        for name in _fields(cond.item):
            for option in cond.options:
                yield name, option
    elif isinstance(cond, Truth):
        yield cond.field.name, True


def _fields(expr: Expr) -> Iterator[str]:
    if isinstance(expr, Field):
        yield expr.name
    elif isinstance(expr, Arith):
        yield from _fields(expr.left)
        yield from _fields(expr.right)


def candidates(rules: Rules) -> dict[str, list[Any]]:
    values: dict[str, set[Any]] = {}
    for key, parsed in rules.conditions.items():
        if not key.startswith("tier:"):
            continue
        for name in parsed.fields:
            values.setdefault(name, set())
        for name, constant in _constants(parsed.tree):
            values[name].add(constant)
    out: dict[str, list[Any]] = {}
    for name, consts in values.items():
        kind = rules.kinds.get(name)
        if kind == "bool":
            pool: list[Any] = [True, False]
        elif kind == "string":
            pool = [*sorted(str(c) for c in consts), "(other)"]
        else:
            numbers = {c for c in consts if isinstance(c, int | float) and not isinstance(c, bool)}
            pool = sorted({0, *numbers, *(n + 1 for n in numbers), *(n - 1 for n in numbers)})
        out[name] = [*pool, None]
    return out


def analyse(rules: Rules, samples: int = 4000, seed: int = 7) -> list[Problem]:
    ordered = rules.tier_rules()
    if not ordered:
        return []
    pools = candidates(rules)
    rng = random.Random(seed)
    wins = dict.fromkeys((r.name for r in ordered), 0)
    held = dict.fromkeys((r.name for r in ordered), 0)
    overlaps: dict[tuple[str, str], dict[str, Any]] = {}
    for _ in range(samples):
        facts = {name: rng.choice(pool) for name, pool in pools.items()}
        facts = {k: v for k, v in facts.items() if v is not None}
        holding = [r for r in ordered if holds(rules.conditions[f"tier:{r.name}"].tree, facts)]
        for r in holding:
            held[r.name] += 1
        if holding:
            wins[holding[0].name] += 1
        for other in holding[1:]:
            if other.tier != holding[0].tier:
                overlaps.setdefault((holding[0].name, other.name), facts)
    problems: list[Problem] = []
    line_of = _rule_lines(rules)

    def warn(rule: str, message: str) -> None:
        line = line_of.get(rule, 1)
        problems.append(Problem(rules.path, line, 1, message, "warning"))

    for r in ordered:
        if held[r.name] == 0:
            warn(r.name, f"tier rule {r.name!r} never held in {samples} sampled customers")
        elif wins[r.name] == 0:
            warn(
                r.name,
                f"tier rule {r.name!r} never decides: rules of higher priority hold whenever it "
                "does",
            )
    for (winner, shadowed), example in overlaps.items():
        warn(
            shadowed,
            f"tier rules {winner!r} and {shadowed!r} give different tiers and both hold for "
            f"e.g. {_example(example)}; {winner!r} wins by priority",
        )
    reachable = {r.tier for r in ordered if wins[r.name]} | {rules.spec.tiers.default}
    for tier in rules.spec.tiers.levels:
        if tier not in reachable:
            problems.append(
                Problem(rules.path, 1, 1, f"tier {tier!r} can never be reached", "warning")
            )
    return problems


def _example(facts: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={v!r}" for k, v in sorted(facts.items())) + "}"


def _rule_lines(rules: Rules) -> dict[str, int]:
    lines: dict[str, int] = {}
    for number, text in enumerate(rules.source.splitlines(), start=1):
        stripped = text.strip()
        if stripped.startswith("- name:"):
            lines.setdefault(stripped.split(":", 1)[1].strip(), number)
    return lines
