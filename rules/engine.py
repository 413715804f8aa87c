"""durable_rules behind one door.

durable_rules (unmaintained since 2020) has sharp edges, and this module turns each into a
defined behaviour:

- **Not thread-safe, and its host starts timer threads** that dispatch actions in the
  background. Here the host's timers are never started; every call into the engine runs on
  one owner thread (a single-worker executor), which also drives dispatch itself.
- **MemoryError past 1,024 live sessions per ruleset.** Customers are evaluated in chunks of
  at most ``MAX_SESSIONS`` sessions (one per customer) and every session's state is deleted
  before the next chunk; the live count is checked.
- **Exceptions in actions are swallowed into session state.** Actions here are closures that
  catch everything themselves and record it; any error fails the whole chunk loudly.
- **MessageNotHandledException when nothing matches.** Each ruleset has a catch-all rule at
  the lowest priority: "no tier rule matched" becomes the explicit default tier.
- **Numbers with exponents are rejected** by its JSON reader: facts hold numbers normalised by
  ``rules.language.wire_number``.

Two rulesets per rule file version: ``tier`` posts each customer as an *event*, which the
highest-priority matching rule consumes (the tier decision); ``match`` asserts it as a
*fact*, which every matching segment and offer rule sees.

**Each class of customers is decided once.** The compiled conditions compare a field with a
few constants (``monthly_income > 30``, ``> 100``) or with another field. Two customers whose
values fall on the same side of every such constant, and agree on every other field a rule
reads, are told apart by no rule: durable_rules decides one of them, with values standing for
the class, and the answer is every such customer's (``FactClasses``). On the shipped rules a
base of a million customers falls into a few thousand classes, so durable_rules runs a few
thousand times instead of a million (``bench.rules_apply`` prints both). The property tests
check the classes against durable_rules on every customer and against the reference
semantics.
"""

from __future__ import annotations

import bisect
import itertools
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import durable_rules_engine
from durable import engine as durable

from rules.compiler import KEY, Computed, compile_condition, wire_name
from rules.language import Value, wire_number
from rules.model import Rules

MAX_SESSIONS = 1000
DEFAULT_RULE = "__default__"
MAX_CLASSES = 100_000  # decisions kept per engine; past this the cache starts again
_ids = itertools.count(1)


class RuleEngineError(RuntimeError):
    """durable_rules failed or misbehaved; nothing from the failed chunk is used."""


class _Host(durable.Host):
    def _run(self) -> None:
        """No background dispatch threads: the owner thread dispatches (see module doc)."""


@dataclass
class Match:
    key: str
    tier_rule: str = DEFAULT_RULE  # the tier rule that decided, or the default
    matched: list[str] = field(default_factory=list)  # "segment:<name>", "offer:<name>"


def _catch_all(priority: int | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"all": [{"m": {"$ex": {KEY: 1}}}]}
    if priority is not None:
        rule["pri"] = priority
    return rule


_ORDERING = frozenset({"$lt", "$lte", "$gt", "$gte"})
_OTHER = "\x00other"  # a string no rule names: stands for every string no rule names


@dataclass
class _Use:
    """How the compiled conditions use one fact key."""

    constants: set[Any] = field(default_factory=set)
    ordered: bool = False  # compared with <, <=, >, >=
    exact: bool = False  # compared with another field: its value is kept as it is
    numbers: list[float | int] | None = None  # the constants, sorted, if all are numbers
    strings: frozenset[str] | None = None  # the constants, if all are strings and unordered


