"""Scratch PostgreSQL databases for the benchmarks' ``--db URL``."""

from __future__ import annotations

import sys
import time

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import ArgumentError, DBAPIError

from clientela.db import dispose_all


class Scratch:
    """Scratch databases on a PostgreSQL server, made by a benchmark and dropped at its end
    (on failure too): a benchmark never writes into a database it was pointed at."""

    def __init__(self, url: str, prefix: str) -> None:
        try:
            self.admin = make_url(url)
        except ArgumentError:
            sys.exit(f"--db: {url!r} is not a database URL (postgresql+psycopg://user@host/db)")
        if self.admin.get_backend_name() != "postgresql":
            sys.exit(f"--db: {url!r} is not a PostgreSQL URL (SQLite is the default)")
        self.server = create_engine(self.admin, isolation_level="AUTOCOMMIT")
        self.prefix = f"{prefix}_{int(time.time())}"
        self.made: list[str] = []

    def create(self, suffix: str, template: str = "") -> str:
        name = f"{self.prefix}_{suffix}"
        try:
            conn = self.server.connect()
        except DBAPIError as exc:
            where = self.admin.render_as_string(hide_password=True)
            sys.exit(f"--db: cannot reach {where!r}: {str(exc.orig).strip()}")
        with conn:
            conn.execute(
                text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
            )
        self.made.append(name)
        return name

    def url(self, name: str) -> str:
        return self.admin.set(database=name).render_as_string(hide_password=False)

    def drop(self) -> None:
        if not self.made:  # nothing was made (the server could not be reached)
            return
        dispose_all()
        with self.server.connect() as conn:
            for name in reversed(self.made):
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.server.dispose()
