"""`clientela service`: service indicators."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from commands.common import (
    _write_page,
    out,
    settings,
)

service_app = typer.Typer(help="Customer service indicators.", no_args_is_help=True)


@service_app.command("report")
def service_report(
    since: Annotated[
        datetime | None, typer.Option(help="Only cases opened since (e.g. 2026-11-01)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The documented JSON report")] = False,
    html_path: Annotated[Path | None, typer.Option("--html", help="Also write a page")] = None,
) -> None:
    """Response and resolution times, breaches, frequent codes and satisfaction, by tier."""
    from clientela.db import session_scope
    from clientela.service import report

    s = settings()
    start = since.replace(tzinfo=UTC) if since is not None and since.tzinfo is None else since
    with session_scope(s.db_url) as session:
        data = report.build(session, since=start)
    if html_path is not None:
        _write_page(html_path, report.render_html(data))
    if as_json:
        print(json.dumps(data, indent=2))
        return
    out.print(report.render_text(data), highlight=False)
