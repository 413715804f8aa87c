"""Uplift, intervals and p-values against values computed by hand."""

from __future__ import annotations

import math

import pytest

from clientela.campaigns.uplift import Moments, means, proportions


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


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ((3, 20, 1, 20), "groups of 20 and 20; at least 30 each"),
        ((2, 500, 10, 500), "the treated group has 2 responses of 500"),
        ((498, 500, 400, 500), "the treated group has 498 responses of 500"),
        ((5, 100, 0, 100), "the control group has 0 responses of 100"),
    ],
)
def test_too_little_data_says_so_instead_of_a_number(args: tuple[int, ...], why: str) -> None:
    u = proportions(*args)
    assert u.diff is None and u.ci95 is None and u.p_value is None
    assert u.insufficient is not None and why in u.insufficient


def test_difference_of_means_by_hand() -> None:
    treated, control = Moments(), Moments()
    for v in [0, 0, 10, 20] * 10:  # mean 7.5
        treated.add(v)
    for v in [0, 0, 0, 10] * 10:  # mean 2.5
        control.add(v)
    u = means(treated, control, nonzero_treated=20, nonzero_control=10)
    assert u.diff == pytest.approx(5.0) and u.relative == pytest.approx(2.0)
    # variances: treated 70.512820..., control 19.230769...; SE = sqrt(1.762821 + 0.480769)
    se = math.sqrt(70.51282051 / 40 + 19.23076923 / 40)
    assert se == pytest.approx(1.497862, abs=1e-6)
    assert u.ci95 == pytest.approx((5 - 1.959964 * se, 5 + 1.959964 * se), abs=1e-6)
    assert u.p_value == pytest.approx(math.erfc(5 / se / math.sqrt(2)))


def test_means_need_enough_customers_with_an_amount() -> None:
    a, b = Moments(), Moments()
    for _ in range(50):
        a.add(0)
        b.add(0)
    a.add(100)
    u = means(a, b, nonzero_treated=1, nonzero_control=0)
    assert u.diff is None and "at least 5 in each group" in (u.insufficient or "")
