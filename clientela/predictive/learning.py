"""Features into a matrix, and the learners: a propensity classifier, and the two uplift
approaches (two models; class transformation), each gradient boosting from scikit-learn."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from clientela.predictive.spec import Learner

Row = Mapping[str, Any]

#: A text feature with more values than this in training is left out (an identifier, say).
MAX_CATEGORIES = 50


@dataclass
class Encoder:
    """Numbers as they are (absent: NaN, which gradient boosting handles), yes/no as 1/0,
    text one column per value seen in training (absent or unseen: all zero).

    Written by hand rather than with scikit-learn's DictVectorizer: column by column over a
    page of dicts it encodes about ten times faster (``python -m bench.models``), and
    scoring an audience is mostly encoding.
    """

    wanted: list[str] = field(default_factory=list)  # empty: every feature seen
    numeric: list[str] = field(default_factory=list)
    categories: dict[str, list[str]] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)

    def fit(self, rows: Iterable[Row]) -> Encoder:
        kinds: dict[str, set[str]] = defaultdict(set)
        values: dict[str, set[str]] = defaultdict(set)
        wanted = set(self.wanted)
        for row in rows:
            for name, value in row.items():
                if wanted and name not in wanted:
                    continue
                if isinstance(value, bool | int | float):
                    kinds[name].add("number")
                elif isinstance(value, str):
                    kinds[name].add("text")
                    values[name].add(value)
        self.numeric = sorted(n for n, k in kinds.items() if k == {"number"})
        self.categories = {
            n: sorted(values[n])
            for n in sorted(kinds)
            if kinds[n] == {"text"} and len(values[n]) <= MAX_CATEGORIES
        }
        self.dropped = sorted(set(kinds) - set(self.numeric) - set(self.categories))
        return self

    @property
    def columns(self) -> list[str]:
        return self.numeric + [f"{n}={v}" for n, vs in self.categories.items() for v in vs]

    def transform(self, rows: Iterable[Row]) -> NDArray[np.float64]:
        page = rows if isinstance(rows, list) else list(rows)
        n = len(page)
        out = np.zeros((n, len(self.numeric) + sum(map(len, self.categories.values()))))
        nan = math.nan
        for j, name in enumerate(self.numeric):
            out[:, j] = np.fromiter(
                (
                    v if (v := row.get(name)) is not None and type(v) in _NUMBERS else nan
                    for row in page
                ),
                dtype=np.float64,
                count=n,
            )
        j = len(self.numeric)
        for name, values in self.categories.items():
            where = {v: j + k for k, v in enumerate(values)}
            for i, row in enumerate(page):
                column = where.get(row.get(name))
                if column is not None:
                    out[i, column] = 1.0
            j += len(values)
        return out

    @property
    def features(self) -> list[str]:
        return self.numeric + list(self.categories)


_NUMBERS = (int, float, bool)


def _classifier(learner: Learner, seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        max_iter=learner.max_iter,
        learning_rate=learner.learning_rate,
        max_depth=learner.max_depth,
        min_samples_leaf=learner.min_samples_leaf,
        l2_regularization=learner.l2_regularization,
        early_stopping=False,
        random_state=seed,
    )


def _fitted(
    learner: Learner,
    seed: int,
    matrix: NDArray[np.float64],
    target: NDArray[np.int_],
    weight: NDArray[np.float64] | None = None,
) -> Any:
    """A classifier fitted on ``matrix``. A column with no value at all here (a feature no
    control customer has, say) is given a constant: it cannot split anything, and
    scikit-learn's binning fails on a column that is all missing."""
    empty = np.isnan(matrix).all(axis=0)
    if empty.any():
        matrix = matrix.copy()
        matrix[:, empty] = 0.0
    return _classifier(learner, seed).fit(matrix, target, sample_weight=weight)


def _positive(estimator: Any, matrix: NDArray[np.float64]) -> NDArray[np.float64]:
    classes = list(estimator.classes_)
    if 1 not in classes:  # trained on one class only: nobody responded there
        return np.zeros(len(matrix))
    return np.asarray(estimator.predict_proba(matrix)[:, classes.index(1)], dtype=np.float64)


@dataclass
class Fitted:
    """A trained model: ``score`` gives, per customer, the probability of the outcome
    (propensity) or the change in it that contacting them makes (uplift)."""

    kind: str
    method: str
    encoder: Encoder
    estimators: list[Any]

    def score(self, rows: Iterable[Row]) -> NDArray[np.float64]:
        return self.score_matrix(self.encoder.transform(rows))

    def score_matrix(self, matrix: NDArray[np.float64]) -> NDArray[np.float64]:
        if self.method == "classifier":
            return _positive(self.estimators[0], matrix)
        if self.method == "two_model":
            return _positive(self.estimators[0], matrix) - _positive(self.estimators[1], matrix)
        return 2 * _positive(self.estimators[0], matrix) - 1  # class transformation


def fit(
    kind: str,
    method: str,
    learner: Learner,
    encoder: Encoder,
    matrix: NDArray[np.float64],
    treated: NDArray[np.int_],
    outcome: NDArray[np.int_],
    seed: int,
) -> Fitted:
    """Propensity learns from the treated (would a contacted customer respond?). Two models
    learn the treated's and the control's response apart and subtract. Class transformation
    learns one target, Z = 1 for a treated responder or a control non-responder, weighted so
    that treated and control count equally; then uplift = 2 P(Z) - 1."""
    if method == "classifier":
        mask = treated == 1
        return Fitted(kind, method, encoder, [_fitted(learner, seed, matrix[mask], outcome[mask])])
    if method == "two_model":
        t, c = treated == 1, treated == 0
        return Fitted(
            kind,
            method,
            encoder,
            [
                _fitted(learner, seed, matrix[t], outcome[t]),
                _fitted(learner, seed, matrix[c], outcome[c]),
            ],
        )
    share = float(treated.mean())
    z = treated * outcome + (1 - treated) * (1 - outcome)
    weight = np.where(treated == 1, 0.5 / share, 0.5 / (1 - share))
    return Fitted(kind, method, encoder, [_fitted(learner, seed, matrix, z, weight)])
