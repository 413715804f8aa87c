"""The condition language of rule files: a small, safe subset of Python expressions.

    monthly_income > 100 and tenure_months > 5
    attr.plan in ["postpaid", "business"] and not newbie
    usage - basic_charge >= 0.5 * basic_charge

Comparisons (``== != < <= > >=``, chained as ``10 < x <= 20``), ``in`` / ``not in`` a list of
constants, ``and`` / ``or`` / ``not``, arithmetic (``+ - * /``), numbers, strings, ``true`` /
``false``, feature names and ``attr.<name>`` for a customer's free attributes.

Missing values follow SQL: a comparison with a missing value (or a division by zero) is
*unknown*; ``not unknown`` is unknown; ``and``/``or`` are Kleene's; a condition holds only when
it is true. The compiler pushes ``not`` down to the comparisons (De Morgan), expands ``in`` into
equalities and precomputes arithmetic, so durable_rules sees plain comparisons on facts; that
rewriting keeps exactly these semantics, which the property tests check against
:func:`evaluate`, the plain-Python reference.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["number", "string", "bool", "any"]
Value = float | int | str | bool | None

COMPARE_OPS = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
}
ARITH_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
NEGATED = {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}
FLIPPED = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
CONSTANT_NAMES = {"true": True, "false": False, "True": True, "False": False}


class ConditionError(ValueError):
    """A condition that cannot be used; ``line``/``column`` are 1-based within the text."""

    def __init__(self, message: str, line: int = 1, column: int = 1) -> None:
        super().__init__(message)
        self.message, self.line, self.column = message, line, column


#: Numbers at or beyond this magnitude are unknown; others are compared to 4 decimal places.
#: (durable_rules reads JSON numbers without exponents only.)
LIMIT = 1e15


def wire_number(value: float | int) -> float | int | None:
    """A number as rules compare it, or None (unknown) when out of range."""
    if value != value or abs(value) >= LIMIT:  # NaN or too large
        return None
    return value if isinstance(value, int) else round(value, 4) + 0.0


# --- the tree -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    name: str  # feature name, or "attr.<name>"


@dataclass(frozen=True)
class Const:
    value: Value


@dataclass(frozen=True)
class Arith:
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Compare:
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class In:
    item: Expr
    options: tuple[Value, ...]
    negated: bool = False


@dataclass(frozen=True)
class Not:
    operand: Cond


@dataclass(frozen=True)
class And:
    parts: tuple[Cond, ...]


@dataclass(frozen=True)
class Or:
    parts: tuple[Cond, ...]


@dataclass(frozen=True)
class Truth:
    """A boolean feature used on its own: ``newbie``."""

    field: Field


Expr = Field | Const | Arith
Cond = Compare | In | Not | And | Or | Truth


# --- parsing --------------------------------------------------------------------------------


@dataclass
class Parsed:
    text: str
    tree: Cond
    fields: set[str] = field(default_factory=set)


def parse(text: str, kinds: Mapping[str, Kind], as_number: bool = False) -> Parsed:
    """Parse and type-check a condition against the known fields and their kinds.

    With ``as_number``, the text is a number expression instead (a ranking's ``by``); it is
    returned as ``<expr> == 0`` so that its fields and value can be read the same way.
    """
    body = text.strip()
    try:
        # Parenthesised, so a condition may span lines; positions are mapped back below.
        node = ast.parse(f"({body}\n)", mode="eval").body
    except SyntaxError as exc:
        line = exc.lineno or 1
        lines = body.splitlines() or [""]
        if not exc.offset or line > len(lines):
            # The text ended too early: point just past its end.
            line, column, message = len(lines), len(lines[-1]) + 1, "the condition ends too early"
        else:
            column, message = exc.offset - (1 if line == 1 else 0), exc.msg
        raise ConditionError(f"syntax error: {message}", line, max(1, column)) from None
    _shift_first_line(node)
    parser = _Parser(kinds)
    if as_number:
        expr = parser.expr(node)
        if parser.kind(expr) not in ("number", "any"):
            raise parser.fail(node, f"{render(expr)} is not a number; rank by a number")
        return Parsed(text=text, tree=Compare("==", expr, Const(0)), fields=parser.fields)
    tree = parser.cond(node)
    return Parsed(text=text, tree=tree, fields=parser.fields)


def _shift_first_line(tree: ast.AST) -> None:
    """Undo the opening parenthesis parse() adds, on the first line's columns."""
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) == 1 and hasattr(node, "col_offset"):
            node.col_offset -= 1


