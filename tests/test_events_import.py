"""Imported events: identical rows are counted, an event id makes a row the same event."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import select

from clientela.campaigns.imports import import_events
from clientela.db import session_scope
from models import Interaction
from tests.factories import make_customer


def conversions(db_url: str) -> list[float]:
    with session_scope(db_url) as session:
        rows = session.exec(select(Interaction).where(Interaction.kind == "conversion")).all()
        return sorted(float(r.detail["value"]) for r in rows)


def test_identical_rows_are_separate_events_and_a_reimport_adds_nothing(
    db_url: str, tmp_path: Path
) -> None:
    cid = make_customer(db_url)
    path = tmp_path / "events.csv"
    path.write_text(
        "type,customer_id,value,at\n"
        f"conversion,{cid},10.00,2027-03-01T10:00:00\n"
        f"conversion,{cid},10.00,2027-03-01T10:00:00\n"
        f"conversion,{cid},5.00,2027-03-01T10:00:00\n"
    )
    with session_scope(db_url) as session:
        first = import_events(session, path=path)
    assert (first.imported, first.skipped, first.errors) == (3, 0, [])
    assert conversions(db_url) == [5.0, 10.0, 10.0]  # revenue 25.00, not 15.00
    with session_scope(db_url) as session:
        again = import_events(session, path=path)
    assert (again.imported, again.skipped) == (0, 3)
    assert conversions(db_url) == [5.0, 10.0, 10.0]


def test_an_event_id_is_recorded_once_whatever_file_it_comes_in(
    db_url: str, tmp_path: Path
) -> None:
    cid = make_customer(db_url)
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    one.write_text(
        f"type,customer_id,event_id,value\nconversion,{cid},ord-1,10\nconversion,{cid},ord-1,10\n"
    )
    two.write_text(f"type,customer_id,event_id,value\nconversion,{cid},ord-1,12\n")
    with session_scope(db_url) as session:
        first = import_events(session, path=one)
        second = import_events(session, path=two)
    assert (first.imported, first.skipped) == (1, 1)
    assert (second.imported, second.skipped) == (0, 1)
    assert conversions(db_url) == [10.0]
