"""Predictive models: metrics against hand computations, training and its versions, and the
arms a model or a random number chooses."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlmodel import col, select

from clientela.campaigns import audience
from clientela.campaigns.audience import unit
from clientela.db import session_scope
from clientela.predictive import metrics
from clientela.predictive import spec as model_spec
from clientela.predictive.features import features_at
from clientela.predictive.training import (
    ModelMissing,
    TrainingError,
    describe,
    fitted_of,
    latest,
    train,
)
from clientela.timeutil import utcnow
from clientela.yamlfile import SpecError
from models import Campaign, CampaignMember, Customer, Interaction, PredictiveModel
from tests.factories import make_customer
from tests.test_campaign_spec import BASE, load_spec
from tests.test_rules_apply import apply_directly

# Six customers ranked by score: treated (t) and outcome (y) by hand.
SCORE = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
T = np.array([1, 0, 1, 0, 1, 0])
Y = np.array([1, 0, 1, 1, 0, 0])


def test_uplift_metrics_equal_hand_computations() -> None:
    # Qini after n: R_t - R_c * N_t / N_c. n=1: 1 - 0 = 1 (no control yet: 0); n=2: 1 - 0*1/1;
    # n=3: 2 - 0 = 2; n=4: 2 - 1*2/2 = 1; n=5: 2 - 1*3/2 = 0.5; n=6: 2 - 1*3/3 = 1.
    assert metrics.qini_curve(SCORE, T, Y).tolist() == [0, 1, 1, 2, 1, 0.5, 1]
    # Uplift curve: (R_t/N_t - R_c/N_c) * n: n=2: (1 - 0) * 2 = 2; n=4: (1 - 1/2) * 4 = 2;
    # n=6: (2/3 - 1/3) * 6 = 2.
    curve = metrics.uplift_curve(SCORE, T, Y)
    assert curve[2] == pytest.approx(2) and curve[4] == pytest.approx(2)
    assert curve[6] == pytest.approx(2)
    # Top half (3): treated 2 of 2 responded, control 0 of 1: uplift 1.
    assert metrics.uplift_at(SCORE, T, Y, 0.5) == 1.0
    assert metrics.uplift_at(SCORE, T, Y, 1.0) == pytest.approx(2 / 3 - 1 / 3)
    assert metrics.uplift_at(SCORE, T, Y, 0.2) is None  # the top one has no control
    # Qini coefficient: the area over the random line (trapezoids), over the perfect one's.
    # Random line to 1 at 6: x/6. Model: sum of trapezoids of (q - x/6).
    q = np.array([0, 1, 1, 2, 1, 0.5, 1]) - np.arange(7) / 6
    model_area = sum((q[i] + q[i + 1]) / 2 for i in range(6))
    # Perfect ranking: treated responders (2), then the rest, then the control responder.
    perfect = metrics.qini_curve(np.array([1, 0, 1, -1, 0, 0]), T, Y)
    assert perfect.tolist()[:3] == [0, 1, 1] or perfect[2] == 2
    p = perfect - np.arange(7) / 6
    best_area = sum((p[i] + p[i + 1]) / 2 for i in range(6))
    assert metrics.qini_coefficient(SCORE, T, Y) == pytest.approx(model_area / best_area)
    # The perfect ranking scores 1; its reverse scores below 0.
    assert metrics.qini_coefficient(np.array([1, 0, 1, -1, 0, 0]), T, Y) == pytest.approx(1)
    assert metrics.qini_coefficient(-np.array([1, 0, 1, -1, 0, 0.0]), T, Y) < 0
    points = metrics.curve_points(SCORE, T, Y, points=2)
    assert points == [[0, 0.0], [0.5, round(2 / 6, 6)], [1.0, round(1 / 6, 6)]]
    assert metrics.auc(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75


@pytest.mark.parametrize("method", ["two_model", "class_transformation"])
def test_a_feature_no_one_in_a_group_has_does_not_stop_training(method: str) -> None:
    """The control group holds nobody with a purchase, so its recency is all missing there:
    the learners still fit, and score customers who have one."""
    from clientela.predictive.learning import Encoder, fit
    from clientela.predictive.spec import Learner

    rng = np.random.default_rng(1)
    treated = np.array([1] * 60 + [0] * 40)
    rows = [
        {"spend": float(rng.random()), **({"recency_days": int(rng.integers(1, 90))} if t else {})}
        for t in treated
    ]
    outcome = rng.integers(0, 2, size=100)
    encoder = Encoder().fit(rows)
    model = fit("uplift", method, Learner(min_samples_leaf=5), encoder,
                encoder.transform(rows), treated, outcome, 0)  # fmt: skip
    scores = model.score(rows[:5])
    assert scores.shape == (5,) and np.isfinite(scores).all()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: m\nkind: uplift\nmethod: classifier\n",
            "m.yaml:3:9: error: method: an uplift model's method",
        ),
        (
            "name: m\nkind: propensity\nmethod: two_model\n",
            "m.yaml:3:9: error: method: a propensity model's method",
        ),
        ("name: m\nkind: uplift\noutcome: open\n", "m.yaml:3:10: error: outcome:"),
        ("name: m\nkind: uplift\ntraining: {holdot: 0.5}\n", "unknown key 'holdot'"),
        ("name: other\nkind: uplift\n", "differs from the file's 'm'"),
        (
            "name: m\nkind: uplift\nretrain: 10m\n",
            "m.yaml:3:10: error: retrain: at most once an hour",
        ),
    ],
)
def test_model_spec_errors_are_placed(text: str, expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        model_spec.loads(text, "m.yaml", expected="m")
    assert expected in str(caught.value)


def test_the_shipped_model_specs_are_valid() -> None:
    from clientela import ROOT

    names = model_spec.names(ROOT / "predictive")
    assert "hillstrom-visits" in names
    for name in names:
        assert model_spec.load(ROOT / "predictive", name).name == name


SPEC = """\
name: reach
kind: uplift
method: {method}
outcome: visit
training: {{campaigns: [past], holdout: 0.3, min_rows: 100}}
learner: {{min_samples_leaf: 20}}
"""


def past_campaign(
    db: str,
    n: int = 600,
    *,
    campaign: str = "past",
    kind: str = "visit",
    works_on: Callable[[float], bool] = lambda affinity: affinity > 0.5,
    seed: int = 7,
) -> None:
    """A finished campaign whose e-mail works only on some customers (by default those with
    a high ``affinity``): treated customers it works on respond 60% of the time, everyone
    else 10%. Without customers yet, ``n`` are made."""
    rng = random.Random(seed)
    with session_scope(db) as session:
        have = session.exec(select(Customer).where(col(Customer.internal).is_(False))).first()
    if have is None:
        for _ in range(n):
            make_customer(
                db, attributes={"affinity": rng.random(), "plan": rng.choice(["gold", "basic"])}
            )
    started = utcnow() - timedelta(days=30)
    with session_scope(db) as session:
        session.add(Campaign(id=campaign, name=campaign, stage="finished", window_start=started))
        session.flush()
        customers = session.exec(
            select(Customer).where(col(Customer.internal).is_(False)).order_by(col(Customer.id))
        )
        for customer in customers:
            assert customer.id is not None
            treated = rng.random() < 0.5
            session.add(
                CampaignMember(
                    campaign_id=campaign,
                    customer_id=customer.id,
                    arm="main",
                    group="treated" if treated else "control",
                    channel="email",
                    address=customer.email or "",
                )
            )
            works = works_on(customer.attributes["affinity"])
            if rng.random() < (0.6 if treated and works else 0.1):
                session.add(
                    Interaction(
                        customer_id=customer.id,
                        channel="email",
                        direction="inbound",
                        kind=kind,
                        campaign=campaign,
                        occurred_at=started + timedelta(days=1),
                    )
                )


@pytest.mark.parametrize("method", ["two_model", "class_transformation"])
def test_a_model_learns_whom_the_campaign_moved_and_is_versioned(db_url: str, method: str) -> None:
    past_campaign(db_url)
    spec = model_spec.loads(SPEC.format(method=method), "reach.yaml")
    with session_scope(db_url) as session:
        first = train(session, spec, key="run-1", by="test")
    assert first.holdout is not None
    m = first.model
    assert (m.name, m.version, m.kind, m.method) == ("reach", 1, "uplift", method)
    assert m.campaigns == ["past"] and "attr.affinity" in m.features
    assert "email_consent" not in m.features  # eligibility is not a trait
    assert m.rows["learn"] + m.rows["holdout"] == 600 and m.rows["holdout"] == 180
    # The affinity is the whole story: the model ranks by it, and the top of its ranking
    # is where the e-mail worked.
    assert m.metrics["qini"] > 0.1 and m.metrics["auuc"] > 0.2, m.metrics
    assert m.metrics["uplift_at_30"] > 0.3 > m.metrics["uplift_overall"], m.metrics
    assert len(m.curve) == 21 and m.curve[0] == [0.0, 0.0]
    with session_scope(db_url) as session:
        again = train(session, spec, key="run-1")  # a retried run: the same version
        assert again.model.version == 1 and again.holdout is None
        second = train(session, spec, key="run-2")
        assert second.model.version == 2
        assert latest(session, "reach").version == 2
        row = latest(session, "reach", 1)
        scorer = fitted_of(row)
        customers = list(session.exec(select(Customer).where(col(Customer.internal).is_(False))))
        features = features_at(session, customers, utcnow())
        scores = scorer.score([features[c.id] for c in customers if c.id is not None])
        high = np.array([c.attributes["affinity"] > 0.5 for c in customers])
        assert scores[high].mean() > scores[~high].mean() + 0.2
        assert describe(row)["metrics"] == m.metrics
        with pytest.raises(ModelMissing, match="clientela models train nothing"):
            latest(session, "nothing")


def test_training_refuses_what_it_cannot_learn_from(db_url: str) -> None:
    past_campaign(db_url, n=60)
    spec = model_spec.loads(SPEC.format(method="two_model"), "reach.yaml")
    with session_scope(db_url) as session, pytest.raises(TrainingError, match="min_rows"):
        train(session, spec, key="small")
    with session_scope(db_url) as session:
        session.exec(select(CampaignMember))  # every member was contacted:
        for member in session.exec(select(CampaignMember)):
            member.group = "treated"
            session.add(member)
    relaxed = spec.model_copy(
        update={"training": spec.training.model_copy(update={"min_rows": 20})}
    )
    with session_scope(db_url) as session, pytest.raises(TrainingError, match="held nobody out"):
        train(session, relaxed, key="no-control")
    missing = spec.model_copy(
        update={"training": spec.training.model_copy(update={"campaigns": ["gone"]})}
    )
    with session_scope(db_url) as session, pytest.raises(TrainingError, match="no campaign gone"):
        train(session, missing, key="gone")
    with session_scope(db_url) as session:
        assert session.exec(select(PredictiveModel)).first() is None  # nothing half-written


def test_arms_by_model_by_number_at_random_and_by_rule(db_url: str) -> None:
    """The arms take their customers in order, each from what the arms above left: 40 at
    random (the 40 lowest draws), then the model's top 30% of the rest, then a rule; the
    campaign records the model version that chose its arm."""
    past_campaign(db_url, n=300)
    with session_scope(db_url) as session:
        train(session, model_spec.loads(SPEC.format(method="two_model"), "r.yaml"), key="k")
    apply_directly(db_url)
    arms = (
        "channel: email\ncontrol: {share: 0.1}\narms:\n"
        "  - {name: chance, random: {count: 40}}\n"
        "  - {name: model, model: {name: reach, share: 0.3}}\n"
        "  - {name: marketing, when: 'attr.plan == \"gold\"'}\n"
    )
    campaign = load_spec(BASE + arms)
    with session_scope(db_url) as session:
        session.add(Campaign(id="t1", name="T"))
        session.flush()
        audience.build(session, "t1", campaign)
        assert session.get(Campaign, "t1").spec["models"] == {  # type: ignore[union-attr]
            "model": {"name": "reach", "version": 1, "kind": "uplift"}
        }
        everyone = list(session.exec(select(Customer).where(col(Customer.internal).is_(False))))
        placed = dict(
            session.exec(
                select(CampaignMember.customer_id, CampaignMember.arm).where(
                    CampaignMember.campaign_id == "t1"
                )
            ).all()
        )
        # The same computed here, independently: draws, then scores, then the rule.
        by_draw = sorted(everyone, key=lambda c: unit("t1", c.external_id, "arm:chance"))
        chance = {c.id for c in by_draw[:40]}
        rest = [c for c in everyone if c.id not in chance]
        scorer = fitted_of(latest(session, "reach"))
        features = features_at(session, rest, utcnow())
        scores = scorer.score([features[c.id] for c in rest if c.id is not None])
        order = sorted(range(len(rest)), key=lambda i: (-scores[i], rest[i].id))
        top = {rest[i].id for i in order[: -(-len(rest) * 3 // 10)]}
        marketing = {
            c.id
            for c in rest
            if c.id not in top and c.attributes["plan"] == "gold"  # type: ignore[index]
        }
    assert {k for k, v in placed.items() if v == "chance"} == chance
    assert {k for k, v in placed.items() if v == "model"} == top
    assert {k for k, v in placed.items() if v == "marketing"} == marketing
    assert len(placed) == len(chance) + len(top) + len(marketing)
    with session_scope(db_url) as session:  # a preview draws the same
        preview = audience.preview(session, campaign)
    assert {a: sum(g.values()) for a, g in preview.by_arm.items()} == {
        "chance": 40,
        "model": len(top),
        "marketing": len(marketing),
    }
    assert preview.models == {"model": {"name": "reach", "version": 1, "kind": "uplift"}}
    unknown = load_spec(BASE + arms.replace("name: reach", "name: nobody"))
    with session_scope(db_url) as session, pytest.raises(SpecError) as caught:
        audience.preview(session, unknown)
    assert "c.yaml:12:33: error: arms.1.model.name:" in str(
        caught.value
    ) and "clientela models train nobody" in str(caught.value)
    bad = BASE + "arms:\n  - {name: x, random: {share: 0.2, count: 3}}\n"
    with pytest.raises(SpecError, match="either `share` or `count`"):
        load_spec(bad)


OFFER_MODEL = """\
name: {name}-propensity
kind: propensity
outcome: conversion
offer: {offer}
training: {{campaigns: [{campaign}], min_rows: 100}}
learner: {{min_samples_leaf: 20}}
"""


def test_next_best_offers_by_propensity_times_margin(db_url: str) -> None:
    """Two offers every customer qualifies for, each with a propensity model: customers with a
    high affinity take win_back, the others welcome_discount. Each customer's first offer is
    the one worth more to them; a margin ten times higher turns the order for everyone."""
    from rules.model import loads as load_rules
    from rules.service import evaluate

    past_campaign(db_url, 300, campaign="past-welcome", kind="conversion",
                  works_on=lambda a: a <= 0.5)  # fmt: skip
    past_campaign(db_url, campaign="past-winback", kind="conversion",
                  works_on=lambda a: a > 0.5, seed=8)  # fmt: skip
    crm = (Path(__file__).resolve().parent.parent / "rules" / "crm.yaml").read_text()
    both = crm.replace("when: newbie and tenure_months <= 3", "when: has_email").replace(
        "when: recency_days > 180 and spend_12m > 0", "when: has_email"
    )
    for offer, campaign in (("welcome_discount", "past-welcome"), ("win_back", "past-winback")):
        text = OFFER_MODEL.format(name=offer.replace("_", "-"), offer=offer, campaign=campaign)
        with session_scope(db_url) as session:
            trained = train(session, model_spec.loads(text, "m.yaml"), key=offer)
            assert trained.model.metrics["auc"] > 0.6, trained.model.metrics
    rules = load_rules(both)
    heavy = load_rules(both.replace("    priority: 40\n", "    priority: 40\n    margin: 10\n"))
    with session_scope(db_url) as session:
        customers = list(session.exec(select(Customer).where(col(Customer.internal).is_(False))))
        decided = evaluate(session, rules, customers, utcnow().date(), None)
        by_margin = evaluate(session, heavy, customers, utcnow().date(), None)
    first = {c.attributes["affinity"] > 0.5: set() for c in customers}
    for customer, _, decision in decided:
        assert set(decision.offers[:2]) <= {"welcome_discount", "win_back"} or decision.tier == "A"
        if decision.tier in ("B", "C") and decision.offers:
            first[customer.attributes["affinity"] > 0.5].add(decision.offers[0])
    assert first[True] == {"win_back"} and first[False] == {"welcome_discount"}
    # With the margin, each first offer is the larger of propensity times margin, computed
    # here from the two models directly; and the margin turned some customers' order.
    with session_scope(db_url) as session:
        features = features_at(session, customers, utcnow())
        rows = [features[c.id] for c in customers if c.id is not None]
        p_welcome = fitted_of(latest(session, "welcome-discount-propensity")).score(rows)
        p_back = fitted_of(latest(session, "win-back-propensity")).score(rows)
    expected = {
        c.id: "welcome_discount" if w * 10 > b else "win_back"
        for c, w, b in zip(customers, p_welcome, p_back, strict=True)
    }
    turned = 0
    for (customer, _, d), (_, _, before) in zip(by_margin, decided, strict=True):
        if d.tier in ("B", "C") and d.offers:
            assert d.offers[0] == expected[customer.id]
            turned += d.offers[0] != before.offers[0]
    assert turned > 10
