"""The schema of commit fb84341, the last release before migrations.

Databases made before migrations existed are stamped here by ``clientela db upgrade`` and
upgraded from it; a new database is made whole at head and never runs this.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
