"""Journey definitions: validated with file, line and field; shipped ones are valid."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from clientela.journeys.spec import load_all, loads
from clientela.messaging.templating import Templates
from clientela.yamlfile import SpecError
from rules.model import load

ROOT = Path(__file__).resolve().parent.parent
RULES = load(ROOT / "rules" / "crm.yaml")
TEMPLATES = Templates(ROOT / "templates")

BASE = """\
name: thanks
owner: marketing
trigger: {event: purchase}
steps:
  - id: hello
    send: {template: welcome}
  - wait: 2d
  - id: check
    wait_for: {events: [click], timeout: 3d}
  - branch:
      - {if: responded, goto: done}
      - {if: "tier == 'A'", goto: hello}
    else: done
  - id: done
    exit: finished
"""


def errors(text: str) -> list[str]:
    with pytest.raises(SpecError) as err:
        loads(text, "j.yaml", RULES, TEMPLATES)
    return [str(p) for p in err.value.problems]


def test_a_valid_definition_has_a_version_and_plain_data() -> None:
    journey = loads(BASE, "j.yaml", RULES, TEMPLATES)
    assert journey.name == "thanks" and len(journey.version) == 12
    data = journey.as_data()
    assert data["steps"][3]["branch"][0] == {"if": "responded", "goto": "done"}
    assert data["steps"][3]["else"] == "done"
    assert loads(BASE.replace("2d", "3d"), "j.yaml", RULES, TEMPLATES).version != journey.version


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BASE.replace("trigger: {event: purchase}", "trigger: {event: 'da\\nce'}"), "j.yaml:3:"),
        (
            BASE.replace("trigger: {event: purchase}", "trigger: {}"),
            "trigger: give exactly one of event, tier_change, segment_entry, date, no_purchase_for",
        ),
        (BASE.replace("goto: done}", "goto: nowhere}"), "steps.3.branch.0.goto: no step 'nowhere'"),
        (
            BASE.replace("trigger: {event: purchase}", "trigger: {date: anniversary}"),
            "date 'anniversary': birthday, signup_anniversary or attr.<name>",
        ),
        (
            BASE.replace("trigger: {event: purchase}", "trigger: {no_purchase_for: 36h}"),
            "no_purchase_for is whole days (e.g. 90d)",
        ),
        (BASE.replace("tier == 'A'", "tier == "), "j.yaml:12:"),
        (BASE.replace("template: welcome", "template: nope"), "template 'nope' has no body.html"),
        (BASE.replace("  - wait: 2d\n", "  - wait: 2d\n    exit: x\n"), "exactly one of send"),
        (BASE + "reentry: {policy: once_per}\n", "period goes with policy once_per"),
        (BASE.replace("name: thanks", "name: Thanks!"), "name: String should match pattern"),
        (
            BASE.replace("trigger: {event: purchase}", "trigger: {tier_change: {to: [Z]}}"),
            "trigger.tier_change.to.0: no tier 'Z'",
        ),
        (BASE.replace("owner: marketing", "owner: marketing\ncolour: red"), "unknown key 'colour'"),
    ],
)
def test_errors_are_placed(text: str, expected: str) -> None:
    found = errors(text)
    assert any(expected in e for e in found), found


def test_the_shipped_definitions_are_valid() -> None:
    journeys = load_all(ROOT / "journeys", RULES, TEMPLATES)
    assert set(journeys) == {"welcome", "cross_sell", "tier_upgrade", "birthday", "win_back"}
    assert journeys["win_back"].spec.trigger.no_purchase_for == timedelta(days=90)
    assert journeys["tier_upgrade"].as_data()["steps"][0] == {"wait_until": "10:00"}
