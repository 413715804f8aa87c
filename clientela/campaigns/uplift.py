"""Uplift against a control group, with its uncertainty, at any size a group can answer.

Rates (conversion, visit, response) are compared with the two-proportion z-test (the
difference with a 95% Wald interval from the unpooled standard error, a two-sided p-value
from the pooled one: a chi-squared test without continuity correction) while every cell of
the 2x2 table expects at least 5 customers. Below that the normal approximation is not to
be trusted, and small counts are answered exactly instead of refused: Fisher's exact test
(scipy) for the p-value and Newcombe's hybrid score interval (statsmodels) for the
difference, both valid at counts of 0, 1 or 3. Amounts per customer (revenue) use Welch's
t-test and its t interval (scipy). ``method`` says which was used.

Only a group that truly cannot answer (nobody in it; for amounts, fewer than two) gets no
figure, and then ``insufficient`` says how many customers it would need: the size per group
that detects the target uplift (or, without one, the other group's rate doubled) with 80%
power at the 5% level (statsmodels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_effectsize

Z95 = 1.959963984540054
#: The least expected count of a 2x2 cell for the z-test's normal approximation.
MIN_EXPECTED = 5.0
Z_TEST = "two-proportion z-test, Wald interval"
EXACT = "Fisher's exact test, Newcombe interval (small counts)"
WELCH = "Welch's t-test"


@dataclass(frozen=True)
class Uplift:
    treated: float  # rate or mean in the treated group
    control: float
    diff: float | None = None  # treated - control (a proportion, or an amount)
    relative: float | None = None  # diff / control
    ci95: tuple[float, float] | None = None
    p_value: float | None = None
    insufficient: str | None = None  # why no uplift is given, and what would give one
    method: str = ""

    @property
    def uplift_pp(self) -> float | None:
        """The difference of two rates in percentage points."""
        return None if self.diff is None else self.diff * 100


def _two_sided_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2))


def needed_per_group(base: float, effect: float) -> int | None:
    """Customers per group to detect a rise of ``effect`` on a rate of ``base`` (80% power,
    5% two-sided); None when no such rise is possible."""
    target = base + effect
    if not 0 < target < 1 or effect <= 0:
        return None
    h = abs(proportion_effectsize(target, base))
    if h == 0:
        return None
    return math.ceil(NormalIndPower().solve_power(effect_size=h, alpha=0.05, power=0.8))


def _need(p: float, target: float | None) -> str:
    effect = target if target else max(p, 0.01)
    n = needed_per_group(p if p > 0 else 0.01, effect)
    if n is None:
        return ""
    return f"; about {n:,} customers per group would detect +{effect * 100:.2f} pp"


def proportions(x1: int, n1: int, x0: int, n0: int, target: float | None = None) -> Uplift:
    """Treated: x1 of n1 did it; control: x0 of n0. ``target``: the uplift that would mean
    success (a proportion), used only to say how many customers an empty group needs."""
    p1 = x1 / n1 if n1 else 0.0
    p0 = x0 / n0 if n0 else 0.0
    if n1 == 0 or n0 == 0:
        missing = "treated" if n1 == 0 else "control"
        return Uplift(
            treated=p1,
            control=p0,
            insufficient=f"the {missing} group is empty{_need(p0 if n0 else p1, target)}",
        )
    diff = p1 - p0
    total, events = n1 + n0, x1 + x0
    expected = min(r * c / total for r in (n1, n0) for c in (events, total - events))
    relative = diff / p0 if p0 else None
    if expected >= MIN_EXPECTED:
        se = math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
        pooled = events / total
        se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
        return Uplift(
            treated=p1,
            control=p0,
            diff=diff,
            relative=relative,
            ci95=(diff - Z95 * se, diff + Z95 * se),
            p_value=_two_sided_p(diff / se_pooled) if se_pooled else 1.0,
            method=Z_TEST,
        )
    low, high = confint_proportions_2indep(x1, n1, x0, n0, method="newcomb", compare="diff")
    p_value = float(stats.fisher_exact([[x1, n1 - x1], [x0, n0 - x0]]).pvalue)
    return Uplift(
        treated=p1,
        control=p0,
        diff=diff,
        relative=relative,
        ci95=(float(low), float(high)),
        p_value=min(1.0, p_value),
        method=EXACT,
    )


@dataclass
class Moments:
    """Count, sum and sum of squares: enough for a mean and its variance, in one pass."""

    n: int = 0
    total: float = 0.0
    squares: float = 0.0

    def add(self, value: float) -> None:
        self.n += 1
        self.total += value
        self.squares += value * value

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    @property
    def variance(self) -> float:
        if self.n < 2:
            return 0.0
        return max(0.0, (self.squares - self.total * self.total / self.n) / (self.n - 1))


def means(
    treated: Moments, control: Moments, nonzero_treated: int = 0, nonzero_control: int = 0
) -> Uplift:
    """Difference of mean amounts per customer (e.g. revenue): Welch's t-test and interval.
    (``nonzero_*``: customers with an amount, kept for callers; every size answers.)"""
    m1, m0 = treated.mean, control.mean
    if treated.n < 2 or control.n < 2:
        smaller = "treated" if treated.n < 2 else "control"
        return Uplift(
            treated=m1,
            control=m0,
            insufficient=f"the {smaller} group has {min(treated.n, control.n)} customer(s); "
            "a mean's uncertainty needs at least 2",
        )
    diff = m1 - m0
    v1, v0 = treated.variance / treated.n, control.variance / control.n
    se = math.sqrt(v1 + v0)
    if se == 0:  # every amount the same in both groups: nothing varies, nothing to test
        return Uplift(
            treated=m1, control=m0, diff=diff, relative=diff / m0 if m0 else None,
            ci95=(diff, diff), p_value=1.0 if diff == 0 else 0.0, method=WELCH,
        )  # fmt: skip
    # Welch-Satterthwaite degrees of freedom.
    df = (v1 + v0) ** 2 / (
        (v1**2 / (treated.n - 1) if v1 else 0.0) + (v0**2 / (control.n - 1) if v0 else 0.0)
    )
    t = diff / se
    half = float(stats.t.ppf(0.975, df)) * se
    return Uplift(
        treated=m1,
        control=m0,
        diff=diff,
        relative=diff / m0 if m0 else None,
        ci95=(diff - half, diff + half),
        p_value=float(2 * stats.t.sf(abs(t), df)),
        method=WELCH,
    )


def detectable(treated: int, control: int, base: float) -> float | None:
    """The smallest rise of a rate of ``base`` that groups of these sizes detect with 80%
    power at the 5% level (two-sided), as a proportion; None when a group is too small."""
    if treated < 2 or control < 2 or not 0 < base < 1:
        return None
    h = NormalIndPower().solve_power(
        effect_size=None, nobs1=treated, ratio=control / treated, alpha=0.05, power=0.8
    )
    rise = math.asin(math.sqrt(base)) + float(h) / 2
    return 1.0 - base if rise >= math.pi / 2 else math.sin(rise) ** 2 - base
