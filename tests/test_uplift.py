"""Uplift, intervals and p-values against values computed by hand."""

from __future__ import annotations

import math
from typing import Any

import pytest

from clientela.campaigns.uplift import EXACT, Moments, means, proportions
from clientela.settings import Settings


def test_two_proportions_by_hand() -> None:
    # 200 of 1,000 treated responded, 150 of 1,000 in control.
    u = proportions(200, 1000, 150, 1000)
    assert u.diff == pytest.approx(0.05)
    assert u.uplift_pp == pytest.approx(5.0)
    assert u.relative == pytest.approx(1 / 3)
    # unpooled SE = sqrt(.2*.8/1000 + .15*.85/1000) = 0.0169558; 1.96 * SE = 0.0332330
    assert u.ci95 == pytest.approx((0.0167670, 0.0832330), abs=1e-6)
    # pooled p = .175, SE = sqrt(.175*.825*.002) = 0.0169926, z = 2.942462; chi2 = 8.658
    assert u.p_value == pytest.approx(0.0032563, abs=1e-6)
    assert u.insufficient is None


def test_no_difference_is_not_significant() -> None:
    u = proportions(100, 1000, 100, 1000)
    assert u.diff == 0 and u.p_value == pytest.approx(1.0)
    assert u.ci95 is not None and u.ci95[0] < 0 < u.ci95[1]


def _wilson(x: int, n: int) -> tuple[float, float]:
    z = 1.959963984540054
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _newcombe(x1: int, n1: int, x0: int, n0: int) -> tuple[float, float]:
    """Newcombe's hybrid score interval (his method 10), from two Wilson intervals."""
    p1, p0 = x1 / n1, x0 / n0
    (l1, u1), (l0, u0) = _wilson(x1, n1), _wilson(x0, n0)
    d = p1 - p0
    return d - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2), d + math.sqrt(
        (u1 - p1) ** 2 + (p0 - l0) ** 2
    )


def _fisher(x1: int, n1: int, x0: int, n0: int) -> float:
    """Two-sided Fisher's exact p: every table with the same margins as likely or less."""
    k, total = x1 + x0, n1 + n0

    def prob(a: int) -> float:
        return math.comb(n1, a) * math.comb(n0, k - a) / math.comb(total, k)

    seen = prob(x1)
    return min(1.0, sum(prob(a) for a in range(max(0, k - n0), min(k, n1) + 1)
                        if prob(a) <= seen * (1 + 1e-7)))  # fmt: skip


#: 2x2 tables with a cell expecting fewer than 5 customers (counts of 0, 1 and 3 among them).
SMALL = [(3, 20, 1, 20), (5, 100, 0, 100), (1, 12, 0, 9), (0, 30, 0, 30), (2, 40, 1, 40)]


@pytest.mark.parametrize("args", SMALL)
def test_small_counts_are_answered_exactly(args: tuple[int, int, int, int]) -> None:
    """Below 5 expected in a cell: Fisher's exact p and Newcombe's interval, each against
    its own computation by hand (counts of 0, 1 and 3 included)."""
    u = proportions(*args)
    assert u.insufficient is None and u.method == EXACT
    x1, n1, x0, n0 = args
    assert u.diff == pytest.approx(x1 / n1 - x0 / n0)
    assert u.ci95 == pytest.approx(_newcombe(*args), abs=1e-9)
    assert u.p_value == pytest.approx(_fisher(*args), rel=1e-9, abs=1e-12)


def test_the_demo_campaign_is_no_longer_unmeasurable() -> None:
    """83 conversions of 924 treated against 3 of 233 held out (every cell expects 17 or
    more): the z-test answers, and clearly."""
    u = proportions(83, 924, 3, 233)
    assert u.insufficient is None and u.method == "two-proportion z-test, Wald interval"
    assert u.p_value is not None and u.p_value < 1e-3
    assert u.ci95 is not None and u.ci95[0] > 0.05


