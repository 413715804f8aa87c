"""The one database engine: SQLite file by default, PostgreSQL by URL."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session, SQLModel, create_engine

import models  # noqa: F401  - registers every table on SQLModel.metadata

_engines: dict[str, Engine] = {}
_unwaiting: dict[str, Engine] = {}

#: How long a writer waits for SQLite's write lock before giving up, in seconds.
SQLITE_LOCK_WAIT = 30


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the API, the worker and the CLI read while one of them writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_LOCK_WAIT * 1000}")
    # Set-based statements over a large base (a lead list of a million members, a rules
    # apply's pages) touch more pages than the default 2 MiB cache holds; sorts and
    # materialised results stay in memory rather than in temporary files.
    cursor.execute("PRAGMA cache_size=-65536")
    cursor.execute("PRAGMA temp_store=MEMORY")
    cursor.close()
    # The stable draws of a campaign's lead list, in SQL (PostgreSQL has sha256 built in).
    from clientela.campaigns.listing import HASH_FUNCTION, hash_text

    dbapi_connection.create_function(HASH_FUNCTION, 1, hash_text, deterministic=True)


def get_engine(url: str) -> Engine:
    """One engine per URL per process; the schema is created on first use."""
    engine = _engines.get(url)
    if engine is not None:
        return engine
    engine = raw_engine(url)
    _prepare_schema(engine)
    _check_schema(engine)
    _carry_over_consent(engine)
    _engines[url] = engine
    return engine


def unwaiting_engine(url: str) -> Engine:
    """A second SQLite engine for write transactions that do not wait for the write lock:
    each begins with ``BEGIN IMMEDIATE``, which takes the lock or fails at once (``locked``)
    before any work is done, for a caller that waits its own way (the sending ledger waits on
    its event loop). The schema is checked through ``get_engine`` first."""
    engine = _unwaiting.get(url)
    if engine is None:
        get_engine(url)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 0})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "connect", _unwaiting_connection)
        event.listen(engine, "begin", _begin_immediate)
        _unwaiting[url] = engine
    return engine


def _unwaiting_connection(dbapi_connection: Any, _record: Any) -> None:
    """No busy wait, and no BEGIN of the driver's own (deferred, at the first write): each
    transaction begins with ``_begin_immediate``."""
    dbapi_connection.execute("PRAGMA busy_timeout=0")
    dbapi_connection.isolation_level = None


def _begin_immediate(conn: Any) -> None:
    # On the driver's connection: through SQLAlchemy's execution (a cursor, its events) it
    # was 2% of a sending worker's CPU, one transaction per round of its slots.
    try:
        conn.connection.driver_connection.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:  # as SQLAlchemy would have raised it (``locked`` reads it)
        raise DBAPIError.instance("BEGIN IMMEDIATE", (), exc, sqlite3.Error) from None


def locked(exc: OperationalError) -> bool:
    """Whether SQLite refused because another connection holds the lock (SQLITE_BUSY)."""
    code = getattr(exc.orig, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY


def raw_engine(url: str) -> Engine:
    """An engine that does not look at the schema (``clientela db`` upgrades through one)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
    return engine


def _prepare_schema(engine: Engine) -> None:
    """A new database gets the whole schema; an older one is refused with the command that
    upgrades it (``clientela.migrations``)."""
    from clientela import migrations

    found = migrations.state(engine)
    if found.kind == "empty":
        try:
            migrations.create(engine)
        except Exception:  # another process made it at the same moment: look again
            if migrations.state(engine).kind != "current":
                raise
        return
    if found.kind == "current":
        return
    where = engine.url.render_as_string(hide_password=True)
    if found.kind == "ahead":
        raise SchemaOutdated(
            f"database {where} is at schema revision {found.revision}, made by a newer "
            "Clientela than this one; run that version"
        )
    at = (
        f"revision {found.revision}"
        if found.kind == "behind"
        else "a schema from before migrations"
    )
    raise SchemaOutdated(
        f"database {where} has {at}; this version needs revision {found.head}. Back it up, "
        "then run `clientela db upgrade` (with the same CLIENTELA_DATABASE_URL): the data stays"
    )


def _carry_over_consent(engine: Engine) -> None:
    """A database made before the consent log: each channel's consent as it stands becomes
    the log's first record (once: the log is empty only then)."""
    from sqlalchemy import insert, literal, select
    from sqlmodel import col

    from models import Consent, ConsentRecord

    with engine.begin() as conn:
        if conn.execute(select(col(ConsentRecord.id)).limit(1)).first() is not None:
            return
        if conn.execute(select(col(Consent.id)).limit(1)).first() is None:
            return
        conn.execute(
            insert(ConsentRecord).from_select(
                ["customer_id", "channel", "topic", "granted", "source", "wording", "recorded_at"],
                select(
                    col(Consent.customer_id),
                    col(Consent.channel),
                    literal(""),
                    col(Consent.granted),
                    col(Consent.source),
                    literal("unknown: given before the log"),
                    col(Consent.recorded_at),
                ),
            )
        )


class SchemaOutdated(RuntimeError):
    pass


def _check_schema(engine: Engine) -> None:
    """Refuse a database whose tables lack columns this version writes (made by an older one)."""
    found = inspect(engine)
    tables = set(found.get_table_names())
    for table in SQLModel.metadata.sorted_tables:
        if table.name not in tables:
            raise SchemaOutdated(
                f"database {engine.url.render_as_string(hide_password=True)} lacks table "
                f"{table.name} although its schema revision is current: it was changed by "
                "hand. Restore it from a backup"
            )
        have = {c["name"] for c in found.get_columns(table.name)}
        missing = [c.name for c in table.columns if c.name not in have]
        if missing:
            raise SchemaOutdated(
                f"database {engine.url.render_as_string(hide_password=True)}: table "
                f"{table.name} lacks column(s) {', '.join(missing)} although its schema "
                "revision is current: it was changed by hand. Restore it from a backup"
            )


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    with Session(get_engine(url), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def refresh_statistics(session: Session, *tables: str) -> None:
    """Have PostgreSQL look at tables that just grew in bulk (a lead list, a campaign's
    messages). Its autovacuum would, later; until then the planner believes the rows are
    still few and joins them by nested loops: a 100,000-member report took minutes instead
    of a second. SQLite plans from its indexes and needs nothing.

    ``tables`` are the project's own table names (checked: they are part of the statement)."""
    unknown = [t for t in tables if t not in SQLModel.metadata.tables]
    if unknown:
        raise ValueError(f"not tables of Clientela: {', '.join(map(repr, unknown))}")
    if session.get_bind().dialect.name == "postgresql":
        for table in tables:
            session.execute(text(f'ANALYZE "{table}"'))


def dispose_all() -> None:
    for engine in (*_engines.values(), *_unwaiting.values()):
        engine.dispose()
    _engines.clear()
    _unwaiting.clear()
