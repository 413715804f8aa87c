"""After a bulk write the planner is told how many rows there are (PostgreSQL; SQLite plans
from its indexes): a report right after a campaign must not join 100,000 members to their
messages by nested loops because the statistics still say the tables are empty."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from clientela.db import refresh_statistics, session_scope
from tests.test_rules_apply import bulk_customers


def test_refresh_statistics_tells_the_planner_the_rows_there_are(db_url: str) -> None:
    bulk_customers(db_url, 500)
    with session_scope(db_url) as session:
        postgres = session.get_bind().dialect.name == "postgresql"
        refresh_statistics(session, "customer")
        if postgres:
            rows = session.execute(
                text("SELECT reltuples FROM pg_class WHERE relname = 'customer'")
            ).scalar_one()
            assert rows == 500
        else:  # SQLite is left to plan from its indexes: no statistics are written
            stats = session.execute(
                text("SELECT count(*) FROM sqlite_master WHERE name LIKE 'sqlite_stat%'")
            ).scalar_one()
            assert stats == 0
        # Only the project's tables are named in the statement.
        with pytest.raises(ValueError, match="not tables of Clientela"):
            refresh_statistics(session, 'customer"; DROP TABLE customer; --')
