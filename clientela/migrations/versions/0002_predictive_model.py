"""Predictive models: every trained version (docs/models.md).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A database made by a build of this version before migrations has the table already.
    if sa.inspect(op.get_bind()).has_table("predictive_model"):
        return
    op.create_table(
        "predictive_model",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", AutoString(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", AutoString(length=16), nullable=False),
        sa.Column("method", AutoString(length=32), nullable=False),
        sa.Column("outcome", AutoString(length=16), nullable=False),
        sa.Column("offer", AutoString(length=64), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("campaigns", sa.JSON(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rows", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("curve", sa.JSON(), nullable=False),
        sa.Column("artifact", sa.LargeBinary(), nullable=False),
        sa.Column("digest", AutoString(length=64), nullable=False),
        sa.Column("training_key", AutoString(length=200), nullable=False),
        sa.Column("trained_by", AutoString(length=128), nullable=False),
        sa.Column("trained_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name", "version"),
        sa.UniqueConstraint("training_key"),
    )
    op.create_index(op.f("ix_predictive_model_name"), "predictive_model", ["name"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_predictive_model_name"), table_name="predictive_model")
    op.drop_table("predictive_model")
