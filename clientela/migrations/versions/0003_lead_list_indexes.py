"""The lead list is built in one statement: two indexes of ``campaign_member`` go.

``ix_campaign_member_draw`` and ``ix_campaign_member_address`` served the statements that
held out the control group and excluded duplicates after the list was written; the list is
now written whole (``clientela.campaigns.listing``) and nothing reads through them, while
every member written paid for both (``bench.lead_list``).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

GONE = {
    "ix_campaign_member_draw": ["campaign_id", "arm", "tier", "draw"],
    "ix_campaign_member_address": ["campaign_id", "channel", "address"],
}


def upgrade() -> None:
    present = {i["name"] for i in sa.inspect(op.get_bind()).get_indexes("campaign_member")}
    for name in GONE:
        if name in present:
            op.drop_index(name, table_name="campaign_member")


def downgrade() -> None:
    for name, columns in GONE.items():
        op.create_index(name, "campaign_member", columns, unique=False)
