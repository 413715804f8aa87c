"""Tiering throughput: the project's pipeline, raw durable_rules and plain Python, same rules.

- pipeline: generated customer records (profile, consent, history) -> features -> ranking
  flags -> durable_rules (rules.engine) -> decisions (tier, segments, offers), in chunks;
- raw durable_rules: the same compiled rulesets, ``post_batch``/``assert_facts`` of facts
  prepared beforehand, actions that only count; nothing else;
- plain Python: the reference evaluator on the same features, tier rules in priority order.

Then the pipeline's peak memory for a small and a large base, each in its own process, so
that streaming (flat memory) shows.

    python -m bench.rules [--customers 100000] [--memory 100000,1000000]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import durable_rules_engine

from clientela import ROOT
from rules.decide import decide
from rules.engine import DEFAULT_RULE, MAX_SESSIONS, Engine, Match, _Host
from rules.features import History, compute, with_attributes
from rules.language import Value, holds
from rules.model import Rules, load

TODAY = date(2026, 11, 22)
CHUNK = MAX_SESSIONS


def customers(
    n: int, seed: int = 1
) -> Iterator[tuple[str, dict[str, Any], dict[str, bool], History]]:
    rng = random.Random(seed)
    for i in range(n):
        basic = rng.choice([15, 25, 40, 60])
        history = History(
            purchases_12m=rng.choice([0, 0, 1, 2, 4, 8, 12]),
            messages_12m=rng.randrange(0, 20),
            responses_12m=rng.randrange(0, 3),
        )
        history.spend_12m = history.purchases_12m * rng.uniform(10, 200)
        if history.purchases_12m:
            history.last_purchase = TODAY - timedelta(days=rng.randrange(1, 365))
        profile = {
            "locale": rng.choice(["en", "es"]),
            "timezone": "Europe/Madrid",
            "preferred_channel": rng.choice(["email", "sms"]),
            "email": "x@example.com",
            "phone": "+34600000000" if rng.random() < 0.6 else None,
            "birthday": date(1960, 1, 1) + timedelta(days=rng.randrange(0, 15000)),
            "signup_date": TODAY - timedelta(days=rng.randrange(0, 2000)),
            "attributes": {
                "basic_charge": basic,
                "usage": round(basic * rng.lognormvariate(0.1, 0.5), 2),
                "plan": rng.choice(["prepaid", "postpaid"]),
            },
        }
        yield f"c{i}", profile, {"email": True, "sms": rng.random() < 0.5}, history


def features(
    rules: Rules, n: int, thresholds: dict[str, float]
) -> Iterator[tuple[str, dict[str, Value]]]:
    for key, profile, consent, history in customers(n):
        values = compute(profile, consent, history, TODAY)
        values = with_attributes(values, profile["attributes"], rules.spec.attributes)
        for name, parsed in rules.rankings.items():
            v = parsed.tree.left  # type: ignore[union-attr]
            from rules.language import value_of

            x = value_of(v, values)
            if isinstance(x, int | float):
                values[name] = x >= thresholds[name]
        yield key, values


def chunks(it: Iterator[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in it:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


THRESHOLDS = {"def3_top_excess": 20.0, "def4_top_excess_ratio": 0.9}


def run_pipeline(rules: Rules, n: int) -> tuple[float, dict[str, int]]:
    engine = Engine(rules)
    tiers: dict[str, int] = {}
    start = time.perf_counter()
    for chunk in chunks(features(rules, n, THRESHOLDS), CHUNK):
        for match in engine.classify(chunk):
            tier = decide(rules, match).tier
            tiers[tier] = tiers.get(tier, 0) + 1
    elapsed = time.perf_counter() - start
    engine.close()
    return elapsed, tiers


def run_raw(rules: Rules, n: int) -> tuple[float, dict[str, int]]:
    """The same rulesets and facts straight into durable_rules; actions only count."""
    compiled = Engine(rules)  # only to reuse its compiled definitions and lifted arithmetic
    tier_def = compiled._host.get_ruleset(compiled.tier_ruleset).get_definition()
    match_def = compiled._host.get_ruleset(compiled.match_ruleset).get_definition()
    counts: dict[str, int] = {}

    def counter(name: str) -> Any:
        def action(c: Any) -> None:
            counts[name] = counts.get(name, 0) + 1

        return action

    tier_rs = {k: {**v, "run": counter(k)} for k, v in tier_def.items()}
    match_rs = {k: {**v, "run": counter("m")} for k, v in match_def.items()}
    host = _Host({"raw_tier": tier_rs, "raw_match": match_rs})
    tier, match = host.get_ruleset("raw_tier"), host.get_ruleset("raw_match")
    prepared = [
        [compiled.facts_for(k, v) for k, v in chunk]
        for chunk in chunks(features(rules, n, THRESHOLDS), CHUNK)
    ]

    def drain(ruleset: Any) -> None:
        while result := durable_rules_engine.start_action(ruleset._handle):
            ruleset._flush_actions(
                json.loads(result[0]),
                {"message": json.loads(result[1])},
                result[2],
                lambda e, s: None,
            )

    start = time.perf_counter()
    for facts in prepared:
        host.post_batch("raw_tier", facts)
        drain(tier)
        host.assert_facts("raw_match", facts)
        drain(match)
        for f in facts:
            tier.delete_state(f["sid"])
            match.delete_state(f["sid"])
    elapsed = time.perf_counter() - start
    compiled.close()
    return elapsed, counts


def run_python(rules: Rules, n: int) -> tuple[float, dict[str, int]]:
    ordered = rules.tier_rules()
    others = [k for k in rules.conditions if not k.startswith("tier:")]
    tiers: dict[str, int] = {}
    start = time.perf_counter()
    for key, values in features(rules, n, THRESHOLDS):
        rule = next(
            (r.name for r in ordered if holds(rules.conditions[f"tier:{r.name}"].tree, values)),
            DEFAULT_RULE,
        )
        matched = [k for k in others if holds(rules.conditions[k].tree, values)]
        tier = decide(rules, Match(key, rule, matched)).tier
        tiers[tier] = tiers.get(tier, 0) + 1
    return time.perf_counter() - start, tiers


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited on fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_child(n: int) -> None:
    rules = load(ROOT / "rules" / "crm.yaml")
    before = peak_rss_mb()
    elapsed, _ = run_pipeline(rules, n)
    print(json.dumps({"n": n, "before_mb": before, "peak_mb": peak_rss_mb(), "seconds": elapsed}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--memory", default="100000,1000000", help="base sizes, '' to skip")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    rules = load(ROOT / "rules" / "crm.yaml")
    n = args.customers
    results = {
        "pipeline (features + durable_rules + decisions)": run_pipeline(rules, n),
        "raw durable_rules (post_batch, same rules)": run_raw(rules, n),
        "plain Python (reference evaluator)": run_python(rules, n),
    }
    print(f"tiering {n} generated customers with rules/crm.yaml, one process, {date.today()}")
    rates = {}
    for label, (elapsed, _) in results.items():
        rates[label] = n / elapsed
        print(f"  {label:52} {n / elapsed:>10,.0f} customers/s")
    pipeline, raw, plain = rates.values()
    print(f"  ratio pipeline / raw durable_rules: {pipeline / raw:.2f}  (target 0.8 or more)")
    print(f"  ratio pipeline / plain Python:      {pipeline / plain:.2f}")
    tiers = results["pipeline (features + durable_rules + decisions)"][1]
    python_tiers = results["plain Python (reference evaluator)"][1]
    print(
        f"  tier mix {dict(sorted(tiers.items()))}; same as plain Python: {tiers == python_tiers}"
    )
    sizes = [int(s) for s in args.memory.split(",") if s]
    for size in sizes:
        out = subprocess.run(
            [sys.executable, "-m", "bench.rules", "--memory-child", str(size)],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        m = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"  peak memory, pipeline over {size:>9,} customers: {m['peak_mb']:7.1f} MB "
            f"(at start {m['before_mb']:.1f} MB, {size / m['seconds']:,.0f} customers/s)"
        )


if __name__ == "__main__":
    main()
