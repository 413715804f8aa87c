"""Applying rules to customers: versions, runs, rankings, decisions and tier history."""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import bindparam, delete, func, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from clientela.timeutil import as_utc, utcnow
from models import Customer, CustomerDecision, RankingValue, RuleRun, RuleVersion, TierChange
from rules.data import consents_of, customer_page, histories_of, profile_of
from rules.decide import Decision, decide, explain
from rules.engine import DEFAULT_RULE, Engine
from rules.features import ALL_SOURCES, compute, sources_of, with_attributes
from rules.language import Compare, Value, value_of
from rules.model import Rules, loads

_lock = threading.Lock()
_rules: dict[str, Rules] = {}
_engines: dict[str, Engine] = {}


def rules_of(version: RuleVersion) -> Rules:
    with _lock:
        if version.digest not in _rules:
            _rules[version.digest] = loads(version.source, version.path or version.ruleset)
        return _rules[version.digest]


def engine_for(rules: Rules) -> Engine:
    """One engine per rule version per process (durable_rules rulesets live for the process)."""
    with _lock:
        if rules.digest not in _engines:
            _engines[rules.digest] = Engine(rules)
        return _engines[rules.digest]


def register(session: Session, rules: Rules, created_by: str = "") -> RuleVersion:
    """Store this version of the rule file (once: versions are keyed by content)."""
    found = session.exec(select(RuleVersion).where(RuleVersion.digest == rules.digest)).first()
    if found is not None:
        return found
    row = RuleVersion(
        ruleset=rules.name,
        digest=rules.digest,
        source=rules.source,
        path=rules.path,
        created_by=created_by,
    )
    session.add(row)
    session.flush()
    return row


def version_by_digest(session: Session, digest: str) -> RuleVersion:
    row = session.exec(
        select(RuleVersion).where(col(RuleVersion.digest).startswith(digest))
    ).first()
    if row is None:
        raise LookupError(f"no rule version {digest!r}; apply a rule file first")
    return row


# --- features -------------------------------------------------------------------------------


def _ranking_value(rules: Rules, name: str, features: dict[str, Value]) -> Value:
    tree = rules.rankings[name].tree
    assert isinstance(tree, Compare)
    return value_of(tree.left, features)


def features_of(
    session: Session,
    rules: Rules,
    customers: list[Customer],
    today: date,
    thresholds: dict[str, Any] | None,
    fields: set[str] | None = None,
) -> list[tuple[Customer, dict[str, Value]]]:
    """Every field the rules may use, for each customer (rankings need thresholds).

    ``fields``: only these are wanted; the history that none of them needs is not read (the
    others come out as for a customer without that history)."""
    ids = [c.id for c in customers if c.id is not None]
    parts = ALL_SOURCES if fields is None else sources_of(fields)
    consents = consents_of(session, ids) if "consents" in parts else {}
    histories = histories_of(session, ids, today, parts=parts)
    out = []
    for c in customers:
        assert c.id is not None
        values = compute(profile_of(c), consents.get(c.id, {}), histories[c.id], today)
        values = with_attributes(values, c.attributes or {}, rules.spec.attributes)
        if thresholds is not None:
            for name in rules.rankings:
                value, threshold = _ranking_value(rules, name, values), thresholds.get(name)
                if isinstance(value, int | float) and isinstance(threshold, int | float):
                    values[name] = value >= threshold
        out.append((c, values))
    return out


# --- runs -----------------------------------------------------------------------------------


def start_run(session: Session, version: RuleVersion) -> RuleRun:
    assert version.id is not None
    run = RuleRun(rule_version_id=version.id)
    session.add(run)
    session.flush()
    return run


def rank(
    session: Session, run: RuleRun, rules: Rules, today: date, page: int = 2000
) -> dict[str, Any]:
    """Compute each ranking's threshold over the whole base, in this process."""
    if not rules.rankings:
        run.thresholds = {}
        session.add(run)
        return {}
    session.execute(delete(RankingValue).where(col(RankingValue.run_id) == run.id))
    after = 0
    while True:
        last, processed = rank_page(
            session, run=run, rules=rules, after_id=after, limit=page, today=today
        )
        if not processed:
            break
        after = last
    return set_thresholds(session, run, rules)


