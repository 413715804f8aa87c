"""Campaign data from elsewhere through the CLI: bad rows named, the report in three forms."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from clientela.settings import Settings
from tests.factories import make_customer
from tests.processes import run_cli


def test_register_import_and_report(settings: Settings, tmp_path: Path) -> None:
    ids = [make_customer(settings.db_url) for _ in range(4)]
    r = run_cli(
        settings, "campaign", "register", "spring-test", "--name", "Spring", "--cost", "email=0.01"
    )
    assert r.returncode == 0, r.stderr
    again = run_cli(settings, "campaign", "register", "spring-test", "--name", "Spring")
    assert again.returncode == 2 and "already exists" in again.stderr
    members = tmp_path / "members.csv"
    members.write_text(
        "customer_id,arm,group\n"
        f"{ids[0]},a,treated\n{ids[1]},a,treated\n{ids[2]},,control\n"
        "nobody,a,treated\n"
        f"{ids[3]},,treated\n"
    )
    r = run_cli(settings, "campaign", "import-members", "spring-test", str(members))
    assert r.returncode == 1
    assert f"{members}:5: customer_id: no customer 'nobody'" in r.stderr
    assert f"{members}:6: row: a treated customer needs an arm" in r.stderr
    assert "3 members imported, 2 problems" in r.stdout
    events = tmp_path / "events.csv"
    events.write_text(
        "type,customer_id,campaign,value\n"
        f"conversion,{ids[0]},spring-test,25.50\n"
        f"click,{ids[2]},spring-test,\n"
        f"teleport,{ids[1]},spring-test,\n"
        f"conversion,{ids[1]},winter,10\n"
    )
    r = run_cli(settings, "events", "import", str(events))
    assert r.returncode == 1
    assert f"{events}:4: type: Input should be" in r.stderr
    assert f"{events}:5: campaign: no campaign 'winter'" in r.stderr
    report = run_cli(settings, "campaign", "report", "spring-test", "--json")
    data = json.loads(report.stdout)
    [arm] = data["arms"]
    assert arm["arm"] == "a" and arm["control"] == "shared"
    treated = arm["treated"]
    assert (treated["targeted"], treated["conversions"], treated["revenue"]) == (2, 1, 25.5)
    # The held-out customer's click (imported from elsewhere) is engagement, not a response.
    assert arm["control_group"]["responded"] == 0
    assert arm["control_group"]["engagement"]["clicked"] == 1
    # Two treated and one held out: answered exactly, and the answer is "cannot say".
    conversion = arm["uplift"]["conversion"]
    assert conversion["method"].startswith("Fisher's exact test")
    assert conversion["ci95"][0] < 0 < conversion["ci95"][1] and conversion["p_value"] == 1.0
    # A mean of one customer has no uncertainty to compare with: no figure, and why.
    assert (
        "the control group has 1 customer(s)"
        in arm["uplift"]["revenue_per_customer"]["insufficient"]
    )
    assert arm["verdict"] is None  # registered from elsewhere: no spec, no target
    table = run_cli(settings, "campaign", "report", "spring-test")
    assert "too little data" in table.stdout
    rows = list(
        csv.DictReader(
            io.StringIO(run_cli(settings, "campaign", "report", "spring-test", "--csv").stdout)
        )
    )
    assert [(r["arm"], r["group"], r["targeted"]) for r in rows] == [
        ("a", "treated", "2"),
        ("a", "control", "1"),
    ]
    listed = json.loads(run_cli(settings, "campaign", "list", "--json").stdout)
    assert listed == [{"id": "spring-test", "name": "Spring", "stage": "imported"}]
    missing = run_cli(settings, "campaign", "report", "nope")
    assert missing.returncode == 1 and "no campaign 'nope'" in missing.stderr