class FactClasses:
    """Which values of a fact durable_rules can tell apart, learnt from the compiled rules.

    A number compared only with constants is replaced by a value standing for its interval
    between them (the constant itself when it equals one); a string compared only for
    equality by itself if a rule names it, else by one value for all the others; a key no
    rule reads is dropped. Anything else (a comparison of two fields, a condition shape this
    class does not know) keeps the value as it is, so the classes are never coarser than
    what the rules can see.
    """

    def __init__(self) -> None:
        self.uses: dict[str, _Use] = {}
        self.exact = False  # a condition shape not understood: no classes at all

    def learn(self, cond: Any) -> None:
        if not isinstance(cond, dict) or len(cond) != 1:
            self.exact = True
            return
        [(op, arg)] = cond.items()
        if op in ("$and", "$or") and isinstance(arg, list):
            for part in arg:
                self.learn(part)
        elif op == "$ex" and isinstance(arg, dict):
            for subject in arg:
                self.uses.setdefault(subject, _Use())
        elif op in _ORDERING or op == "$neq":
            if not isinstance(arg, dict) or len(arg) != 1:
                self.exact = True
                return
            [(subject, value)] = arg.items()
            self._compare(subject, value, ordered=op in _ORDERING)
        elif op.startswith("$"):
            self.exact = True
        else:
            self._compare(op, arg, ordered=False)

    def _compare(self, subject: str, value: Any, *, ordered: bool) -> None:
        use = self.uses.setdefault(subject, _Use())
        use.ordered = use.ordered or ordered
        if isinstance(value, dict):
            other = value.get("$m")
            if len(value) != 1 or not isinstance(other, str):
                self.exact = True
                return
            use.exact = True
            self.uses.setdefault(other, _Use()).exact = True
        else:
            use.constants.add((type(value), value))

    def seal(self) -> None:
        self.uses.pop(KEY, None)  # "the fact exists": every fact, whatever its values
        for use in self.uses.values():
            values = [v for _, v in use.constants]
            if all(t in (int, float) for t, _ in use.constants):
                use.numbers = sorted(set(values))
            elif all(t is str for t, _ in use.constants) and not use.ordered:
                use.strings = frozenset(values)
                if _OTHER in use.strings:
                    use.exact = True

    def key(self, fact: dict[str, Any]) -> tuple[Any, ...]:
        """What durable_rules can see of this fact: equal keys, equal decisions."""
        out = []
        for subject, use in self.uses.items():
            if subject not in fact:
                continue
            value = fact[subject]
            if not use.exact:
                value = self._stand_in(use, value)
            out.append((subject, type(value), value))
        return tuple(out)

    @staticmethod
    def _stand_in(use: _Use, value: Any) -> Any:
        if type(value) in (int, float) and use.numbers is not None:
            cs = use.numbers
            if not cs:
                return 0
            lo, hi = bisect.bisect_left(cs, value), bisect.bisect_right(cs, value)
            if lo != hi:
                return cs[lo]  # equal to a constant
            stand: float | int | None
            if lo == 0:
                stand = cs[0] - 1
            elif lo == len(cs):
                stand = cs[-1] + 1
            else:
                stand = (cs[lo - 1] + cs[lo]) / 2
            stand = wire_number(stand)
            # Same interval, or the value itself (never a coarser class than the truth).
            if stand is None or bisect.bisect_left(cs, stand) != lo or stand in cs:
                return value
            return stand
        if type(value) is str and use.strings is not None:
            return value if value in use.strings else _OTHER
        return value

    @staticmethod
    def fact_of(key: tuple[Any, ...]) -> dict[str, Any]:
        return {subject: value for subject, _, value in key}