def _at(node: ast.AST) -> tuple[int, int]:
    return getattr(node, "lineno", 1), getattr(node, "col_offset", 0) + 1


class _Parser:
    def __init__(self, kinds: Mapping[str, Kind]) -> None:
        self.kinds = kinds
        self.fields: set[str] = set()

    def fail(self, node: ast.AST, message: str) -> ConditionError:
        return ConditionError(message, *_at(node))

    def cond(self, node: ast.AST) -> Cond:
        if isinstance(node, ast.BoolOp):
            parts = tuple(self.cond(v) for v in node.values)
            return And(parts) if isinstance(node.op, ast.And) else Or(parts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return Not(self.cond(node.operand))
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Name | ast.Attribute):
            ref = self.field(node)
            if self.kinds.get(ref.name) not in ("bool", "any"):
                raise self.fail(
                    node,
                    f"{ref.name} is a {self.kinds.get(ref.name)}, not a condition; "
                    f"compare it, e.g. {ref.name} > 0",
                )
            return Truth(ref)
        raise self.fail(
            node, "expected a condition: a comparison, `in`, `and`, `or`, `not` or a flag"
        )

    def compare(self, node: ast.Compare) -> Cond:
        parts: list[Cond] = []
        left_node = node.left
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            if isinstance(op, ast.In | ast.NotIn):
                item = self.expr(left_node)
                if not isinstance(right_node, ast.List | ast.Tuple | ast.Set):
                    raise self.fail(right_node, "`in` takes a list of values: x in [1, 2]")
                options = tuple(self.constant(e) for e in right_node.elts)
                self.check_same_kind(node, item, [Const(o) for o in options])
                parts.append(In(item, options, negated=isinstance(op, ast.NotIn)))
            elif type(op) in COMPARE_OPS:
                left, right = self.expr(left_node), self.expr(right_node)
                symbol = COMPARE_OPS[type(op)]
                self.check_same_kind(node, left, [right], ordered=symbol not in ("==", "!="))
                parts.append(Compare(symbol, left, right))
            else:
                raise self.fail(node, f"unsupported comparison {type(op).__name__}")
            left_node = right_node
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def expr(self, node: ast.AST) -> Expr:
        if isinstance(node, ast.BinOp):
            if type(node.op) not in ARITH_OPS:
                raise self.fail(node, "arithmetic is + - * / only")
            left, right = self.expr(node.left), self.expr(node.right)
            for side in (left, right):
                if self.kind(side) not in ("number", "any"):
                    raise self.fail(node, "arithmetic needs numbers")
            return Arith(ARITH_OPS[type(node.op)], left, right)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            inner = self.expr(node.operand)
            if isinstance(inner, Const) and isinstance(inner.value, int | float):
                return Const(-inner.value)
            return Arith("-", Const(0), inner)
        if isinstance(node, ast.Name | ast.Attribute) and not (
            isinstance(node, ast.Name) and node.id in CONSTANT_NAMES
        ):
            return self.field(node)
        return Const(self.constant(node))

    def constant(self, node: ast.AST) -> Value:
        if isinstance(node, ast.Name) and node.id in CONSTANT_NAMES:
            return CONSTANT_NAMES[node.id]
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            inner = self.constant(node.operand)
            if isinstance(inner, int | float) and not isinstance(inner, bool):
                return -inner
        if isinstance(node, ast.Constant) and isinstance(node.value, bool | str):
            return node.value
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            number = wire_number(node.value)
            if number is None:
                raise self.fail(node, f"{node.value} is out of range (|x| < {LIMIT:.0e})")
            return number
        raise self.fail(node, "expected a number, a string in quotes, true or false")

    def field(self, node: ast.Name | ast.Attribute) -> Field:
        if isinstance(node, ast.Attribute):
            prefixes = (
                ("attr", "event") if any(k.startswith("event.") for k in self.kinds) else ("attr",)
            )
            if not (isinstance(node.value, ast.Name) and node.value.id in prefixes):
                said = " and ".join(f"{p}.<name>" for p in prefixes)
                raise self.fail(node, f"only {said} may use a dot")
            name = f"{node.value.id}.{node.attr}"
        else:
            name = node.id
        if name not in self.kinds:
            known = ", ".join(sorted(k for k in self.kinds if not k.startswith("attr.")))
            raise self.fail(node, f"unknown field {name!r}; fields are {known}, attr.<name>")
        self.fields.add(name)
        return Field(name)

    def kind(self, expr: Expr) -> Kind:
        if isinstance(expr, Field):
            return self.kinds[expr.name]
        if isinstance(expr, Arith):
            return "number"
        value = expr.value
        if isinstance(value, bool):
            return "bool"
        return "number" if isinstance(value, int | float) else "string"

    def check_same_kind(
        self, node: ast.AST, left: Expr, others: list[Expr], ordered: bool = False
    ) -> None:
        kinds = {self.kind(e) for e in [left, *others]} - {"any"}
        if len(kinds) > 1:
            raise self.fail(node, f"cannot compare {' with '.join(sorted(kinds))}")
        if ordered and kinds & {"bool", "string"}:
            raise self.fail(node, "text and true/false can only be compared with == or !=")


