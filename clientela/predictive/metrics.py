"""How well a model ranks, on customers it did not learn from.

Propensity: the area under the ROC curve (scikit-learn). Uplift (no library keeps these up:
scikit-uplift, their usual home, has not been released since 2022 and pins old versions, so
they are written here, in numpy, and tested against hand computations):

- ``uplift_at(k)``: order everyone by score, keep the top ``k`` share, and take the treated's
  response rate minus the control's within it (scikit-uplift's ``uplift_at_k``, "overall").
- The Qini curve: after the top ``n``, the incremental responses
  ``R_t(n) - R_c(n) * N_t(n) / N_c(n)``; the uplift curve: ``(R_t/N_t - R_c/N_c) * n``.
- Qini coefficient and AUUC: the area between each curve and the random line (the straight
  line to the curve's end), over the same area of the perfect ranking (treated responders
  first, control responders last): 1 is perfect, 0 is no better than chance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

Array = NDArray[Any]


def auc(outcome: Array, score: Array) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(outcome)) < 2:
        return None
    return float(roc_auc_score(outcome, score))


def _cumulative(score: Array, treated: Array, outcome: Array) -> tuple[Array, ...]:
    order = np.argsort(-score, kind="stable")
    t, y = treated[order].astype(float), outcome[order].astype(float)
    n_t, n_c = np.cumsum(t), np.cumsum(1 - t)
    r_t, r_c = np.cumsum(t * y), np.cumsum((1 - t) * y)
    return n_t, n_c, r_t, r_c


def qini_curve(score: Array, treated: Array, outcome: Array) -> Array:
    """The Qini curve after each customer, from 0 (nobody targeted)."""
    n_t, n_c, r_t, r_c = _cumulative(score, treated, outcome)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = r_t - np.where(n_c > 0, r_c * n_t / n_c, 0.0)
    return np.concatenate([[0.0], q])


def uplift_curve(score: Array, treated: Array, outcome: Array) -> Array:
    n_t, n_c, r_t, r_c = _cumulative(score, treated, outcome)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate_t = np.where(n_t > 0, r_t / n_t, 0.0)
        rate_c = np.where(n_c > 0, r_c / n_c, 0.0)
    return np.concatenate([[0.0], (rate_t - rate_c) * (n_t + n_c)])


def _gain_area(curve: Array) -> float:
    """Area between the curve and the random line to its end."""
    x = np.arange(len(curve), dtype=float)
    line = x * (curve[-1] / x[-1]) if x[-1] else x
    return float(np.trapezoid(curve - line, x))


def _perfect(treated: Array, outcome: Array) -> Array:
    t, y = treated.astype(float), outcome.astype(float)
    return t * y - (1 - t) * y


def qini_coefficient(score: Array, treated: Array, outcome: Array) -> float:
    best = _gain_area(qini_curve(_perfect(treated, outcome), treated, outcome))
    return _gain_area(qini_curve(score, treated, outcome)) / best if best else 0.0


def auuc(score: Array, treated: Array, outcome: Array) -> float:
    best = _gain_area(uplift_curve(_perfect(treated, outcome), treated, outcome))
    return _gain_area(uplift_curve(score, treated, outcome)) / best if best else 0.0


def uplift_at(score: Array, treated: Array, outcome: Array, k: float) -> float | None:
    """Response rate of the treated minus the control's among the top ``k`` share."""
    top = np.argsort(-score, kind="stable")[: max(1, int(len(score) * k))]
    t, y = treated[top].astype(bool), outcome[top]
    if not t.any() or t.all():
        return None
    return float(y[t].mean() - y[~t].mean())


def curve_points(
    score: Array, treated: Array, outcome: Array, points: int = 20
) -> list[list[float]]:
    """The Qini curve at ``points`` even shares, as incremental responses per customer of the
    whole group (so that curves of groups of different sizes compare)."""
    q = qini_curve(score, treated, outcome)
    n = len(q) - 1
    out = []
    for i in range(points + 1):
        at = round(n * i / points)
        out.append([round(i / points, 4), round(float(q[at]) / n, 6) if n else 0.0])
    return out


def uplift_metrics(score: Array, treated: Array, outcome: Array) -> dict[str, Any]:
    def rounded(v: float | None) -> float | None:
        return None if v is None else round(v, 6)

    return {
        "qini": rounded(qini_coefficient(score, treated, outcome)),
        "auuc": rounded(auuc(score, treated, outcome)),
        "uplift_at_10": rounded(uplift_at(score, treated, outcome, 0.1)),
        "uplift_at_20": rounded(uplift_at(score, treated, outcome, 0.2)),
        "uplift_at_30": rounded(uplift_at(score, treated, outcome, 0.3)),
        "uplift_overall": rounded(uplift_at(score, treated, outcome, 1.0)),
    }
