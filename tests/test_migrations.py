"""Upgrades keep the data: a database made by the last release before migrations (commit
fb84341, its own code run from git) is refused with the command to run, upgraded, and
every customer, message, campaign and case is still there and readable."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from sqlalchemy import inspect, text
from sqlmodel import select

from clientela import ROOT, migrations
from clientela.db import SchemaOutdated, dispose_all, get_engine, raw_engine, session_scope
from clientela.settings import Settings
from models import Campaign, CampaignMember, Complaint, Customer, Interaction, Message
from tests.processes import run_cli

PREVIOUS = "fb84341"  # the last commit that changed the schema before migrations

MAKE_OLD = """
import sys
sys.path.insert(0, sys.argv[1])
from datetime import datetime, timezone
from sqlmodel import Session, SQLModel, create_engine
import models
from models import *

engine = create_engine(sys.argv[2])
SQLModel.metadata.create_all(engine)
with Session(engine) as s:
    people = [Customer(external_id=f"OLD{i}", first_name=f"Ana{i}", email=f"ana{i}@example.com",
                       locale="es", attributes={"plan": "gold"}) for i in range(3)]
    s.add_all(people)
    s.commit()
    for c in people:
        s.refresh(c)
    s.add(Campaign(id="spring", name="Spring", stage="done", spec={"source": "id: spring"},
                   cost_per_message={"email": 0.01}))
    s.commit()
    for i, c in enumerate(people):
        s.add(CampaignMember(campaign_id="spring", customer_id=c.id, arm="main",
                             group="treated" if i else "control", channel="email",
                             address=c.email))
        s.add(Interaction(customer_id=c.id, channel="email", direction="inbound",
                          kind="conversion", campaign="spring", detail={"value": 12.5}))
    s.add(Message(key="spring:OLD1:message", customer_id=people[1].id, channel="email",
                  address="ana1@example.com", template="spring_offer", campaign="spring",
                  state="sent", provider_id="<m1@clientela>"))
    s.add(Complaint(customer_id=people[2].id, code="BILLING-01", description="Charged twice",
                    state="open"))
    s.commit()
print("made")
"""


def previous_models(tmp_path: Path) -> Path:
    """The previous release's ``models/`` package, from git."""
    done = subprocess.run(
        ["git", "-C", str(ROOT), "archive", PREVIOUS, "models"], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.fail(
            f"commit {PREVIOUS} is not in this checkout's history ({done.stderr.decode()[:200]}); "
            "the migration test needs a clone, not an export"
        )
    base = tmp_path / "previous"
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as archive:
        archive.extractall(base, filter="data")
    return base


def test_a_database_of_the_previous_release_is_upgraded_with_its_data(
    db_url: str, tmp_path: Path
) -> None:
    base = previous_models(tmp_path)
    made = subprocess.run(
        [sys.executable, "-c", MAKE_OLD, str(base), db_url],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the work tree: its models/ must not shadow the old one
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        check=False,
    )
    assert made.returncode == 0 and "made" in made.stdout, made.stderr
    dispose_all()
    # Every process refuses it, naming the command to run; nothing is changed.
    with pytest.raises(SchemaOutdated, match="run `clientela db upgrade`"):
        get_engine(db_url)
    engine = raw_engine(db_url)
    assert migrations.state(engine).kind == "unversioned"
    settings = Settings(home=tmp_path / "home", database_url=db_url)
    current = run_cli(settings, "db", "current")
    assert current.returncode == 1 and "from before migrations" in current.stdout
    upgraded = run_cli(settings, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    head = migrations.head()
    assert f"upgraded from 0001 (before migrations) to revision {head}" in upgraded.stdout
    assert migrations.state(engine).kind == "current"
    again = run_cli(settings, "db", "upgrade")
    assert f"at revision {head} already" in again.stdout
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).all() == [(head,)]
        # The indexes are the models' (migration 0003 dropped two the lead list outgrew).
        indexes = {
            i["name"]
            for i in inspect(conn).get_indexes("campaign_member")
            if "duplicates_constraint" not in i  # (PostgreSQL's index of the unique pair)
        }
        wanted = {i.name for i in CampaignMember.__table__.indexes}  # type: ignore[attr-defined]
        assert indexes - {None} == wanted, (indexes, wanted)
    engine.dispose()
    dispose_all()
    # Everything is still there, read through this version's models.
    with session_scope(db_url) as session:
        customers = session.exec(select(Customer).order_by(Customer.external_id)).all()
        assert [c.external_id for c in customers] == ["OLD0", "OLD1", "OLD2"]
        assert customers[0].attributes == {"plan": "gold"} and customers[0].locale == "es"
        campaign = session.get(Campaign, "spring")
        assert campaign is not None and campaign.stage == "done"
        members = session.exec(select(CampaignMember)).all()
        assert sorted(m.group for m in members) == ["control", "treated", "treated"]
        [message] = session.exec(select(Message)).all()
        assert (message.key, message.state) == ("spring:OLD1:message", "sent")
        [case] = session.exec(select(Complaint)).all()
        assert (case.code, case.description) == ("BILLING-01", "Charged twice")
        assert len(session.exec(select(Interaction)).all()) == 3
    # And it works as a database of this version: a report, a model table.
    from clientela.campaigns.report import build

    with session_scope(db_url) as session:
        report = build(session, "spring")
    assert report["arms"][0]["treated"]["conversions"] == 2


def test_a_new_database_is_made_whole_and_stamped(db_url: str) -> None:
    engine = get_engine(db_url)
    found = migrations.state(engine)
    assert (found.kind, found.revision) == ("current", migrations.head())
    assert [r for r, _ in migrations.history()] == ["0001", "0002", "0003"]


def test_a_database_from_a_newer_version_is_refused(db_url: str) -> None:
    engine = get_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    dispose_all()
    with pytest.raises(SchemaOutdated, match="made by a newer Clientela"):
        get_engine(db_url)
