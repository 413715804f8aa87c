"""Predictive models: the versions trained, with what they learnt from and their figures."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query
from sqlmodel import col, select

from api.deps import SettingsDep, for_roles
from api.models import PredictiveModelOut, errors
from clientela.db import session_scope
from clientela.predictive.training import ModelMissing, describe, latest
from models import PredictiveModel

router = APIRouter(tags=["models"])

ModelName = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]


@router.get(
    "/models",
    dependencies=for_roles("marketer", "approver", "admin"),
    response_model=list[PredictiveModelOut],
    responses=errors(401, 403),
)
async def list_models(settings: SettingsDep) -> list[dict[str, Any]]:
    """Every trained version, by name and version (`clientela models list --json`)."""

    def read() -> list[dict[str, Any]]:
        with session_scope(settings.db_url) as session:
            rows = session.exec(
                select(PredictiveModel).order_by(
                    col(PredictiveModel.name), col(PredictiveModel.version)
                )
            ).all()
            return [describe(r) for r in rows]

    return await asyncio.to_thread(read)


@router.get(
    "/models/{name}",
    dependencies=for_roles("marketer", "approver", "admin"),
    response_model=PredictiveModelOut,
    responses=errors(401, 403, 404),
)
async def show_model(
    settings: SettingsDep,
    name: ModelName,
    version: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> dict[str, Any]:
    """The latest version of a model, or the one asked for."""

    def read() -> dict[str, Any]:
        with session_scope(settings.db_url) as session:
            return describe(latest(session, name, version))

    try:
        return await asyncio.to_thread(read)
    except ModelMissing as exc:
        raise HTTPException(404, str(exc)) from None
