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
"""

from __future__ import annotations

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
from rules.language import Value
from rules.model import Rules

MAX_SESSIONS = 1000
DEFAULT_RULE = "__default__"
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


class Engine:
    """The compiled rule file, evaluated by durable_rules on its own thread."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        self.computed = Computed()
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
            matches[f"r{i}"] = {"all": [{"m": cond}], "run": self._action("_record_match", name)}
        matches["seen"] = {**_catch_all(), "run": self._action("_seen", "")}
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
        results: list[Match] = []
        for start in range(0, len(customers), MAX_SESSIONS):
            chunk = customers[start : start + MAX_SESSIONS]
            facts = [self.facts_for(key, values) for key, values in chunk]
            with self._lock:
                results.extend(self._owner.submit(self._run_chunk, facts).result())
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
