"""The condition language and the durable_rules engine against the plain-Python reference."""

from __future__ import annotations

import textwrap
from datetime import date
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clientela import ROOT
from rules.decide import decide
from rules.engine import DEFAULT_RULE, MAX_SESSIONS, Engine, RuleEngineError
from rules.language import ConditionError, evaluate, holds, parse
from rules.model import load, loads

KINDS: dict[str, Any] = {"a": "number", "b": "number", "s": "string", "f": "bool"}

# --- the reference semantics ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "facts", "expected"),
    [
        ("a > 1", {"a": 2}, True),
        ("a > 1", {}, None),
        ("not a > 1", {}, None),  # unknown stays unknown under not
        ("a > 1 or b > 1", {"b": 2}, True),
        ("a > 1 and b > 1", {"b": 0}, False),
        ("a > 1 and b > 1", {"b": 2}, None),
        ("1 < a <= 3", {"a": 3}, True),
        ("a / b > 1", {"a": 1, "b": 0}, None),  # division by zero is unknown
        ("a + b * 2 == 7", {"a": 1, "b": 3}, True),
        ("s in ['x', 'y']", {"s": "y"}, True),
        ("s not in ['x', 'y']", {}, None),
        ("f", {"f": True}, True),
        ("not f", {"f": False}, True),
        ("-a < -1", {"a": 2}, True),
    ],
)
def test_reference_semantics(text: str, facts: dict[str, Any], expected: bool | None) -> None:
    assert evaluate(parse(text, KINDS).tree, facts) is expected


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("a >", "syntax error: the condition ends too early", 4),
        ("a > > 1", "syntax error: invalid syntax", 5),
        ("zz > 1", "unknown field 'zz'", 1),
        ("a > 'x'", "cannot compare number with string", 1),
        ("s < 'x'", "only be compared with == or !=", 1),
        ("a", "a is a number, not a condition", 1),
        ("a in b", "`in` takes a list of values", 6),
        ("a ** 2 > 1", "arithmetic is + - * / only", 1),
        ("attr.x > 1", "unknown field 'attr.x'", 1),
        ("a > 1e20", "out of range", 5),
        ("f and a.b > 1", "only attr.<name> may use a dot", 7),
    ],
)
def test_condition_errors_name_the_column(text: str, message: str, column: int) -> None:
    with pytest.raises(ConditionError) as err:
        parse(text, KINDS)
    assert message in err.value.message and err.value.column == column


# --- engine == reference, on random rules and random customers ------------------------------

number = st.one_of(st.integers(-5, 5), st.sampled_from([0.5, 2.25, -1.5]))
leaf = st.one_of(
    st.builds(
        lambda field, op, n: f"{field} {op} {n}",
        st.sampled_from(
            [
                "attr.a",
                "attr.b",
                "attr.a + attr.b",
                "attr.a * 2",
                "attr.a - attr.b",
                "attr.a / attr.b",
            ]
        ),
        st.sampled_from(["==", "!=", "<", "<=", ">", ">="]),
        number,
    ),
    st.builds(lambda op: f"attr.a {op} attr.b", st.sampled_from(["==", "!=", "<", ">="])),
    st.builds(
        lambda neg, opts: f"attr.s {'not in' if neg else 'in'} {opts!r}",
        st.booleans(),
        st.lists(st.sampled_from(["x", "y", "z"]), max_size=3),
    ),
    st.sampled_from(["attr.f", "not attr.f", "attr.f == false", "attr.s == 'x'", "attr.s != 'y'"]),
)
condition = st.recursive(
    leaf,
    lambda inner: st.one_of(
        st.builds(lambda x, y: f"({x}) and ({y})", inner, inner),
        st.builds(lambda x, y: f"({x}) or ({y})", inner, inner),
        st.builds(lambda x: f"not ({x})", inner),
    ),
    max_leaves=6,
)
customer = st.fixed_dictionaries(
    {},
    optional={
        "attr.a": number,
        "attr.b": number,
        "attr.s": st.sampled_from(["x", "y", "w"]),
        "attr.f": st.booleans(),
    },
)
DECLARED = "attributes: {a: number, b: number, s: string, f: bool}"


