"""Activity of model training: learn, measure on held-out customers, store a version."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from clientela.db import session_scope
from clientela.predictive import spec as model_spec
from clientela.predictive.training import TrainingError, describe, train
from clientela.settings import Settings
from clientela.yamlfile import SpecError

log = logging.getLogger(__name__)


@dataclass
class TrainInput:
    name: str
    requested_by: str = ""


@dataclass
class TrainResult:
    name: str
    version: int
    summary: dict[str, Any] = field(default_factory=dict)


class ModelActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @activity.defn(name="models_train")
    def train(self, params: TrainInput) -> TrainResult:
        """Synchronous (scikit-learn holds the thread); heartbeats between pages. A retry
        of the same run finds the version it stored and returns it: one version per run."""
        info = activity.info()
        key = f"{info.workflow_id}/{info.workflow_run_id}"
        try:
            spec = model_spec.load(self.settings.predictive_dir, params.name)
            with session_scope(self.settings.db_url) as session:
                trained = train(
                    session, spec, key=key, by=params.requested_by, heartbeat=activity.heartbeat
                )
                summary = describe(trained.model)
        except (SpecError, TrainingError) as exc:
            raise ApplicationError(str(exc), type=type(exc).__name__, non_retryable=True) from None
        except ValueError as exc:  # the learner refused the data: the same on every attempt
            raise ApplicationError(
                f"model {params.name}: the learner refused the data ({exc})",
                type="TrainingError",
                non_retryable=True,
            ) from exc
        summary.pop("curve", None)
        log.info("trained model %s version %d", spec.name, summary["version"])
        return TrainResult(name=spec.name, version=summary["version"], summary=summary)
