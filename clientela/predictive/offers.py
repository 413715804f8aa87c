"""Next best offers: where a propensity model predicts an offer's acceptance, the tier's
offers are ordered by what offering each is worth to the customer's account: the predicted
propensity times the offer's margin (``rules.decide.decide``)."""

from __future__ import annotations

from sqlmodel import Session, col, select

from clientela.predictive.features import features_at
from clientela.predictive.training import fitted_of
from clientela.timeutil import utcnow
from models import Customer, PredictiveModel
from rules.model import Rules


def offer_models(session: Session, offers: set[str]) -> dict[str, PredictiveModel]:
    """The latest propensity model of each offer (of those named), if any."""
    rows = session.exec(
        select(PredictiveModel)
        .where(PredictiveModel.kind == "propensity", col(PredictiveModel.offer).in_(offers))
        .order_by(col(PredictiveModel.trained_at).desc(), col(PredictiveModel.id).desc())
    ).all()
    found: dict[str, PredictiveModel] = {}
    for row in rows:
        found.setdefault(row.offer, row)
    return found


def offer_values(
    session: Session, rules: Rules, customers: list[Customer]
) -> dict[int, dict[str, float]]:
    """Per customer, per offer with a model: propensity times margin (1 when none is set)."""
    margins = {o.name: (1.0 if o.margin is None else o.margin) for o in rules.spec.offers}
    if not margins or not customers:
        return {}
    models = offer_models(session, set(margins))
    if not models:
        return {}
    features = features_at(session, customers, utcnow())
    rows = [features[c.id] for c in customers if c.id is not None]
    out: dict[int, dict[str, float]] = {c.id: {} for c in customers if c.id is not None}
    for offer, model in models.items():
        scores = fitted_of(model).score(rows)
        for customer, p in zip(customers, scores, strict=True):
            if customer.id is not None:
                out[customer.id][offer] = float(p) * margins[offer]
    return out
