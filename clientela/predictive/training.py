"""Training a model from what campaigns recorded, storing it as a new version, loading it.

The examples are the members of the training campaigns who could be reached (treated and
held-out control alike); the outcome is whether they made the spec's response (a visit or a
conversion) attributed to that campaign. Each member's features are computed as they stood
when the campaign started (``rules.data.histories_of(until=...)``), so that a model never
learns from what the campaign itself caused.
"""

from __future__ import annotations

import hashlib
import pickle
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import func, or_
from sqlmodel import Session, col, select

from clientela.predictive import metrics
from clientela.predictive.features import features_at
from clientela.predictive.learning import Encoder, Fitted, fit
from clientela.predictive.spec import ModelSpec
from clientela.timeutil import as_utc, utcnow
from models import Campaign, CampaignMember, Customer, Direction, Interaction, PredictiveModel

PAGE = 2000


class TrainingError(ValueError):
    """Training cannot go on; the message says why and what to do."""


class ModelMissing(LookupError):
    pass


@dataclass
class Dataset:
    customer_ids: list[int]
    rows: list[dict[str, Any]]
    treated: NDArray[np.int_]
    outcome: NDArray[np.int_]
    campaigns: list[str]
    window: tuple[datetime | None, datetime | None]


@dataclass
class Holdout:
    customer_ids: list[int]
    treated: NDArray[np.int_]
    outcome: NDArray[np.int_]
    score: NDArray[np.float64]


@dataclass
class Trained:
    model: PredictiveModel
    holdout: Holdout | None  # None when the version was found already trained (a retry)


def _campaigns(session: Session, spec: ModelSpec, now: datetime) -> list[Campaign]:
    t = spec.training
    if t.campaigns:
        named = {
            c.id: c for c in session.exec(select(Campaign).where(col(Campaign.id).in_(t.campaigns)))
        }
        missing = [c for c in t.campaigns if c not in named]
        if missing:
            raise TrainingError(
                f"model {spec.name}: training.campaigns names no campaign {', '.join(missing)}"
            )
        return [named[c] for c in t.campaigns]
    since = now - t.window
    found = list(
        session.exec(
            select(Campaign)
            .where(col(Campaign.window_start) >= since, col(Campaign.window_start) <= now)
            .order_by(col(Campaign.id))
        )
    )
    if spec.offer:  # an offer's model learns from the campaigns that made that offer
        from clientela.campaigns.report import kept_spec

        found = [c for c in found if kept_spec(c).get("offer") == spec.offer]
    return found


def dataset(session: Session, spec: ModelSpec, now: datetime | None = None,
            heartbeat: Callable[[], None] = lambda: None) -> Dataset:  # fmt: skip
    now = now or utcnow()
    campaigns = _campaigns(session, spec, now)
    if not campaigns:
        raise TrainingError(
            f"model {spec.name}: no campaign started within {spec.training.window.days} days "
            "to learn from; run one with a control group, or name campaigns in training.campaigns"
        )
    ids: list[int] = []
    rows: list[dict[str, Any]] = []
    treated: list[int] = []
    outcome: list[int] = []
    starts = []
    for campaign in campaigns:
        at = as_utc(campaign.window_start or campaign.created_at)
        assert at is not None
        starts.append(at)
        responders = set(
            session.exec(
                select(Interaction.customer_id).where(
                    Interaction.campaign == campaign.id,
                    Interaction.kind == spec.outcome,
                    Interaction.direction == Direction.inbound,
                )
            ).all()
        )
        member: list[Any] = [
            col(CampaignMember.campaign_id) == campaign.id,
            col(CampaignMember.excluded) == "",
        ]
        arms = spec.training.arms
        if arms:  # the arms asked for, and a control they share
            member.append(or_(col(CampaignMember.arm).in_(arms), col(CampaignMember.arm) == ""))
        after = 0
        while True:
            page = session.exec(
                select(CampaignMember.id, CampaignMember.group, Customer)
                .join(Customer, col(Customer.id) == col(CampaignMember.customer_id))
                .where(*member, col(CampaignMember.id) > after)
                .order_by(col(CampaignMember.id))
                .limit(PAGE)
            ).all()
            if not page:
                break
            after = page[-1][0] or after
            customers = [c for _, _, c in page]
            features = features_at(session, customers, at)
            for _, group, customer in page:
                assert customer.id is not None
                ids.append(customer.id)
                rows.append(features[customer.id])
                treated.append(1 if group == "treated" else 0)
                outcome.append(1 if customer.id in responders else 0)
            heartbeat()
    return Dataset(
        customer_ids=ids,
        rows=rows,
        treated=np.asarray(treated, dtype=np.int_),
        outcome=np.asarray(outcome, dtype=np.int_),
        campaigns=[c.id for c in campaigns],
        window=(min(starts), max(as_utc(c.window_end) or now for c in campaigns)),
    )


def _check(spec: ModelSpec, data: Dataset) -> None:
    t = spec.training
    n = len(data.rows)
    if n < t.min_rows:
        raise TrainingError(
            f"model {spec.name}: {n} members to learn from in {', '.join(data.campaigns)}, "
            f"fewer than training.min_rows ({t.min_rows}); name more campaigns or widen the window"
        )
    treated = int(data.treated.sum())
    if treated == 0:
        raise TrainingError(f"model {spec.name}: nobody in the training campaigns was contacted")
    if spec.kind == "uplift" and treated == n:
        raise TrainingError(
            f"model {spec.name}: the training campaigns held nobody out; an uplift model "
            "learns from the difference with a control group (give the campaigns a control share)"
        )
    positives = int(data.outcome[data.treated == 1].sum())
    if positives == 0:
        raise TrainingError(
            f"model {spec.name}: no contacted customer made a {spec.outcome}; nothing to learn"
        )


