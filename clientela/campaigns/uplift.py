"""Uplift against a control group, with its uncertainty; or a plain "too small to say".

Rates (response, conversion, visit) use the two-proportion z-test: the difference with a 95%
interval from the unpooled standard error, and a two-sided p-value from the pooled one (the
same as a chi-squared test without continuity correction). Amounts per customer (revenue)
use Welch's difference of means with the normal approximation. Both need enough data for
those approximations; below it the result says why instead of printing a number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Z95 = 1.959963984540054
MIN_GROUP = 30  # customers per group
MIN_EVENTS = 5  # successes and failures per group (the normal approximation's rule of thumb)


@dataclass(frozen=True)
class Uplift:
    treated: float  # rate or mean in the treated group
    control: float
    diff: float | None = None  # treated - control (a proportion, or an amount)
    relative: float | None = None  # diff / control
    ci95: tuple[float, float] | None = None
    p_value: float | None = None
    insufficient: str | None = None  # why no uplift is given

    @property
    def uplift_pp(self) -> float | None:
        """The difference of two rates in percentage points."""
        return None if self.diff is None else self.diff * 100


def _two_sided_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2))


def proportions(x1: int, n1: int, x0: int, n0: int) -> Uplift:
    """Treated: x1 of n1 responded; control: x0 of n0."""
    p1 = x1 / n1 if n1 else 0.0
    p0 = x0 / n0 if n0 else 0.0
    problems = []
    if n1 < MIN_GROUP or n0 < MIN_GROUP:
        problems.append(f"groups of {n1} and {n0}; at least {MIN_GROUP} each are needed")
    else:
        for label, x, n in (("treated", x1, n1), ("control", x0, n0)):
            if min(x, n - x) < MIN_EVENTS:
                problems.append(
                    f"the {label} group has {x} responses of {n}; at least {MIN_EVENTS} "
                    f"responses and {MIN_EVENTS} non-responses are needed"
                )
    if problems:
        return Uplift(treated=p1, control=p0, insufficient="; ".join(problems))
    diff = p1 - p0
    se = math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0)
    pooled = (x1 + x0) / (n1 + n0)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
    p_value = _two_sided_p(diff / se_pooled) if se_pooled else 1.0
    return Uplift(
        treated=p1,
        control=p0,
        diff=diff,
        relative=diff / p0 if p0 else None,
        ci95=(diff - Z95 * se, diff + Z95 * se),
        p_value=p_value,
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


def means(treated: Moments, control: Moments, nonzero_treated: int, nonzero_control: int) -> Uplift:
    """Difference of mean amounts per customer (e.g. revenue), Welch with a normal tail."""
    m1, m0 = treated.mean, control.mean
    problems = []
    if treated.n < MIN_GROUP or control.n < MIN_GROUP:
        problems.append(
            f"groups of {treated.n} and {control.n}; at least {MIN_GROUP} each are needed"
        )
    elif min(nonzero_treated, nonzero_control) < MIN_EVENTS:
        problems.append(
            f"{nonzero_treated} and {nonzero_control} customers with an amount; at least "
            f"{MIN_EVENTS} in each group are needed"
        )
    if problems:
        return Uplift(treated=m1, control=m0, insufficient="; ".join(problems))
    diff = m1 - m0
    se = math.sqrt(treated.variance / treated.n + control.variance / control.n)
    return Uplift(
        treated=m1,
        control=m0,
        diff=diff,
        relative=diff / m0 if m0 else None,
        ci95=(diff - Z95 * se, diff + Z95 * se),
        p_value=_two_sided_p(diff / se) if se else 1.0,
    )
