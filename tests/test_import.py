"""Customer import: good rows in, every bad row named with its line and field."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlmodel import select

from clientela.customers.records import customer_view, import_customers
from clientela.db import session_scope
from clientela.tables import ImportFileError
from models import Customer

CSV = """external_id,first_name,email,phone,locale,birthday,email_consent,attr_spend,attr_plan
A1,Ana,ana@example.com,+34600111222,es,1990-02-28,true,120.5,gold
A2,Bob,not-an-email,+14155550100,en,1985-07-01,true,10,basic
A3,Cid,cid@example.com,600 111,es,1970-13-01,false,3,basic
A4,"Dora, Jr.",dora@example.com,,en,,yes,7,basic
A1,Ana again,ana2@example.com,,es,,true,1,basic
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_import_reports_bad_rows_and_keeps_good_ones(db_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, "customers.csv", CSV)
    with session_scope(db_url) as session:
        result = import_customers(session=session, path=path)
    assert (result.created, result.updated) == (2, 0)
    messages = [str(e) for e in result.errors]
    assert (
        f"{path}:3: email: 'not-an-email' is not a usable email address: "
        "An email address must have an @-sign." in messages
    )
    assert any(m.startswith(f"{path}:4: phone:") for m in messages)
    assert any(m.startswith(f"{path}:4: birthday:") for m in messages)
    assert f"{path}:6: external_id: 'A1' already appears on line 2" in messages
    with session_scope(db_url) as session:
        ids = sorted(c.external_id for c in session.exec(select(Customer)).all())
        view = customer_view(session=session, external_id="A1")
        dora = customer_view(session=session, external_id="A4")
    assert ids == ["A1", "A4"]  # nothing of the bad rows was written
    assert view["profile"]["attributes"] == {"spend": 120.5, "plan": "gold"}
    assert view["consent"]["email"]["granted"] is True
    assert dora["profile"]["first_name"] == "Dora, Jr."


def test_reimport_updates_instead_of_duplicating(db_url: str, tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", "external_id,first_name\nB1,Bea\n")
    with session_scope(db_url) as session:
        import_customers(session=session, path=path)
    path.write_text("external_id,first_name,attr_score\nB1,Beatriz,9\n")
    with session_scope(db_url) as session:
        result = import_customers(session=session, path=path)
        view = customer_view(session=session, external_id="B1")
    assert (result.created, result.updated) == (0, 1)
    assert view["profile"]["first_name"] == "Beatriz"
    assert view["profile"]["attributes"] == {"score": 9}


def test_jsonl_import(db_url: str, tmp_path: Path) -> None:
    lines = [
        json.dumps({"external_id": "J1", "email": "j1@example.com", "attributes": {"ltv": 99}}),
        "{not json",
        json.dumps(["a", "list"]),
        "",
        json.dumps({"external_id": "J2", "timezone": "Nowhere/City"}),
    ]
    path = write(tmp_path, "c.jsonl", "\n".join(lines) + "\n")
    with session_scope(db_url) as session:
        result = import_customers(session=session, path=path)
    assert result.created == 1
    messages = [str(e) for e in result.errors]
    assert messages[0].startswith(f"{path}:2: not valid JSON")
    assert messages[1] == f"{path}:3: each line must be a JSON object"
    assert messages[2].startswith(f"{path}:5: timezone: 'Nowhere/City' is not an IANA time zone")


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("c.csv", "id,first_name\n1,x\n", "unknown column(s) 'id'"),
        ("c.csv", "first_name\nx\n", "missing the column(s) 'external_id'"),
        ("c.xlsx", "", "unknown format '.xlsx'"),
    ],
)
def test_file_level_errors_import_nothing(
    db_url: str, tmp_path: Path, name: str, text: str, expected: str
) -> None:
    path = write(tmp_path, name, text)
    with (
        session_scope(db_url) as session,
        pytest.raises(ImportFileError, match=re.escape(expected)),
    ):
        import_customers(session=session, path=path)


def test_missing_file(db_url: str, tmp_path: Path) -> None:
    with session_scope(db_url) as session, pytest.raises(ImportFileError, match="no such file"):
        import_customers(session=session, path=tmp_path / "nope.csv")