class Engine:
    """The compiled rule file, evaluated by durable_rules on its own thread."""

    def __init__(self, rules: Rules, *, classes: bool = True) -> None:
        """``classes=False``: durable_rules decides every customer (see ``FactClasses``)."""
        self.rules = rules
        self.computed = Computed()
        self.classes = FactClasses()
        self.use_classes = classes
        self._decided: dict[tuple[Any, ...], tuple[str, tuple[str, ...]]] = {}
        self.evaluated = 0  # facts durable_rules decided (customers, or classes of them)
        self._owner = ThreadPoolExecutor(max_workers=1, thread_name_prefix="durable-rules")
        self._lock = threading.Lock()
        self._current: dict[str, Match] = {}
        self._errors: list[str] = []
        suffix = f"{rules.name}_{rules.version}_{next(_ids)}"
        self.tier_ruleset = f"tier_{suffix}"
        self.match_ruleset = f"match_{suffix}"
        self._owner.submit(self._create).result()

    # -- definitions (owner thread) ----------------------------------------------------------

    def _create(self) -> None:
        tiers: dict[str, Any] = {}
        ordered = self.rules.tier_rules()
        for rank, rule in enumerate(ordered, start=1):
            cond = compile_condition(self.rules.conditions[f"tier:{rule.name}"].tree, self.computed)
            if cond is None:
                continue  # can never hold
            self.classes.learn(cond)
            tiers[f"r{rank}"] = {
                "all": [{"m": cond}],
                "pri": rank,
                "run": self._action("_decide_tier", rule.name),
            }
        tiers["fallback"] = {
            **_catch_all(len(ordered) + 1),
            "run": self._action("_decide_tier", DEFAULT_RULE),
        }
        matches: dict[str, Any] = {}
        names = [f"segment:{s.name}" for s in self.rules.spec.segments]
        names += [f"offer:{o.name}" for o in self.rules.spec.offers]
        for i, name in enumerate(names):
            cond = compile_condition(self.rules.conditions[name].tree, self.computed)
            if cond is None:
                continue
            self.classes.learn(cond)
            matches[f"r{i}"] = {"all": [{"m": cond}], "run": self._action("_record_match", name)}
        matches["seen"] = {**_catch_all(), "run": self._action("_seen", "")}
        self.classes.seal()
        self.use_classes = self.use_classes and not self.classes.exact
        # The class of a customer straight from its values (the fields the rules read, then
        # the lifted arithmetic), without building the whole fact first.
        fields = {wire_name(f): f for c in self.rules.conditions.values() for f in c.fields}
        self._reads = [(s, fields[s], use) for s, use in self.classes.uses.items() if s in fields]
        known = set(fields) | set(self.computed.expressions)
        self._direct = all(s in known for s in self.classes.uses)
        self._host = _Host({self.tier_ruleset: tiers, self.match_ruleset: matches})
        self._tier = self._host.get_ruleset(self.tier_ruleset)
        self._match = self._host.get_ruleset(self.match_ruleset)

    def _action(self, handler: str, name: str) -> Callable[[Any], None]:
        def action(c: Any) -> None:  # durable_rules calls it with one argument: synchronous
            try:
                getattr(self, handler)(str(c.m[KEY]), name)
            except Exception as exc:  # never let durable_rules swallow it into state
                self._errors.append(f"{name or 'catch-all'}: {type(exc).__name__}: {exc}")

        return action

    def _seen(self, key: str, _name: str) -> None:
        """The catch-all of the match ruleset: every fact is handled by something."""

    def _decide_tier(self, key: str, rule: str) -> None:
        self._current[key].tier_rule = rule

    def _record_match(self, key: str, name: str) -> None:
        # A rule with `or` matches once per branch that holds: record it once.
        matched = self._current[key].matched
        if name not in matched:
            matched.append(name)

    # -- evaluation --------------------------------------------------------------------------

    def facts_for(self, key: str, values: dict[str, Value]) -> dict[str, Any]:
        """The fact durable_rules sees: wire names, lifted arithmetic, a session per key."""
        fact: dict[str, Any] = {wire_name(k): v for k, v in values.items() if v is not None}
        fact.update(self.computed.values(values))
        fact[KEY] = key
        fact["sid"] = key
        return fact

    def classify(self, customers: list[tuple[str, dict[str, Value]]]) -> list[Match]:
        """Evaluate (key, features) pairs; chunks keep live sessions under the limit."""
        keys = [key for key, _ in customers]
        if len(set(keys)) != len(keys):
            raise RuleEngineError("the same customer appears twice in one evaluation")
        if not self.use_classes:
            return self._evaluate([self.facts_for(key, values) for key, values in customers])
        classes = [self._class_of(key, values) for key, values in customers]
        with self._lock:
            known = {c: self._decided[c] for c in set(classes) if c in self._decided}
        unknown = list(dict.fromkeys(c for c in classes if c not in known))
        if unknown:
            facts = []
            for i, cls in enumerate(unknown):
                fact = FactClasses.fact_of(cls)
                fact[KEY] = fact["sid"] = f"class{i}"
                facts.append(fact)
            decided = {
                cls: (match.tier_rule, tuple(match.matched))
                for cls, match in zip(unknown, self._evaluate(facts), strict=True)
            }
            known.update(decided)
            with self._lock:  # only after the whole evaluation succeeded
                if len(self._decided) + len(decided) > MAX_CLASSES:
                    self._decided.clear()
                self._decided.update(decided)
        return [
            Match(key, known[cls][0], list(known[cls][1]))
            for key, cls in zip(keys, classes, strict=True)
        ]

    def _class_of(self, key: str, values: dict[str, Value]) -> tuple[Any, ...]:
        if not self._direct:
            return self.classes.key(self.facts_for(key, values))
        out = []
        for subject, name, use in self._reads:
            value = values.get(name)
            if value is None:
                continue
            if not use.exact:
                value = FactClasses._stand_in(use, value)
            out.append((subject, type(value), value))
        if self.computed.expressions:
            for subject, value in self.computed.values(values).items():
                lifted = self.classes.uses.get(subject)
                if lifted is None:
                    continue
                if not lifted.exact:
                    value = FactClasses._stand_in(lifted, value)
                out.append((subject, type(value), value))
        return tuple(out)

    def _evaluate(self, facts: list[dict[str, Any]]) -> list[Match]:
        results: list[Match] = []
        for start in range(0, len(facts), MAX_SESSIONS):
            chunk = facts[start : start + MAX_SESSIONS]
            with self._lock:
                results.extend(self._owner.submit(self._run_chunk, chunk).result())
                self.evaluated += len(chunk)
        return results

    def _run_chunk(self, facts: list[dict[str, Any]]) -> list[Match]:
        keys = [f[KEY] for f in facts]
        if len(set(keys)) != len(keys):
            raise RuleEngineError("the same customer appears twice in one evaluation")
        self._current = {k: Match(k) for k in keys}
        self._errors = []
        try:
            self._post(self._tier, self._host.post_batch, self.tier_ruleset, facts)
            self._post(self._match, self._host.assert_facts, self.match_ruleset, facts)
        finally:
            for key in keys:
                for ruleset in (self._tier, self._match):
                    ruleset.delete_state(key)
        if self._errors:
            raise RuleEngineError(f"a rule action failed: {self._errors[0]}")
        results = [self._current[k] for k in keys]
        self._current = {}
        return results

    def _post(
        self,
        ruleset: Any,
        post: Callable[[str, list[dict[str, Any]]], Any],
        name: str,
        facts: list[dict[str, Any]],
    ) -> None:
        try:
            post(name, facts)
        except durable.MessageNotHandledException:
            raise RuleEngineError(
                f"{name}: a customer matched no rule, not even the catch-all"
            ) from None
        except Exception as exc:
            raise RuleEngineError(f"{name}: durable_rules failed: {exc}") from exc
        self._drain(ruleset)

    def _drain(self, ruleset: Any) -> None:
        """Run the actions of every session the batch made ready, here, on this thread."""
        failures: list[Any] = []

        def done(error: Any, _state: Any) -> None:
            if error:
                failures.append(error)

        while True:
            result = durable_rules_engine.start_action(ruleset._handle)
            if not result:
                break
            ruleset._flush_actions(
                json.loads(result[0]), {"message": json.loads(result[1])}, result[2], done
            )
        if failures:
            raise RuleEngineError(f"durable_rules action dispatch failed: {failures[0]}")

    def close(self) -> None:
        def drop() -> None:
            for ruleset in (self._tier, self._match):
                durable_rules_engine.delete_ruleset(ruleset._handle)

        self._owner.submit(drop).result()
        self._owner.shutdown()