def rank_page(
    session: Session,
    *,
    run: RuleRun,
    rules: Rules,
    after_id: int,
    limit: int,
    today: date,
    until_id: int | None = None,
    again: bool = False,
) -> tuple[int, int]:
    """Store the ranking values of the next page of customers: (last id, how many).

    ``again``: the page may have been stored already (a retried activity): its rows are
    replaced, never doubled."""
    batch = customer_page(session, after_id=after_id, limit=limit, until_id=until_id)
    if not batch:
        return after_id, 0
    ids = [c.id for c in batch]
    if again:
        session.execute(
            delete(RankingValue).where(
                col(RankingValue.run_id) == run.id,
                col(RankingValue.name).in_(list(rules.rankings)),
                col(RankingValue.customer_id).in_(ids),
            )
        )
    rows = []
    wanted = set().union(*(rules.rankings[name].fields for name in rules.rankings))
    for customer, values in features_of(
        session, rules, batch, today, thresholds=None, fields=wanted
    ):
        for name in rules.rankings:
            value = _ranking_value(rules, name, values)
            if isinstance(value, int | float):
                rows.append(
                    {"run_id": run.id, "name": name, "customer_id": customer.id, "value": value}
                )
    if rows:
        session.execute(RankingValue.__table__.insert(), rows)  # type: ignore[attr-defined]
    session.commit()
    return ids[-1], len(batch)


def set_thresholds(session: Session, run: RuleRun, rules: Rules) -> dict[str, Any]:
    """Each ranking's threshold from the stored values; the database does the sorting."""
    thresholds: dict[str, Any] = {}
    for name, ranking in rules.spec.rankings.items():
        known = session.exec(
            select(func.count())
            .select_from(RankingValue)
            .where(RankingValue.run_id == run.id, RankingValue.name == name)
        ).one()
        top = ranking.top
        n = top if isinstance(top, int) else math.ceil(known * float(top[:-1]) / 100)
        threshold = None
        if known and n:
            threshold = session.exec(
                select(RankingValue.value)
                .where(RankingValue.run_id == run.id, RankingValue.name == name)
                .order_by(col(RankingValue.value).desc())
                .offset(min(n, known) - 1)
                .limit(1)
            ).first()
        thresholds[name] = threshold
        thresholds[f"{name}.ranked"] = int(known)
    run.thresholds = thresholds
    session.add(run)
    session.commit()
    return thresholds


@dataclass
class PageResult:
    last_id: int
    processed: int = 0
    changed: int = 0
    tiers: Counter[str] = field(default_factory=Counter)


def _reason(rules: Rules, decision: Decision, values: dict[str, Value]) -> str:
    if decision.tier_rule == DEFAULT_RULE:
        return f"no tier rule held; default tier ({rules.name} {rules.version})"
    parsed = rules.conditions[f"tier:{decision.tier_rule}"]
    shown = ", ".join(f"{f}={values.get(f, 'unknown')}" for f in sorted(parsed.fields))
    return f"{decision.tier_rule}: {parsed.text} with {shown} ({rules.name} {rules.version})"


def _upsert(session: Session, table: Any, key: str, rows: list[dict[str, Any]]) -> None:
    """Insert rows, or replace the row with the same ``key``: one statement for them all."""
    dialect = session.get_bind().dialect.name
    dialect_insert: Any
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:  # any other database: replace by delete and insert, in the same transaction
        session.execute(delete(table).where(table.c[key].in_([r[key] for r in rows])))
        session.execute(table.insert(), rows)
        return
    stmt = dialect_insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c[key]],
        set_={name: stmt.excluded[name] for name in rows[0] if name != key},
    )
    session.execute(stmt, rows)


def record(
    session: Session,
    *,
    rules: Rules,
    version: RuleVersion,
    run: RuleRun | None,
    evaluated: list[tuple[Any, dict[str, Value], Decision]],
    trigger: str,
) -> int:
    """Store decisions, keep customers' tier and segments in step, log tier changes.

    ``evaluated`` holds customers as rows or as ORM objects; written in bulk, whichever."""
    assert version.id is not None
    changed = 0
    now = utcnow()
    changes: list[dict[str, Any]] = []
    moved: list[dict[str, Any]] = []
    decisions: list[dict[str, Any]] = []
    for customer, values, decision in evaluated:
        assert customer.id is not None
        if customer.tier != decision.tier:
            changed += 1
            changes.append(
                {
                    "customer_id": customer.id,
                    "from_tier": customer.tier,
                    "to_tier": decision.tier,
                    "rule_version_id": version.id,
                    "rule": decision.tier_rule,
                    "reason": _reason(rules, decision, values)[:1000],
                    "trigger": trigger,
                    "at": now,
                }
            )
        if customer.tier != decision.tier or list(customer.segments or []) != decision.segments:
            moved.append(
                {"_id": customer.id, "_tier": decision.tier, "_segments": decision.segments}
            )
            if isinstance(customer, Customer):  # keep the caller's object as the row now is
                set_committed_value(customer, "tier", decision.tier)
                set_committed_value(customer, "segments", list(decision.segments))
        decisions.append(
            {
                "customer_id": customer.id,
                "rule_version_id": version.id,
                "run_id": run.id if run else None,
                "tier": decision.tier,
                "tier_rule": decision.tier_rule,
                "segments": decision.segments,
                "offers": decision.offers,
                "features": dict(values),
                "decided_at": now,
            }
        )
    if changes:
        session.execute(TierChange.__table__.insert(), changes)  # type: ignore[attr-defined]
    if moved:
        customers = Customer.__table__  # type: ignore[attr-defined]
        session.execute(
            update(customers)
            .where(customers.c.id == bindparam("_id"))
            .values(tier=bindparam("_tier"), segments=bindparam("_segments")),
            moved,
        )
    if decisions:
        _upsert(session, CustomerDecision.__table__, "customer_id", decisions)  # type: ignore[attr-defined]
        for customer, _, _ in evaluated:  # a decision this session holds is stale now
            if isinstance(customer, Customer):
                held = session.identity_map.get(session.identity_key(CustomerDecision, customer.id))
                if held is not None:
                    session.expire(held)
    return changed


