"""Model specs: ``predictive/<name>.yaml``, validated with file, line and field.

``docs/models.md`` lists the keys; ``predictive/offer-uplift.yaml`` is an example.
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from clientela.settings import Duration
from clientela.yamlfile import Problem, SpecError, load_model, read_source

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
DOCS = "docs/models.md"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Training(_Strict):
    campaigns: list[str] = Field(
        default_factory=list,
        description="campaigns whose members and responses it learns from; empty: every one "
        "that has sent within the window",
    )
    arms: list[str] = Field(default_factory=list, description="only these arms; empty: all")
    window: Duration = Field(
        timedelta(days=365), description="campaigns that started within this long before"
    )
    holdout: float = Field(0.3, gt=0, lt=1, description="share kept apart for the metrics")
    min_rows: int = Field(200, ge=20, description="fewer rows than this: training refuses")
    seed: int = Field(0, ge=0, description="the split and the learner's randomness")


class Learner(_Strict):
    """Gradient boosting (scikit-learn's HistGradientBoostingClassifier)."""

    max_iter: int = Field(100, ge=1, le=2000)
    learning_rate: float = Field(0.05, gt=0, le=1)
    max_depth: int | None = Field(3, ge=1, le=32)
    min_samples_leaf: int = Field(200, ge=1)
    l2_regularization: float = Field(0.0, ge=0)


class ModelSpec(_Strict):
    name: str = Field(pattern=NAME.pattern)
    description: str = ""
    kind: Literal["uplift", "propensity"]
    method: Literal["two_model", "class_transformation", "classifier"] | None = Field(
        None,
        description="uplift: two_model (default) or class_transformation; propensity: classifier",
    )

    @field_validator("method")
    @classmethod
    def _method_fits_kind(cls, method: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("kind")
        if kind == "uplift" and method == "classifier":
            raise ValueError("an uplift model's method is two_model or class_transformation")
        if kind == "propensity" and method not in (None, "classifier"):
            raise ValueError("a propensity model's method is classifier")
        return method

    outcome: Literal["visit", "conversion"] = Field(
        "conversion", description="a response a control group can show"
    )
    offer: str | None = Field(
        None, description="propensity: the offer it predicts (orders next best offers)"
    )
    features: list[str] = Field(
        default_factory=list,
        description="feature names (docs/rules.md; attr.<name> for attributes); empty: all",
    )
    training: Training = Field(default_factory=Training)
    learner: Learner = Field(default_factory=Learner)
    retrain: Duration | None = Field(None, description="retrain on this schedule (e.g. 7d)")

    @field_validator("retrain")
    @classmethod
    def _not_too_often(cls, every: timedelta | None) -> timedelta | None:
        if every is not None and every < timedelta(hours=1):
            raise ValueError("at most once an hour")
        return every

    @model_validator(mode="after")
    def _default_method(self) -> ModelSpec:
        if self.method is None:
            self.method = "classifier" if self.kind == "propensity" else "two_model"
        return self

    @property
    def how(self) -> str:
        assert self.method is not None
        return self.method


def path_of(directory: Path, name: str) -> Path:
    if not NAME.match(name):
        raise SpecError(
            [Problem(name, 1, 1, "a model name is lower-case letters, digits and dashes")]
        )
    return directory / f"{name}.yaml"


def load(directory: Path, name: str) -> ModelSpec:
    """The spec ``<directory>/<name>.yaml``; its ``name`` must be the file's."""
    path = path_of(directory, name)
    if not path.is_file():
        known = ", ".join(names(directory)) or "none"
        raise SpecError(
            [Problem(str(path), 1, 1, f"no model spec {name!r} (models here: {known})")]
        )
    return loads(read_source(path), str(path), expected=name)


def loads(source: str, path: str, expected: str | None = None) -> ModelSpec:
    spec, positions = load_model(source, path, ModelSpec, DOCS)
    if expected is not None and spec.name != expected:
        line, col = positions.at(("name",))
        raise SpecError(
            [Problem(path, line, col, f"name: {spec.name!r} differs from the file's {expected!r}")]
        )
    return spec


def names(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.yaml") if NAME.match(p.stem))