def rule_file(tiers: list[str], segments: list[str]) -> str:
    tier_rules = "".join(
        f"""
    - name: t{i}
      owner: test
      priority: {100 - i}
      when: "{cond}"
      tier: {"AB"[i % 2]}"""
        for i, cond in enumerate(tiers)
    )
    segment_rules = "".join(
        f"""
  - name: s{i}
    owner: test
    when: "{cond}\""""
        for i, cond in enumerate(segments)
    )
    policy = "{channels: [email], service_level: {complaint_response_hours: 1}}"
    return textwrap.dedent(
        f"""\
ruleset: prop
owner: test
{DECLARED}
tiers:
  levels: [A, B, C]
  default: C
  rules:{tier_rules or " []"}
segments:{segment_rules or " []"}
policies:
  A: {policy}
  B: {policy}
  C: {policy}
"""
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tiers=st.lists(condition, min_size=1, max_size=3),
    segments=st.lists(condition, max_size=3),
    customers=st.lists(customer, min_size=1, max_size=20),
)
def test_engine_decides_as_the_reference(
    tiers: list[str], segments: list[str], customers: list[dict[str, Any]]
) -> None:
    rules = loads(rule_file(tiers, segments))
    engine = Engine(rules)
    try:
        matches = engine.classify([(f"c{i}", facts) for i, facts in enumerate(customers)])
    finally:
        engine.close()
    for facts, match in zip(customers, matches, strict=True):
        expected_tier = next(
            (
                r.name
                for r in rules.tier_rules()
                if holds(rules.conditions[f"tier:{r.name}"].tree, facts)
            ),
            DEFAULT_RULE,
        )
        expected_segments = {
            f"segment:s{i}"
            for i in range(len(segments))
            if holds(rules.conditions[f"segment:s{i}"].tree, facts)
        }
        assert match.tier_rule == expected_tier, (facts, tiers)
        assert set(match.matched) == expected_segments, (facts, segments)


# --- the failure modes of durable_rules, made behaviour -------------------------------------

SIMPLE = rule_file(["attr.a > 1"], ["attr.b > 1"])


def test_more_customers_than_durable_rules_has_sessions() -> None:
    engine = Engine(loads(SIMPLE), classes=False)  # durable_rules sees every customer
    try:
        count = MAX_SESSIONS * 2 + 500  # 2,500: past the 1,024 live-session limit
        customers = [(f"c{i}", {"attr.a": i % 3, "attr.b": i % 4}) for i in range(count)]
        matches = engine.classify(customers)
    finally:
        engine.close()
    assert len(matches) == count
    assert [m.key for m in matches] == [k for k, _ in customers]
    assert sum(m.tier_rule == "t0" for m in matches) == sum(1 for i in range(count) if i % 3 > 1)
    assert engine.evaluated == count


def test_more_classes_than_durable_rules_has_sessions() -> None:
    # Two fields compared with each other keep their values: every customer is a class.
    engine = Engine(loads(rule_file(["attr.a > attr.b"], ["attr.b > 1"])))
    try:
        count = MAX_SESSIONS * 2 + 500
        customers = [(f"c{i}", {"attr.a": i, "attr.b": count - i}) for i in range(count)]
        matches = engine.classify(customers)
        assert engine.evaluated == count
        again = engine.classify(customers[:10])  # decided already: durable_rules not asked
        assert engine.evaluated == count
    finally:
        engine.close()
    assert [m.tier_rule == "t0" for m in matches] == [i > count - i for i in range(count)]
    assert [m.matched for m in matches] == [
        ["segment:s0"] if count - i > 1 else [] for i in range(count)
    ]
    assert [(m.key, m.tier_rule, m.matched) for m in again] == [
        (m.key, m.tier_rule, m.matched) for m in matches[:10]
    ]


# Values anywhere, not only near the constants: the classes must never merge two customers
# that durable_rules, asked about each of them, tells apart.
wide = st.one_of(
    number,
    st.integers(-1000, 1000),
    st.floats(-50, 50, allow_nan=False).map(lambda x: round(x, 4)),
)
wide_customer = st.fixed_dictionaries(
    {},
    optional={
        "attr.a": wide,
        "attr.b": wide,
        "attr.s": st.sampled_from(["x", "y", "w", "", "other", "\x00other"]),
        "attr.f": st.booleans(),
    },
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tiers=st.lists(condition, min_size=1, max_size=3),
    segments=st.lists(condition, max_size=3),
    customers=st.lists(wide_customer, min_size=1, max_size=30),
)
def test_classes_decide_as_durable_rules_on_every_customer(
    tiers: list[str], segments: list[str], customers: list[dict[str, Any]]
) -> None:
    rules = loads(rule_file(tiers, segments))
    by_class, exact = Engine(rules), Engine(rules, classes=False)
    try:
        batch = [(f"c{i}", facts) for i, facts in enumerate(customers)]
        got, want = by_class.classify(batch), exact.classify(batch)
    finally:
        by_class.close()
        exact.close()
    for facts, g, w in zip(customers, got, want, strict=True):
        assert (g.key, g.tier_rule, sorted(g.matched)) == (w.key, w.tier_rule, sorted(w.matched)), (
            facts,
            tiers,
            segments,
        )
    assert by_class.evaluated <= exact.evaluated == len(customers)