# --- the reference evaluator ----------------------------------------------------------------


def value_of(expr: Expr, facts: Mapping[str, Any]) -> Value:
    if isinstance(expr, Const):
        return expr.value
    if isinstance(expr, Field):
        return facts.get(expr.name)
    left, right = value_of(expr.left, facts), value_of(expr.right, facts)
    if not _is_number(left) or not _is_number(right):
        return None
    assert isinstance(left, int | float) and isinstance(right, int | float)
    if expr.op == "+":
        result = left + right
    elif expr.op == "-":
        result = left - right
    elif expr.op == "*":
        result = left * right
    elif right == 0:
        return None
    else:
        result = left / right
    return wire_number(result)


def _is_number(v: Value) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _comparable(a: Value, b: Value) -> bool:
    if a is None or b is None:
        return False
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    return _is_number(a) == _is_number(b)


def _compare(op: str, a: Value, b: Value) -> bool | None:
    if not _comparable(a, b):
        return None
    if op == "==":
        return a == b
    if op == "!=":
        return a != b
    if op == "<":
        return a < b  # type: ignore[operator]
    if op == "<=":
        return a <= b  # type: ignore[operator]
    if op == ">":
        return a > b  # type: ignore[operator]
    return a >= b  # type: ignore[operator]


def evaluate(cond: Cond, facts: Mapping[str, Any]) -> bool | None:
    """Kleene three-valued evaluation: True, False or None (unknown)."""
    if isinstance(cond, Compare):
        return _compare(cond.op, value_of(cond.left, facts), value_of(cond.right, facts))
    if isinstance(cond, In):
        item = value_of(cond.item, facts)
        results = [_compare("==", item, o) for o in cond.options]
        if any(r is True for r in results):
            hit: bool | None = True
        elif all(r is False for r in results):
            hit = False
        else:
            hit = None
        return (None if hit is None else not hit) if cond.negated else hit
    if isinstance(cond, Truth):
        return _compare("==", facts.get(cond.field.name), True)
    if isinstance(cond, Not):
        inner = evaluate(cond.operand, facts)
        return None if inner is None else not inner
    results = [evaluate(p, facts) for p in cond.parts]
    if isinstance(cond, And):
        if any(r is False for r in results):
            return False
        return True if all(r is True for r in results) else None
    if any(r is True for r in results):
        return True
    return False if all(r is False for r in results) else None


def holds(cond: Cond, facts: Mapping[str, Any]) -> bool:
    return evaluate(cond, facts) is True


def render(node: Cond | Expr) -> str:
    """The condition or expression as text (for explanations and generated names)."""
    if isinstance(node, Const):
        return repr(node.value) if isinstance(node.value, str) else str(node.value).lower()
    if isinstance(node, Field):
        return node.name
    if isinstance(node, Arith):
        return f"({render(node.left)} {node.op} {render(node.right)})"
    if isinstance(node, Compare):
        return f"{render(node.left)} {node.op} {render(node.right)}"
    if isinstance(node, In):
        opts = ", ".join(render(Const(o)) for o in node.options)
        return f"{render(node.item)} {'not in' if node.negated else 'in'} [{opts}]"
    if isinstance(node, Truth):
        return node.field.name
    if isinstance(node, Not):
        return f"not ({render(node.operand)})"
    joiner = " and " if isinstance(node, And) else " or "
    return "(" + joiner.join(render(p) for p in node.parts) + ")"
