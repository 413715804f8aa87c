"""Alembic's environment: the connection comes from ``clientela.migrations.config``."""

from alembic import context
from sqlmodel import SQLModel

import models  # noqa: F401  - every table on SQLModel.metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `clientela db upgrade`")
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=True,  # SQLite alters a table by copying it; the batch mode does that
)
with context.begin_transaction():
    context.run_migrations()
