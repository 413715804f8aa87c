"""Message templates: list, read, write (checked first), and a preview for a customer."""

from __future__ import annotations

import asyncio
import os
import tempfile
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.deps import SettingsDep, audited, for_roles
from api.limits import unprocessable
from api.models import TemplateParts, TemplatePreview, TemplateRow, errors
from clientela.customers.records import UnknownCustomer, get_customer
from clientela.db import session_scope
from clientela.messaging.sending import customer_context
from clientela.messaging.templating import ALL_PARTS, DraftError, Templates, render_draft
from clientela.settings import Settings
from models.schemas import SUPPORTED_LOCALES, ExternalId

router = APIRouter(tags=["templates"])

TemplateName = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Locale = Annotated[str, Path(pattern=r"^(en|es)$")]
Part = Literal["subject.txt", "body.html", "body.txt", "sms.txt"]


class PartsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parts: dict[Part, Annotated[str, Field(max_length=100_000)]] = Field(min_length=1)


class PreviewIn(BaseModel):
    """Render for this customer: the saved parts, or drafts given here."""

    model_config = ConfigDict(extra="forbid")

    customer_id: ExternalId
    parts: dict[Part, Annotated[str, Field(max_length=100_000)]] = Field(default_factory=dict)


def _templates(settings: Settings) -> Templates:
    return Templates(settings.templates_dir, settings.default_locale)


def _saved(settings: Settings, name: str, locale: str) -> dict[str, str]:
    folder = settings.templates_dir / name / locale
    return {
        p: (folder / p).read_text(encoding="utf-8") for p in ALL_PARTS if (folder / p).is_file()
    }


def _draft_problems(exc: DraftError) -> JSONResponse:
    return unprocessable(
        [
            {
                "loc": ["body", "parts", part],
                "field": f"parts.{part}",
                "msg": message,
                "type": "template_error",
                "line": line,
            }
            for part, line, message in exc.problems
        ]
    )


@router.get(
    "/templates",
    dependencies=for_roles("marketer", "admin"),
    response_model=list[TemplateRow],
    responses=errors(401, 403),
)
async def template_list(settings: SettingsDep) -> list[dict[str, Any]]:
    """Every template with the parts it has in each locale."""
    root = settings.templates_dir
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
        locales = {
            d.name: sorted(p for p in ALL_PARTS if (d / p).is_file())
            for d in sorted(folder.iterdir())
            if d.is_dir() and d.name in SUPPORTED_LOCALES
        }
        rows.append({"name": folder.name, "locales": locales})
    return rows


@router.get(
    "/templates/{name}/{locale}",
    dependencies=for_roles("marketer", "admin"),
    response_model=TemplateParts,
    responses=errors(401, 403, 404),
)
async def template_read(settings: SettingsDep, name: TemplateName, locale: Locale) -> Any:
    parts = _saved(settings, name, locale)
    if not parts:
        return JSONResponse({"detail": f"no template {name!r} in {locale!r}"}, status_code=404)
    return {"name": name, "locale": locale, "parts": parts}


@router.put(
    "/templates/{name}/{locale}",
    dependencies=for_roles("marketer", "admin"),
    response_model=TemplateParts,
    responses=errors(400, 401, 403, 413),
)
async def template_write(
    settings: SettingsDep, name: TemplateName, locale: Locale, body: PartsIn, request: Request
) -> Any:
    """Write parts of a template: each is compiled in the sending sandbox first, and nothing
    is written if one fails (a 422 with its part and line)."""
    try:
        render_draft(_templates(settings), {str(k): v for k, v in body.parts.items()}, None)
    except DraftError as exc:
        return _draft_problems(exc)
    folder = settings.templates_dir / name / locale
    folder.mkdir(parents=True, exist_ok=True)
    before = _saved(settings, name, locale)
    for part, text in body.parts.items():  # each file replaced whole (write, then rename)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{part}.")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, folder / part)
    changed = sorted(p for p, t in body.parts.items() if before.get(p) != t)

    new = sorted(set(body.parts) - set(before))
    await audited(request, "template.changed", f"template:{name}/{locale}", parts=changed, new=new)
    return {"name": name, "locale": locale, "parts": _saved(settings, name, locale)}


@router.post(
    "/templates/{name}/{locale}/preview",
    dependencies=for_roles("marketer", "admin"),
    response_model=TemplatePreview,
    responses=errors(400, 401, 403, 404, 413),
)
async def template_preview(
    settings: SettingsDep, name: TemplateName, locale: Locale, body: PreviewIn
) -> Any:
    """The template rendered for a customer, saved parts overlaid with the drafts given;
    a missing merge field is a 422 with its part and line, as it would fail a send."""
    parts = _saved(settings, name, locale)
    parts.update({str(k): v for k, v in body.parts.items()})
    if not parts:
        return JSONResponse({"detail": f"no template {name!r} in {locale!r}"}, status_code=404)

    def context() -> dict[str, Any]:
        with session_scope(settings.db_url) as session:
            customer = get_customer(session=session, external_id=body.customer_id)
            return {
                **customer_context(customer),
                "site_url": settings.site_url,
                "unsubscribe_url": "#unsubscribe",
                "preferences_url": "#preferences",
                # A journey's triggering event; a preview has none (defaults show).
                "event": {"name": "", "properties": {}},
            }

    try:
        ctx = await asyncio.to_thread(context)
    except UnknownCustomer as exc:
        return JSONResponse({"detail": f"customer_id: {exc}"}, status_code=404)
    try:
        rendered = render_draft(_templates(settings), parts, ctx)
    except DraftError as exc:
        return _draft_problems(exc)
    return {"name": name, "locale": locale, "customer_id": body.customer_id, "rendered": rendered}
