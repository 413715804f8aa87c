"""Schema migrations (Alembic): upgrades keep the data.

- A new, empty database gets the whole schema at once and is stamped with the latest
  revision (``head``).
- A database at an older revision is refused by every process, with the command to run:
  ``clientela db upgrade`` (after a backup). ``clientela db current`` and ``db history`` show
  where it stands.
- A database made before migrations existed (no ``alembic_version`` table) is taken to be at
  the baseline, the schema of commit fb84341, the last release without them; ``db upgrade``
  stamps it there and goes on.

A change to the tables in ``models/`` comes with a revision in ``versions/``, numbered
after the last (``script.py.mako`` is its template). To draft one, make a database with the
previous commit's code and compare it with the models (alembic's ``produce_migrations``, as
0002 was drafted); then read it, guard it for databases that have the change already, and let
``tests/test_migrations.py`` upgrade a database of the previous schema on SQLite and
PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, Engine
from sqlmodel import SQLModel

HERE = Path(__file__).resolve().parent
#: The schema of the last release before migrations: databases without a version are here.
BASELINE = "0001"


def config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def script() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def head() -> str:
    found = script().get_current_head()
    assert found is not None
    return found


@dataclass(frozen=True)
class State:
    kind: str  # "empty", "current", "behind", "unversioned", "ahead"
    revision: str | None
    head: str


def state(engine: Engine) -> State:
    """Where a database stands against this version's migrations."""
    latest = head()
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        if not tables - {"alembic_version"}:
            return State("empty", None, latest)
        if "alembic_version" not in tables:
            return State("unversioned", None, latest)
        revision = MigrationContext.configure(conn).get_current_revision()
    if revision == latest:
        return State("current", revision, latest)
    known = {s.revision for s in script().walk_revisions()}
    if revision in known or revision is None:
        return State("behind", revision, latest)
    return State("ahead", revision, latest)


def create(engine: Engine) -> None:
    """An empty database: stamped at head, then every table, in one transaction. The stamp
    goes first so that a second process starting at the same moment never sees tables
    without a version (it waits for the transaction, or makes the same tables again)."""
    with engine.begin() as conn:
        command.stamp(config(conn), "head")
        SQLModel.metadata.create_all(conn)


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Bring a database to head; returns (from, to). An unversioned one starts at the
    baseline; an empty one is created."""
    found = state(engine)
    if found.kind == "empty":
        create(engine)
        return None, found.head
    if found.kind == "ahead":
        raise RuntimeError(
            f"the database is at revision {found.revision}, which this version does not know: "
            "it was upgraded by a newer Clientela; run that version"
        )
    with engine.begin() as conn:
        if found.kind == "unversioned":
            command.stamp(config(conn), BASELINE)
        command.upgrade(config(conn), "head")
    return found.revision or f"{BASELINE} (before migrations)", found.head


def history() -> list[tuple[str, str]]:
    """Every revision, oldest first, with what it does."""
    revisions = list(script().walk_revisions())
    return [(r.revision, (r.doc or "").strip()) for r in reversed(revisions)]