def test_the_shipped_rules_fall_into_few_classes() -> None:
    rules = load(ROOT / "rules" / "crm.yaml")
    engine = Engine(rules)
    try:
        customers = [
            (
                f"c{i}",
                {
                    "monthly_income": (i * 7.31) % 250,
                    "tenure_months": i % 60,
                    "newbie": i % 60 < 12,
                    "excess_ratio": ((i * 3.7) % 200) / 100 - 0.5,
                    "response_rate": (i % 21) / 20,
                    "recency_days": i % 400,
                    "purchases_12m": i % 4,
                    "def3_top_excess": i % 10 == 0,
                    "def4_top_excess_ratio": i % 10 == 1,
                },
            )
            for i in range(5000)
        ]
        matches = engine.classify(customers)
    finally:
        engine.close()
    exact = Engine(rules, classes=False)
    try:
        assert [(m.tier_rule, sorted(m.matched)) for m in matches] == [
            (m.tier_rule, sorted(m.matched)) for m in exact.classify(customers)
        ]
    finally:
        exact.close()
    assert engine.evaluated < len(customers) / 2


def test_no_match_is_the_default_tier() -> None:
    engine = Engine(loads(SIMPLE))
    try:
        [match] = engine.classify([("c1", {"attr.a": 0})])
    finally:
        engine.close()
    assert match.tier_rule == DEFAULT_RULE and match.matched == []


def test_an_action_error_is_raised_not_swallowed() -> None:
    engine = Engine(loads(SIMPLE))

    def broken(key: str, name: str) -> None:
        raise RuntimeError("disk full")

    engine._record_match = broken  # type: ignore[method-assign]
    try:
        with pytest.raises(RuleEngineError, match="disk full"):
            engine.classify([("c1", {"attr.a": 5, "attr.b": 5})])
        # The engine is still usable afterwards, and left no session behind.
        del engine._record_match  # back to the class's method
        [match] = engine.classify([("c1", {"attr.a": 5, "attr.b": 5})])
        assert match.tier_rule == "t0" and match.matched == ["segment:s0"]
    finally:
        engine.close()


def test_calls_from_many_threads_are_serialised() -> None:
    from concurrent.futures import ThreadPoolExecutor

    engine = Engine(loads(SIMPLE))
    try:
        batches = [[(f"t{t}-{i}", {"attr.a": i % 3}) for i in range(300)] for t in range(6)]
        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(engine.classify, batches))
    finally:
        engine.close()
    for batch, matches in zip(batches, results, strict=True):
        assert [m.key for m in matches] == [k for k, _ in batch]
        assert all(
            (m.tier_rule == "t0") == (v["attr.a"] > 1)
            for (_, v), m in zip(batch, matches, strict=True)
        )


@pytest.mark.parametrize(
    ("messages", "responses", "never", "always"),
    [(2, 0, None, None), (3, 0, True, False), (4, 2, False, False), (3, 3, False, True)],
)
def test_never_and_always_responding_need_three_messages(
    messages: int, responses: int, never: bool | None, always: bool | None
) -> None:
    from datetime import date

    from rules.features import History, compute

    out = compute(
        {}, {}, History(messages_12m=messages, responses_12m=responses), date(2026, 11, 22)
    )
    assert (out.get("never_responds"), out.get("always_responds")) == (never, always)


@pytest.mark.parametrize(
    ("billed", "spend", "tenure_start", "income", "tier"),
    [
        # The demo's customer 00127: billed 59.13 a month, then a 45.50 conversion.
        (59.13, 45.50, date(2023, 5, 1), 62.92, "B"),
        (59.13, None, date(2023, 5, 1), 59.13, "B"),
        (None, 45.50, date(2023, 5, 1), 3.79, "C"),  # purchases alone, over 12 months
        (None, 600.0, date(2026, 7, 1), 150.0, "A"),  # four months' tenure: over four
        (120.0, 10.0, date(2023, 5, 1), 120.83, "A"),
    ],
)
def test_billed_income_and_purchases_add_up(
    billed: float | None, spend: float | None, tenure_start: date, income: float, tier: str
) -> None:
    """docs/rules.md: monthly income is the imported bill plus purchases spread per month;
    a purchase never replaces the bill (it once moved most buyers to the lowest tier)."""
    from rules.features import History, compute

    attributes = {} if billed is None else {"monthly_income": billed}
    history = History(purchases_12m=1 if spend else 0, spend_12m=spend or 0.0)
    profile = {"attributes": attributes, "signup_date": tenure_start}
    out = compute(profile, {}, history, date(2026, 11, 22))
    assert round(out["monthly_income"], 2) == income
    rules = load(ROOT / "rules" / "crm.yaml")
    engine = Engine(rules)
    try:
        [match] = engine.classify([("c", out)])
    finally:
        engine.close()
    assert decide(rules, match).tier == tier
