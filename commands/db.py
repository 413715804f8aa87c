"""`clientela db`: the database's schema revision, and upgrades that keep the data."""

from __future__ import annotations

import typer

from commands.common import _audit, fail, out, settings

db_app = typer.Typer(help="The database schema: upgrade, current, history.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database (CLIENTELA_DATABASE_URL) to this version's schema; back it up
    first. Every customer, message, campaign and case stays."""
    from clientela import migrations
    from clientela.db import raw_engine

    s = settings()
    engine = raw_engine(s.db_url)
    where = engine.url.render_as_string(hide_password=True)
    try:
        before, after = migrations.upgrade(engine)
    except RuntimeError as exc:
        raise fail(f"{where}: {exc}") from None
    finally:
        engine.dispose()
    if before == after:
        out.print(f"{where} is at revision {after} already.", highlight=False)
        return
    out.print(
        f"{where}: upgraded from {before or 'nothing (a new database)'} to revision {after}.",
        highlight=False,
    )
    _audit("db.upgraded", "database", {"from": before, "to": after})


@db_app.command("current")
def db_current() -> None:
    """The database's schema revision, and whether this version can use it."""
    from clientela import migrations
    from clientela.db import raw_engine

    engine = raw_engine(settings().db_url)
    try:
        found = migrations.state(engine)
    finally:
        engine.dispose()
    said = {
        "empty": "empty: it is made at the first start",
        "current": f"at revision {found.revision}, this version's",
        "behind": f"at revision {found.revision}; this version needs {found.head}: run "
        "`clientela db upgrade`",
        "unversioned": f"from before migrations (baseline {migrations.BASELINE}); this version "
        f"needs {found.head}: run `clientela db upgrade`",
        "ahead": f"at revision {found.revision}, newer than this version knows",
    }[found.kind]
    out.print(f"{engine.url.render_as_string(hide_password=True)}: {said}", highlight=False)
    if found.kind in ("behind", "unversioned", "ahead"):
        raise typer.Exit(1)


@db_app.command("history")
def db_history() -> None:
    """Every schema revision, oldest first."""
    from clientela import migrations

    for revision, doc in migrations.history():
        out.print(f"{revision}  {doc.splitlines()[0] if doc else ''}", highlight=False)
