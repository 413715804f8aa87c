"""`clientela events`: responses imported after the fact."""

from __future__ import annotations

from pathlib import Path

import typer

from commands.common import (
    _import,
)

events_app = typer.Typer(help="Responses and other customer events.", no_args_is_help=True)


@events_app.command("import")
def events_import(path: Path) -> None:
    """Responses after the fact (type, customer_id[, campaign, channel, value, at])."""
    from clientela.campaigns.imports import import_events

    _import(
        lambda session: import_events(session, path=path),
        lambda r: (
            f"{r.imported} events imported, {r.skipped} already imported before (skipped), "
            f"{len(r.errors)} problems"
        ),
    )