def apply_page(
    session: Session,
    *,
    run: RuleRun,
    rules: Rules,
    version: RuleVersion,
    after_id: int,
    limit: int,
    today: date,
    trigger: str = "rules apply",
    until_id: int | None = None,
) -> PageResult:
    customers = customer_page(session, after_id=after_id, limit=limit, until_id=until_id)
    result = PageResult(last_id=after_id)
    if not customers:
        return result
    evaluated = evaluate(session, rules, customers, today, run.thresholds)
    result.changed = record(
        session, rules=rules, version=version, run=run, evaluated=evaluated, trigger=trigger
    )
    session.commit()
    result.last_id = customers[-1].id or after_id
    result.processed = len(customers)
    result.tiers = Counter(d.tier for _, _, d in evaluated)
    return result


def evaluate(
    session: Session,
    rules: Rules,
    customers: list[Customer],
    today: date,
    thresholds: dict[str, Any] | None,
) -> list[tuple[Customer, dict[str, Value], Decision]]:
    from clientela.predictive.offers import offer_values

    with_values = features_of(session, rules, customers, today, thresholds)
    matches = engine_for(rules).classify([(str(c.id), v) for c, v in with_values])
    worth = offer_values(session, rules, customers)
    return [
        (c, v, decide(rules, m, worth.get(c.id or 0)))
        for (c, v), m in zip(with_values, matches, strict=True)
    ]


def finish_run(session: Session, run: RuleRun, counts: dict[str, Any]) -> None:
    run.state, run.counts, run.finished_at = "finished", counts, utcnow()
    session.add(run)
    session.commit()


def latest_run(session: Session) -> tuple[RuleRun, RuleVersion] | None:
    row = session.exec(
        select(RuleRun, RuleVersion)
        .join(RuleVersion, col(RuleRun.rule_version_id) == col(RuleVersion.id))
        .where(RuleRun.state == "finished")
        .order_by(col(RuleRun.finished_at).desc(), col(RuleRun.id).desc())
    ).first()
    return (row[0], row[1]) if row else None


def reevaluate(
    session: Session, customer: Customer, *, trigger: str, today: date
) -> tuple[Decision, bool] | None:
    """Decide again for one customer now (a purchase, a complaint, a profile change).

    Uses the rule version and ranking thresholds of the latest finished ``rules apply``;
    nothing happens before the first one.
    """
    latest = latest_run(session)
    if latest is None:
        return None
    run, version = latest
    rules = rules_of(version)
    before = customer.tier
    [(c, values, decision)] = evaluate(session, rules, [customer], today, run.thresholds)
    record(
        session,
        rules=rules,
        version=version,
        run=run,
        evaluated=[(c, values, decision)],
        trigger=trigger,
    )
    return decision, before != decision.tier


def explain_customer(session: Session, customer: Customer) -> dict[str, Any] | None:
    """The stored decision of a customer, explained with the values the rules saw."""
    row = session.get(CustomerDecision, customer.id)
    if row is None:
        return None
    version = session.get(RuleVersion, row.rule_version_id)
    assert version is not None
    rules = rules_of(version)
    decision = Decision(
        key=str(customer.id),
        version=rules.version,
        tier=row.tier,
        tier_rule=row.tier_rule,
        segments=list(row.segments),
        offers=list(row.offers),
    )
    out = explain(rules, row.features, decision)
    decided_at = as_utc(row.decided_at)
    out["decided_at"] = decided_at.isoformat() if decided_at else None
    out["values"] = row.features
    return out


def tier_history(session: Session, customer_id: int) -> list[dict[str, Any]]:
    rows = session.exec(
        select(TierChange, RuleVersion.digest)
        .join(RuleVersion, col(TierChange.rule_version_id) == col(RuleVersion.id))
        .where(TierChange.customer_id == customer_id)
        .order_by(col(TierChange.at), col(TierChange.id))
    ).all()
    return [
        {
            "at": (as_utc(change.at) or change.at).isoformat(),
            "from": change.from_tier,
            "to": change.to_tier,
            "rule": change.rule,
            "version": digest[:12],
            "trigger": change.trigger,
            "reason": change.reason,
        }
        for change, digest in rows
    ]
