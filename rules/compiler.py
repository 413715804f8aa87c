"""Conditions to durable_rules: negation pushed down, ``in`` expanded, arithmetic precomputed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rules.language import (
    FLIPPED,
    NEGATED,
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
    _compare,
    value_of,
)

#: Every fact carries this key; a condition that always holds is "it exists".
KEY = "__key"
TRUE: dict[str, Any] = {"$ex": {KEY: 1}}
DURABLE_OPS = {"<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte", "!=": "$neq"}


def wire_name(name: str) -> str:
    """Fact key for a field: durable_rules reads dots as nesting."""
    return name.replace(".", "__")


@dataclass
class Computed:
    """Arithmetic the compiler lifted out of conditions, evaluated in Python per customer."""

    expressions: dict[str, Arith] = field(default_factory=dict)

    def key_for(self, expr: Arith) -> str:
        for key, known in self.expressions.items():
            if known == expr:
                return key
        key = f"__e{len(self.expressions)}"
        self.expressions[key] = expr
        return key

    def values(self, facts: Mapping[str, Any]) -> dict[str, Any]:
        """The lifted expressions' values for one customer (unknown ones left out)."""
        out = {}
        for key, expr in self.expressions.items():
            value = value_of(expr, facts)
            if value is not None:
                out[key] = value
        return out


def nnf(cond: Cond, negate: bool = False) -> Cond:
    """Negation normal form: ``not`` only inside comparisons (Kleene-safe)."""
    if isinstance(cond, Not):
        return nnf(cond.operand, not negate)
    if isinstance(cond, And | Or):
        parts = tuple(nnf(p, negate) for p in cond.parts)
        flip = isinstance(cond, And) == negate  # De Morgan swaps and/or under negation
        return Or(parts) if flip else And(parts)
    if isinstance(cond, Compare):
        return Compare(NEGATED[cond.op], cond.left, cond.right) if negate else cond
    if isinstance(cond, In):
        negated = cond.negated != negate
        leaves = tuple(
            Compare("!=" if negated else "==", cond.item, Const(o)) for o in cond.options
        )
        if not leaves:
            return Compare("==", Const(0), Const(0 if negated else 1))
        return leaves[0] if len(leaves) == 1 else (And(leaves) if negated else Or(leaves))
    assert isinstance(cond, Truth)
    return Compare("!=" if negate else "==", cond.field, Const(True))


def fold(cond: Cond) -> Cond | bool:
    """Constant comparisons folded away (an NNF condition), or plain True / False."""
    if isinstance(cond, Compare):
        if isinstance(cond.left, Const) and isinstance(cond.right, Const):
            return _compare(cond.op, cond.left.value, cond.right.value) is True
        return cond
    assert isinstance(cond, And | Or), cond
    absorbing = isinstance(cond, Or)  # True absorbs an `or`, False an `and`
    kept: list[Cond] = []
    for part in cond.parts:
        folded = fold(part)
        if folded is absorbing:
            return absorbing
        if not isinstance(folded, bool):
            kept.append(folded)
    if not kept:
        return not absorbing
    if len(kept) == 1:
        return kept[0]
    return Or(tuple(kept)) if absorbing else And(tuple(kept))


def to_durable(cond: Cond, computed: Computed) -> dict[str, Any]:
    """A durable_rules condition (JSON form) for a folded NNF condition."""
    if isinstance(cond, And | Or):
        op = "$and" if isinstance(cond, And) else "$or"
        return {op: [to_durable(p, computed) for p in cond.parts]}
    assert isinstance(cond, Compare), cond
    left, right, op = cond.left, cond.right, cond.op
    if isinstance(left, Const):
        left, right, op = right, left, FLIPPED[op]
    subject = _operand(left, computed)
    if isinstance(right, Const):
        return {subject: right.value} if op == "==" else {DURABLE_OPS[op]: {subject: right.value}}
    other = _operand(right, computed)
    target = {"$m": other}
    leaf = {subject: target} if op == "==" else {DURABLE_OPS[op]: {subject: target}}
    # durable_rules can match a comparison between two fields when one of them is missing
    # (found by the property tests): require both to be present.
    return {"$and": [{"$ex": {subject: 1}}, {"$ex": {other: 1}}, leaf]}


def _operand(expr: Expr, computed: Computed) -> str:
    if isinstance(expr, Field):
        return wire_name(expr.name)
    assert isinstance(expr, Arith)
    return computed.key_for(expr)


def compile_condition(cond: Cond, computed: Computed) -> dict[str, Any] | None:
    """The durable_rules condition; None when it can never hold (the rule is left out:
    durable_rules does not cope with a condition that no fact can meet)."""
    folded = fold(nnf(cond))
    if folded is False:
        return None
    if folded is True:
        return TRUE
    return to_durable(folded, computed)
