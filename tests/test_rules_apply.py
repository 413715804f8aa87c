"""The shipped rule file on hand-built customers, and `rules apply` as a workflow."""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlmodel import col, func, select
from temporalio.client import Client

from clientela.customers.records import customer_view, get_customer
from clientela.db import session_scope
from clientela.rules_apply import apply_progress, start_apply
from clientela.settings import Settings
from models import Customer, CustomerDecision, RuleRun, TierChange, Transaction
from rules import service
from rules.data import slice_bounds
from rules.model import load
from tests.factories import make_customer, make_staff
from tests.processes import start_worker
from workflows.rules_apply import RulesApply, workflow_id

CRM = Path(__file__).resolve().parent.parent / "rules" / "crm.yaml"
TODAY = date(2026, 11, 22)


def months_ago(n: int) -> str:
    return (TODAY - timedelta(days=31 * n)).isoformat()


def buy(db_url: str, cid: str, amounts: list[float], days_ago_each: int = 20) -> None:
    with session_scope(db_url) as session:
        customer = get_customer(session=session, external_id=cid)
        assert customer.id is not None
        for i, amount in enumerate(amounts):
            session.add(
                Transaction(
                    customer_id=customer.id,
                    amount=Decimal(str(amount)),
                    occurred_at=datetime.combine(TODAY, datetime.min.time(), UTC)
                    - timedelta(days=days_ago_each * (i + 1)),
                )
            )


def apply_directly(db_url: str, path: Path = CRM) -> dict[str, CustomerDecision]:
    """What the workflow's activities do, run inline: rank, decide every page, finish."""
    rules = load(path)
    with session_scope(db_url) as session:
        version = service.register(session, rules)
        run = service.start_run(session, version)
        session.commit()
        service.rank(session, run, rules, TODAY)
        after = 0
        while True:
            page = service.apply_page(
                session, run=run, rules=rules, version=version, after_id=after, limit=7, today=TODAY
            )
            if not page.processed:
                break
            after = page.last_id
        service.finish_run(session, run, {})
        decisions = session.exec(
            select(CustomerDecision, Customer.external_id).join(Customer)
        ).all()
        return {cid: d for d, cid in decisions}


def test_the_seed_definitions_on_hand_built_customers(db_url: str) -> None:
    # Def. 1: 12 purchases of 150 in the last year, two years with us: 150 a month.
    a = make_customer(db_url, signup_date=months_ago(24))
    buy(db_url, a, [150] * 12)
    # Def. 2: 60 a month over 10 months of tenure.
    b = make_customer(db_url, signup_date=months_ago(10))
    buy(db_url, b, [60] * 10, days_ago_each=28)
    # 60 a month but only 3 months with us: not Def. 2.
    short = make_customer(db_url, signup_date=months_ago(3))
    buy(db_url, short, [60] * 3, days_ago_each=25)
    # Nothing known about income: the default tier.
    unknown = make_customer(db_url, signup_date=months_ago(30))
    # Def. 1 from an imported attribute, and paying far above the basic charge.
    imported = make_customer(
        db_url,
        signup_date=months_ago(40),
        attributes={"monthly_income": 130, "basic_charge": 20, "usage": 130},
    )
    # Others to rank against: small excesses over the basic charge.
    for i in range(18):
        make_customer(db_url, attributes={"basic_charge": 20, "usage": 20 + i})

    decided = apply_directly(db_url)
    assert decided[a].tier == "A" and decided[a].tier_rule == "def1_profitable"
    assert decided[b].tier == "B" and decided[b].tier_rule == "def2_profitable"
    assert decided[short].tier == "C" and decided[short].tier_rule == "__default__"
    assert decided[unknown].tier == "C"
    assert decided[imported].tier == "A"
    # Def. 3 and 4 rank the base: 23 customers, top 10% = 3; the imported customer is top.
    assert decided[imported].features["def3_top_excess"] is True
    assert set(decided[imported].segments) >= {"retain_def1_def3", "retain_def1_def4"}
    # Offers: ranked by priority, only those the tier allows, at most its max_offers.
    assert decided[imported].offers == ["plan_right_size", "loyalty_bonus"]
    # Tier C allows welcome_discount and win_back only; three months in, the first applies.
    assert decided[short].offers == ["welcome_discount"]
    assert "welcome_discount" not in decided[a].offers  # not allowed for tier A