def split(data: Dataset, holdout: float, seed: int) -> tuple[NDArray[np.int_], NDArray[np.int_]]:
    """Indices to learn from and to measure on, stratified by group and outcome."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(data.rows))
    strata = data.treated * 2 + data.outcome
    try:
        learn, keep = train_test_split(index, test_size=holdout, random_state=seed, stratify=strata)
    except ValueError:  # a stratum too small to split: a plain random split
        learn, keep = train_test_split(index, test_size=holdout, random_state=seed)
    return np.sort(learn), np.sort(keep)


def train(
    session: Session,
    spec: ModelSpec,
    *,
    key: str,
    by: str = "",
    now: datetime | None = None,
    heartbeat: Callable[[], None] = lambda: None,
) -> Trained:
    """Train ``spec`` and store it as the next version of its name. ``key`` names the run:
    a second call with the same key returns the version the first stored."""
    done = session.exec(select(PredictiveModel).where(PredictiveModel.training_key == key)).first()
    if done is not None:
        return Trained(done, None)
    started = time.monotonic()
    data = dataset(session, spec, now, heartbeat)
    _check(spec, data)
    encoder = Encoder(wanted=list(spec.features)).fit(data.rows)
    if not encoder.features:
        raise TrainingError(f"model {spec.name}: none of the features asked for has a value")
    matrix = encoder.transform(data.rows)
    learn, keep = split(data, spec.training.holdout, spec.training.seed)
    fitted = fit(
        spec.kind,
        spec.how,
        spec.learner,
        encoder,
        matrix[learn],
        data.treated[learn],
        data.outcome[learn],
        spec.training.seed,
    )
    heartbeat()
    score = fitted.score_matrix(matrix[keep])
    t, y = data.treated[keep], data.outcome[keep]
    measured: dict[str, Any] = {
        "base_rate": round(float(y[t == 1].mean()), 6) if (t == 1).any() else None,
    }
    curve: list[list[float]] = []
    if spec.kind == "propensity":
        measured["auc"] = metrics.auc(y[t == 1], score[t == 1])
    elif (t == 0).any():
        measured.update(metrics.uplift_metrics(score, t, y))
        curve = metrics.curve_points(score, t, y)
    artifact = pickle.dumps(fitted, protocol=pickle.HIGHEST_PROTOCOL)
    version = (
        session.exec(
            select(func.max(PredictiveModel.version)).where(PredictiveModel.name == spec.name)
        ).one()
        or 0
    ) + 1
    row = PredictiveModel(
        name=spec.name,
        version=version,
        kind=spec.kind,
        method=spec.how,
        outcome=spec.outcome,
        offer=spec.offer or "",
        spec=spec.model_dump(mode="json"),
        features=encoder.features,
        campaigns=data.campaigns,
        window_start=data.window[0],
        window_end=data.window[1],
        rows={
            "learn": len(learn),
            "holdout": len(keep),
            "treated": int(data.treated.sum()),
            "control": int(len(data.rows) - data.treated.sum()),
            "responders": int(data.outcome.sum()),
        },
        metrics=measured,
        curve=curve,
        artifact=artifact,
        digest=hashlib.sha256(artifact).hexdigest(),
        training_key=key,
        trained_by=by,
        seconds=round(time.monotonic() - started, 3),
    )
    session.add(row)
    session.commit()
    session.refresh(row)
    return Trained(row, Holdout([data.customer_ids[i] for i in keep], t, y, score))


def latest(session: Session, name: str, version: int | None = None) -> PredictiveModel:
    query = select(PredictiveModel).where(PredictiveModel.name == name)
    if version is not None:
        query = query.where(PredictiveModel.version == version)
    row = session.exec(query.order_by(col(PredictiveModel.version).desc()).limit(1)).first()
    if row is None:
        which = f"version {version} of model {name!r}" if version else f"model {name!r}"
        raise ModelMissing(
            f"no trained {which}: run `clientela models train {name}` (see docs/models.md)"
        )
    return row


_loaded: dict[str, Fitted] = {}
_lock = threading.Lock()


def fitted_of(row: PredictiveModel) -> Fitted:
    """The stored estimator, checked against its digest, kept in memory once loaded."""
    with _lock:
        hit = _loaded.get(row.digest)
        if hit is not None:
            return hit
    if hashlib.sha256(row.artifact).hexdigest() != row.digest:
        raise ModelMissing(
            f"model {row.name} version {row.version}: the stored artifact does not match its "
            "digest; train the model again"
        )
    fitted: Fitted = pickle.loads(row.artifact)  # our own artifact, its digest checked
    with _lock:
        _loaded[row.digest] = fitted
    return fitted


def _iso(at: datetime | None) -> str | None:
    found = as_utc(at) if at is not None else None
    return found.isoformat() if found is not None else None


def describe(row: PredictiveModel) -> dict[str, Any]:
    """What ``models list|show`` and the API give: everything but the artifact."""
    return {
        "name": row.name,
        "version": row.version,
        "kind": row.kind,
        "method": row.method,
        "outcome": row.outcome,
        "offer": row.offer or None,
        "features": row.features,
        "campaigns": row.campaigns,
        "window": [_iso(row.window_start), _iso(row.window_end)],
        "rows": row.rows,
        "metrics": row.metrics,
        "curve": row.curve,
        "trained_at": _iso(row.trained_at),
        "trained_by": row.trained_by,
        "seconds": row.seconds,
    }