def test_an_empty_group_says_how_many_customers_it_needs() -> None:
    u = proportions(40, 400, 0, 0, target=0.02)
    assert u.diff is None and u.ci95 is None
    assert u.insufficient is not None and u.insufficient.startswith("the control group is empty")
    # 10% against 12%, 80% power at 5%: Cohen's h = 0.0640 and n = 2 (1.96 + 0.8416)^2 / h^2
    # per group (the difference of two arcsines has variance 2/n; h = 0.2 gives Cohen's 392)
    h = 2 * math.asin(math.sqrt(0.12)) - 2 * math.asin(math.sqrt(0.10))
    n = math.ceil(2 * (1.959964 + 0.841621) ** 2 / h**2)
    assert f"about {n:,} customers per group would detect +2.00 pp" in u.insufficient


def test_difference_of_means_by_hand() -> None:
    treated, control = Moments(), Moments()
    for v in [0, 0, 10, 20] * 10:  # mean 7.5
        treated.add(v)
    for v in [0, 0, 0, 10] * 10:  # mean 2.5
        control.add(v)
    u = means(treated, control)
    assert u.diff == pytest.approx(5.0) and u.relative == pytest.approx(2.0)
    assert u.method == "Welch's t-test"
    # variances: treated 70.512820..., control 19.230769...; SE = sqrt(1.762821 + 0.480769)
    v1, v0 = 70.51282051 / 40, 19.23076923 / 40
    se = math.sqrt(v1 + v0)
    assert se == pytest.approx(1.497862, abs=1e-6)
    # Welch-Satterthwaite: df = 58.80; t(0.975, 58.8) = 2.00114 (tables: 2.00172 at 58,
    # 2.00100 at 59)
    df = (v1 + v0) ** 2 / (v1**2 / 39 + v0**2 / 39)
    assert df == pytest.approx(58.80, abs=0.01)
    assert u.ci95 == pytest.approx((5 - 2.00114 * se, 5 + 2.00114 * se), abs=1e-4)
    # two-sided p of t = 3.338 at 58.8 df: 0.00148 (a little above the normal's 0.00084)
    assert u.p_value == pytest.approx(0.00148, abs=5e-5)


def test_a_group_of_one_has_no_mean_to_compare() -> None:
    a, b = Moments(), Moments()
    for _ in range(50):
        a.add(0)
    b.add(100)
    u = means(a, b)
    assert u.diff is None and "the control group has 1 customer(s)" in (u.insufficient or "")


def test_the_verdict_on_the_target() -> None:
    from clientela.campaigns.report import verdict

    kpi = {"metric": "conversion_rate", "uplift": 1.0}

    def said(low: float, high: float) -> str:
        u = {"conversion": {"uplift_pp": (low + high) / 2, "ci95": [low, high]}}
        answer = verdict(kpi, u, final=True)
        assert answer is not None
        return str(answer["verdict"])

    assert said(1.0, 3.0) == "met"  # the whole interval at or above the target
    assert said(-0.5, 0.9) == "not met"
    assert said(0.2, 2.5) == "cannot tell yet"
    unknown = verdict(kpi, {"conversion": {"insufficient": "the control group is empty"}}, False)
    assert unknown is not None and unknown["verdict"] == "cannot tell yet"
    assert "the control group is empty" in unknown["said"]
    assert verdict(None, {}, True) is None


def test_incremental_revenue_and_roi_leave_out_what_would_have_happened() -> None:
    from clientela.campaigns.report import Group, incremental

    treated = Group(targeted=1000, cost=50.0)
    revenue = {"diff": 0.25, "ci95": [0.05, 0.45]}  # per treated customer, against control
    got = incremental(revenue, treated)
    assert got["revenue"] == 250.0 and got["revenue_ci95"] == [50.0, 450.0]
    assert got["roi"] == 4.0 and got["roi_ci95"] == [0.0, 8.0]  # (250 - 50) / 50
    none = incremental({"insufficient": "the control group is empty"}, treated)
    assert none == {"cost": 50.0, "insufficient": "the control group is empty"}


