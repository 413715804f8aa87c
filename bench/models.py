"""Model training and scoring at a million customers: Clientela's path against
scikit-learn used directly, in the same run.

- rows: one feature dict per customer, as ``clientela.predictive.features`` gives them (the
  rules' features of generated customers, and their attributes as ``attr.<name>``), with a
  random half treated and a response that a campaign raises for frequent buyers;
- training, Clientela: encode the dicts (``Encoder``), split, fit (``learning.fit``) and
  measure on the held-out share, as ``training.train`` does after reading the database;
  baseline: the same estimators fitted by scikit-learn on the matrix built beforehand;
- scoring, Clientela: ``Fitted.score`` over pages of 2,000 dicts, as a model arm scores an
  audience; baseline: ``predict_proba`` on the prebuilt matrix in one call.

Reading the features from the database is not in these figures (``bench.campaign`` measures
the lead list).

    python -m bench.models [--customers 1000000] [--method two_model]
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

import numpy as np

from bench.rules import TODAY, customers
from clientela.predictive import metrics
from clientela.predictive.learning import Encoder, _classifier, fit
from clientela.predictive.spec import Learner
from rules.features import compute

PAGE = 2000


def rows(n: int) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
    rng = random.Random(3)
    out, treated, outcome = [], [], []
    for _, profile, consent, history in customers(n):
        values = dict(compute(profile, consent, history, TODAY))
        for k in ("email_consent", "sms_consent", "timezone"):
            values.pop(k, None)
        for name, value in profile["attributes"].items():
            values[f"attr.{name}"] = value
        t = rng.random() < 0.5
        p = 0.05 + (0.06 if t and history.purchases_12m >= 4 else 0.0)
        out.append(values)
        treated.append(int(t))
        outcome.append(int(rng.random() < p))
    return out, np.asarray(treated), np.asarray(outcome)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument(
        "--method", default="two_model", choices=["two_model", "class_transformation"]
    )
    args = parser.parse_args()
    n, learner = args.customers, Learner()

    started = time.perf_counter()
    data, treated, outcome = rows(n)
    print(f"{n:,} customers generated in {time.perf_counter() - started:.1f} s "
          f"(not part of any figure)")  # fmt: skip

    # Training: Clientela's path.
    started = time.perf_counter()
    encoder = Encoder().fit(data)
    matrix = encoder.transform(data)
    encoded = time.perf_counter() - started
    from sklearn.model_selection import train_test_split

    index = np.arange(n)
    learn, keep = train_test_split(
        index, test_size=0.3, random_state=0, stratify=treated * 2 + outcome
    )
    fitted = fit("uplift", args.method, learner, encoder, matrix[learn], treated[learn],
                 outcome[learn], 0)  # fmt: skip
    score = fitted.score_matrix(matrix[keep])
    measured = metrics.uplift_metrics(score, treated[keep], outcome[keep])
    ours = time.perf_counter() - started

    # Training: scikit-learn on the prebuilt matrix, the same estimators.
    started = time.perf_counter()
    x, t, y = matrix[learn], treated[learn], outcome[learn]
    if args.method == "two_model":
        _classifier(learner, 0).fit(x[t == 1], y[t == 1])
        _classifier(learner, 0).fit(x[t == 0], y[t == 0])
    else:
        share = t.mean()
        weight = np.where(t == 1, 0.5 / share, 0.5 / (1 - share))
        _classifier(learner, 0).fit(x, t * y + (1 - t) * (1 - y), sample_weight=weight)
    bare = time.perf_counter() - started

    # Scoring: pages of feature dicts against the prebuilt matrix.
    started = time.perf_counter()
    for i in range(0, n, PAGE):
        fitted.score(data[i : i + PAGE])
    scoring = time.perf_counter() - started
    started = time.perf_counter()
    fitted.score_matrix(matrix)
    scoring_bare = time.perf_counter() - started

    print(f"features: {', '.join(encoder.features)} ({matrix.shape[1]} columns)")
    print(f"held out: Qini {measured['qini']:.4f}, uplift at 30% "
          f"{measured['uplift_at_30'] * 100:+.2f} pp (everyone "
          f"{measured['uplift_overall'] * 100:+.2f} pp)")  # fmt: skip
    print()
    print(f"{'':<34}{'Clientela':>12}{'scikit-learn':>14}{'ratio':>8}")
    print(f"{'training ' + args.method + ', seconds':<34}{ours:>12.1f}{bare:>14.1f}"
          f"{bare / ours:>8.2f}")  # fmt: skip
    print(f"{'  of which encoding the dicts':<34}{encoded:>12.1f}")
    print(f"{'scoring, customers per second':<34}{n / scoring:>12,.0f}{n / scoring_bare:>14,.0f}"
          f"{scoring_bare / scoring:>8.2f}")  # fmt: skip
    print(f"{'scoring ' + f'{n:,}' + ' customers, seconds':<34}{scoring:>12.1f}"
          f"{scoring_bare:>14.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