def test_decisions_are_explained_and_historied(db_url: str) -> None:
    cid = make_customer(db_url, attributes={"monthly_income": 150})
    apply_directly(db_url)
    with session_scope(db_url) as session:
        customer = get_customer(session=session, external_id=cid)
        explained = service.explain_customer(session, customer)
        view = customer_view(session=session, external_id=cid)
    assert explained is not None
    assert explained["tier"] == "A" and explained["decided_by"] == "rule 'def1_profitable'"
    [tried] = explained["tier_rules_tried"]
    assert tried["conditions"] == [
        {"condition": "monthly_income > 100", "values": {"monthly_income": 150}, "holds": "true"}
    ]
    assert view["profile"]["tier"] == "A"
    assert view["decision"]["tier_rule"] == "def1_profitable"
    [change] = view["tier_history"]
    assert (change["from"], change["to"], change["trigger"]) == (None, "A", "rules apply")
    assert "monthly_income=150" in change["reason"]
    # Applying the same rules again changes nothing and writes no new history.
    apply_directly(db_url)
    with session_scope(db_url) as session:
        assert session.exec(select(func.count()).select_from(TierChange)).one() == 1


def test_a_purchase_re_tiers_the_customer_at_once(db_url: str) -> None:
    cid = make_customer(db_url, signup_date=months_ago(24))
    apply_directly(db_url)
    buy(db_url, cid, [1500])
    with session_scope(db_url) as session:
        customer = get_customer(session=session, external_id=cid)
        result = service.reevaluate(session, customer, trigger="purchase", today=TODAY)
    assert result is not None
    decision, changed = result
    assert (decision.tier, changed) == ("A", True)
    with session_scope(db_url) as session:
        history = customer_view(session=session, external_id=cid)["tier_history"]
    assert [(h["from"], h["to"], h["trigger"]) for h in history] == [
        (None, "C", "rules apply"),
        ("C", "A", "purchase"),
    ]


def bulk_customers(db_url: str, n: int) -> None:
    with session_scope(db_url) as session:
        session.add_all(
            Customer(
                external_id=f"BULK{i:05d}",
                first_name="Bulk",
                attributes={
                    "monthly_income": (i * 7) % 160,
                    "basic_charge": 20,
                    "usage": 20 + i % 50,
                },
                signup_date=TODAY - timedelta(days=30 * (i % 20)),
            )
            for i in range(n)
        )


async def wait_done(client: Client, ruleset: str) -> object:
    handle = client.get_workflow_handle_for(RulesApply.run, workflow_id(ruleset))
    return await asyncio.wait_for(handle.result(), timeout=240)


async def test_rules_apply_workflow_over_more_than_1024_customers(
    client: Client, settings: Settings, worker: None
) -> None:
    bulk_customers(settings.db_url, 1100)
    rules = load(CRM)
    await start_apply(client, settings, rules, page_size=250)
    result = await wait_done(client, rules.name)
    progress, finished = await apply_progress(client, rules.name)
    assert finished and progress.stage == "done"
    assert progress.processed == progress.total == 1100
    assert sum(progress.tiers.values()) == 1100 and set(progress.tiers) == {"A", "B", "C"}
    assert result == progress
    with session_scope(settings.db_url) as session:
        assert session.exec(select(func.count()).select_from(CustomerDecision)).one() == 1100
        [run] = session.exec(select(RuleRun)).all()
        assert run.state == "finished" and run.counts["processed"] == 1100