def test_a_skewed_split_raises_the_sample_ratio_alarm(settings: Settings) -> None:
    """A lead list split 150/50 where the spec holds out 10% (expected 180/20): the
    chi-squared p is far below 0.001; the same list split 181/19 raises nothing."""
    from clientela.campaigns import report
    from clientela.db import session_scope
    from models import Campaign, CampaignMember
    from tests.factories import make_customer

    source = "control: {share: 0.1}\ntarget_kpi: {metric: conversion_rate, uplift: 1}\n"
    ids = []
    for _ in range(200):
        ids.append(make_customer(settings.db_url))
    with session_scope(settings.db_url) as session:
        from sqlmodel import col, select

        from models import Customer

        pks = session.exec(select(Customer.id).where(col(Customer.external_id).in_(ids))).all()
        for cid, held in (("skewed", 50), ("fair", 19)):
            session.add(Campaign(id=cid, name=cid, spec={"source": source}, stage="done"))
            for i, pk in enumerate(pks):
                session.add(CampaignMember(campaign_id=cid, customer_id=pk or 0,
                                           group="control" if i < held else "treated"))  # fmt: skip
    with session_scope(settings.db_url) as session:
        skewed = report.build(session, "skewed")["checks"]
        fair = report.build(session, "fair")["checks"]
    # chi2 = (150-180)^2/180 + (50-20)^2/20 = 5 + 45 = 50 on 1 df: p = 1.5e-12
    assert skewed["sample_ratio"]["p_value"] == pytest.approx(1.5375e-12, rel=1e-3)
    assert skewed["sample_ratio"]["alarm"] and skewed["alarm"]
    assert skewed["sample_ratio"]["observed_control_share"] == 0.25
    assert not fair["sample_ratio"]["alarm"] and not fair["alarm"]
    assert fair["control_contacted"] == 0


def test_variants_are_compared_with_each_other_and_adjusted_by_holm() -> None:
    from clientela.campaigns.report import Group, compare_variants

    def group(n: int, x: int) -> Group:
        return Group(targeted=n, conversions=x)

    def control_row(x: int, n: int) -> dict[str, Any]:
        u = proportions(x, n, 40, 1000)
        return {"uplift": {"conversion": {"p_value": u.p_value}}}

    three = {"a": group(1000, 100), "b": group(1000, 50), "c": group(1000, 95)}
    rows = [control_row(100, 1000), control_row(50, 1000), control_row(95, 1000)]
    got = compare_variants(three, rows)
    assert got is not None and got["winner"] is None  # a beats b, but not c
    assert got["said"].startswith("No winner yet")
    # Holm by hand over the 3 pairs and the 3 variants against control: sort the six
    # p-values, multiply the k-th smallest (from 0) by (6 - k), and keep them non-decreasing.
    raw = [p["p_value"] for p in got["pairs"]] + [
        r["uplift"]["conversion"]["p_value"] for r in rows
    ]
    order = sorted(range(6), key=lambda i: raw[i])
    expected, running = [0.0] * 6, 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, raw[i] * (6 - k)))
        expected[i] = running
    adjusted = [p["p_adjusted"] for p in got["pairs"]] + [
        r["uplift"]["conversion"]["p_adjusted"] for r in rows
    ]
    assert adjusted == pytest.approx(expected)
    two = compare_variants({"a": group(1000, 150), "b": group(1000, 50)}, rows[:2])
    assert two is not None and two["winner"] == "a" and "Holm" in two["adjustment"]
    assert compare_variants({"a": group(10, 1)}, rows[:1]) is None