@pytest.mark.slow
async def test_rules_apply_survives_a_worker_restart(
    client: Client, settings: Settings, tmp_path: Path
) -> None:
    bulk_customers(settings.db_url, 3000)
    rules = load(CRM)
    settings = settings.model_copy(update={"heartbeat_timeout": timedelta(seconds=2)})
    log = tmp_path / "worker.log"
    first = start_worker(settings, log)
    try:
        await start_apply(client, settings, rules, page_size=100)
        deadline = time.monotonic() + 120
        while True:
            with session_scope(settings.db_url) as session:
                decided = session.exec(select(func.count()).select_from(CustomerDecision)).one()
            if decided >= 600:
                break
            assert time.monotonic() < deadline, log.read_text()
            await asyncio.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
    assert decided < 3000, "the kill came after the apply had finished"
    second = start_worker(settings, log)
    try:
        await wait_done(client, rules.name)
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    progress, finished = await apply_progress(client, rules.name)
    with session_scope(settings.db_url) as session:
        decisions = session.exec(select(func.count()).select_from(CustomerDecision)).one()
        changes = session.exec(select(func.count()).select_from(TierChange)).one()
    assert finished and decisions == 3000
    assert changes == 3000  # one first tier each: re-done pages wrote no duplicates
    assert progress.processed >= 3000  # pages re-done after the kill count again


def test_internal_records_get_no_tier(settings: Settings) -> None:
    from models import Customer, CustomerDecision

    make_customer(settings.db_url)
    make_staff(settings.db_url)
    apply_directly(settings.db_url)
    with session_scope(settings.db_url) as session:
        decided = {
            c.external_id
            for c, _ in session.exec(
                select(Customer, CustomerDecision).join(
                    CustomerDecision, col(CustomerDecision.customer_id) == col(Customer.id)
                )
            ).all()
        }
    assert len(decided) == 1 and "staff:lead@example.com" not in decided


@pytest.mark.slow
async def test_rules_apply_spreads_its_slices_over_two_worker_processes(
    client: Client, settings: Settings, tmp_path: Path
) -> None:
    """Two worker processes, each deciding one page at a time with its own durable_rules
    engine: the slices of one apply go to both, and every customer is decided once."""
    bulk_customers(settings.db_url, 2000)
    rules = load(CRM)
    settings = settings.model_copy(update={"rules_slices": 4})
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    workers = [start_worker(settings, log) for log in logs]
    try:
        await start_apply(client, settings, rules, page_size=50)
        await wait_done(client, rules.name)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(30)
    progress, finished = await apply_progress(client, rules.name)
    assert finished and progress.processed == progress.total == 2000
    with session_scope(settings.db_url) as session:
        [run] = session.exec(select(RuleRun)).all()
        decided = session.exec(
            select(CustomerDecision.customer_id).where(CustomerDecision.run_id == run.id)
        ).all()
        changes = session.exec(select(func.count()).select_from(TierChange)).one()
    assert len(decided) == len(set(decided)) == 2000  # each customer decided, once
    assert changes == 2000  # one first tier each
    assert run.counts["processed"] == 2000
    # Both processes decided pages (each logs the ids it decided).
    for log in logs:
        assert "decided " in log.read_text(), log.read_text()


def test_rankings_stored_by_slices_and_again_match_one_pass(db_url: str) -> None:
    """What the workflow's slices do (rank pages, a page stored twice by a retried
    activity, then the thresholds) gives the thresholds of one pass over the whole base;
    deciding twice replaces each decision in place."""
    from models import RankingValue

    bulk_customers(db_url, 60)
    rules = load(CRM)
    with session_scope(db_url) as session:
        version = service.register(session, rules)
        whole = service.start_run(session, version)
        sliced = service.start_run(session, version)
        session.commit()
        expected = service.rank(session, whole, rules, TODAY)
        bounds = [*slice_bounds(session, 3), None]
        for start, end in itertools.pairwise(bounds):
            after, retry = start or 0, True
            while True:
                last, n = service.rank_page(
                    session, run=sliced, rules=rules, after_id=after, limit=7, today=TODAY,
                    until_id=end,
                )  # fmt: skip
                if retry and n:  # the retry of an activity that stored its first page
                    service.rank_page(
                        session, run=sliced, rules=rules, after_id=after, limit=7, today=TODAY,
                        until_id=end, again=True,
                    )  # fmt: skip
                retry = False
                if not n:
                    break
                after = last
        found = service.set_thresholds(session, sliced, rules)
        stored = session.exec(
            select(func.count()).select_from(RankingValue).where(RankingValue.run_id == sliced.id)
        ).one()
    assert found == expected and expected["def3_top_excess"] is not None
    assert stored == 60 * len(rules.rankings)  # none doubled
    first = apply_directly(db_url)
    second = apply_directly(db_url)
    with session_scope(db_url) as session:
        rows = session.exec(select(func.count()).select_from(CustomerDecision)).one()
        changes = session.exec(select(func.count()).select_from(TierChange)).one()
    assert rows == 60 and set(first) == set(second)
    assert all(first[c].tier == second[c].tier for c in first)
    assert all(second[c].run_id != first[c].run_id for c in first)  # replaced, not kept
    assert changes == 60  # each customer's first tier; the second apply changed none