def test_arms_are_compared_by_the_difference_of_their_uplifts() -> None:
    from clientela.campaigns.report import Group, compare_arms

    def group(n: int, x: int) -> Group:
        return Group(targeted=n, conversions=x)

    model = (group(1000, 120), group(200, 10), True)  # 12% against 5%: +7 pp
    chance = (group(1000, 70), group(200, 10), True)  # 7% against 5%: +2 pp
    got = compare_arms({"model": model, "random": chance})
    assert got is not None
    [pair] = got["pairs"]
    assert (pair["a"], pair["b"]) == ("model", "random")
    assert pair["diff_pp"] == pytest.approx(5.0)
    # Four independent groups: SE^2 = .12*.88/1000 + .05*.95/200 + .07*.93/1000 + .05*.95/200
    se = math.sqrt(0.12 * 0.88 / 1000 + 0.05 * 0.95 / 200 + 0.07 * 0.93 / 1000 + 0.05 * 0.95 / 200)
    assert pair["ci95"] == pytest.approx(
        [(0.05 - 1.959964 * se) * 100, (0.05 + 1.959964 * se) * 100], abs=1e-3
    )
    assert pair["p_value"] == pytest.approx(math.erfc(0.05 / se / math.sqrt(2)))
    assert pair["p_adjusted"] == pytest.approx(pair["p_value"])  # one comparison
    # Sharing one control, its rate and its variance cancel out.
    shared = group(200, 10)
    got = compare_arms(
        {"a": (group(1000, 120), shared, False), "b": (group(1000, 70), shared, False)}
    )
    assert got is not None
    se = math.sqrt(0.12 * 0.88 / 1000 + 0.07 * 0.93 / 1000)
    assert got["pairs"][0]["ci95"][1] == pytest.approx((0.05 + 1.959964 * se) * 100, abs=1e-3)
    assert compare_arms({"only": model}) is None
    # Nobody converted anywhere yet: no interval of width zero, but a plain "not yet".
    quiet = compare_arms(
        {"a": (group(50, 0), group(10, 0), True), "b": (group(40, 0), group(9, 0), True)}
    )
    assert quiet is not None
    assert quiet["pairs"] == [
        {"a": "a", "b": "b", "insufficient": "no variation in conversions yet"}
    ]
    # Visits can be compared instead of conversions (the Hillstrom replay does).
    visits = compare_arms(
        {
            "a": (Group(targeted=100, visits=30), Group(targeted=100, visits=10), True),
            "b": (Group(targeted=100, visits=20), Group(targeted=100, visits=10), True),
        },
        outcome="visits",
    )
    assert visits is not None and visits["measure"] == "visit uplift"
    assert visits["pairs"][0]["diff_pp"] == pytest.approx(10.0)


def test_the_page_of_an_arm_without_a_control_renders() -> None:
    """A campaign that holds nobody out has no incremental figures: the page says so instead
    of failing (it failed in the report activity, which retried without end)."""
    from clientela.campaigns import html
    from clientela.campaigns.report import Group, _uplifts, incremental, verdict

    treated, control = Group(targeted=5, sent=5), Group()
    uplift = _uplifts(treated, control)
    arm = {
        "arm": "main", "control": "shared", "treated": treated.as_dict(),
        "control_group": control.as_dict(), "uplift": uplift, "variants": [],
        "variant_comparison": None,
        "verdict": verdict({"metric": "conversion_rate", "uplift": 1.0}, uplift, True),
        "incremental": incremental(uplift["revenue_per_customer"], treated),
    }  # fmt: skip
    data = {
        "campaign": {"id": "x", "name": "X", "objective": "", "stage": "done",
                     "window": [None, None], "interim": False, "target_kpi": None},
        "checks": {"control_contacted": 0, "sample_ratio": None, "alarm": False},
        "arms": [arm], "arm_comparison": None,
        "breakdown": {"tier": [], "segment": [], "channel": []},
        "timeline": {"bucket": None, "points": []},
    }  # fmt: skip
    page = html.render(data)
    assert "Arm main: cannot tell yet." in page and "the control group is empty" in page
    assert "incremental revenue" not in page