def contact(cid: int, channel: str, direction: str, kind: str, when: datetime) -> object:
    """One contact in a customer's history (a message sent, a reply received)."""
    from models import Interaction

    outcome = "sent" if direction == "outbound" else ""
    return Interaction(
        customer_id=cid, channel=channel, direction=direction, kind=kind, outcome=outcome,
        occurred_at=when,
    )  # fmt: skip


def test_a_dense_page_reads_its_history_by_range_and_only_its_own(db_url: str) -> None:
    """A page of the base (dense ids) is read by id range: the same histories and consents as
    reading each customer by id, and nothing of a customer in the range the page left out."""
    from models import Complaint, Consent, Direction
    from rules.data import consents_of, histories_of

    bulk_customers(db_url, 80)
    now = datetime.combine(TODAY, datetime.min.time(), UTC)
    with session_scope(db_url) as session:
        ids = sorted(session.exec(select(Customer.id)).all())
        for n, cid in enumerate(ids):
            granted = n % 2 == 0
            session.add(Consent(customer_id=cid, channel="email", granted=granted, source="test"))
            for k in range(n % 4):
                when = now - timedelta(days=10 * (k + 1))
                amount = Decimal("12.5") * (k + 1)
                session.add(Transaction(customer_id=cid, amount=amount, occurred_at=when))
                session.add(contact(cid, "email", Direction.outbound, "message", when))
            if n % 3 == 0:
                replied = now - timedelta(days=2)
                session.add(contact(cid, "sms", Direction.inbound, "reply", replied))
            if n % 5 == 0:
                session.add(Complaint(customer_id=cid, code="BILLING-01"))
        session.commit()
        left_out = ids[40]
        page = [i for i in ids if i != left_out]
        by_range = histories_of(session, page, TODAY)
        consents = consents_of(session, page)
        one_by_one = {i: histories_of(session, [i], TODAY)[i] for i in ids}
        alone = {i: consents_of(session, [i]).get(i, {}) for i in ids}
    assert left_out not in by_range and left_out not in consents
    assert {i: by_range[i] for i in page} == {i: one_by_one[i] for i in page}
    assert {i: consents.get(i, {}) for i in page} == {i: alone[i] for i in page}
    assert sum(h.purchases_12m for h in by_range.values()) > 0
    assert sum(h.complaints_open for h in by_range.values()) > 0


def test_the_ranking_pass_reads_only_what_the_rankings_use_and_ranks_the_same(
    db_url: str,
) -> None:
    bulk_customers(db_url, 30)
    for n in range(6):  # income from purchases decides some of the rankings' values
        cid = make_customer(db_url, attributes={"basic_charge": 15})
        buy(db_url, cid, [40.0 * (n + 1)] * 3)
    rules = load(CRM)
    wanted = set().union(*(rules.rankings[name].fields for name in rules.rankings))
    with session_scope(db_url) as session:
        batch = session.exec(select(Customer).order_by(col(Customer.id))).all()
        whole = service.features_of(session, rules, list(batch), TODAY, thresholds=None)
        lean = service.features_of(
            session, rules, list(batch), TODAY, thresholds=None, fields=wanted
        )
    ranked = {
        name: [service._ranking_value(rules, name, values) for _, values in whole]
        for name in rules.rankings
    }
    assert ranked == {
        name: [service._ranking_value(rules, name, values) for _, values in lean]
        for name in rules.rankings
    }
    assert any(isinstance(v, float | int) for v in ranked["def3_top_excess"])
    assert "purchases_12m" in dict(lean[-1][1]) and "email_consent" in dict(whole[-1][1])
    assert lean[-1][1]["email_consent"] is False  # consents were not read for ranking
