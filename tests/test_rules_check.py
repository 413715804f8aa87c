"""`clientela rules check`: every way a rule file can be wrong is named with file, line, column."""

from __future__ import annotations

from pathlib import Path

import pytest

from rules.check import analyse
from rules.model import RuleFileError, load, loads
from tests.processes import run_cli

CRM = Path(__file__).resolve().parent.parent / "rules" / "crm.yaml"
POLICY = "{channels: [email], service_level: {complaint_response_hours: 1}}"


def ruleset(tiers: str, extra: str = "", policies: str | None = None) -> str:
    policies = policies or f"  A: {POLICY}\n  B: {POLICY}\n  C: {POLICY}\n"
    return (
        "ruleset: t\nowner: me\n"
        f"{extra}"
        "tiers:\n  levels: [A, B, C]\n  default: C\n  rules:\n"
        f"{tiers}"
        f"policies:\n{policies}"
    )


RULE = (
    "    - name: {name}\n      owner: me\n      priority: {priority}\n"
    "      when: {when}\n      tier: {tier}\n"
)


def rule(
    name: str = "r1", when: str = "monthly_income > 100", tier: str = "A", priority: int = 1
) -> str:
    return RULE.format(name=name, when=when, tier=tier, priority=priority)


def problems(source: str) -> list[str]:
    with pytest.raises(RuleFileError) as err:
        loads(source, "f.yaml")
    return [str(p) for p in err.value.problems]


def test_the_shipped_rules_pass_without_warnings() -> None:
    rules = load(CRM)
    assert rules.warnings == [] and analyse(rules) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            ruleset(rule(when="monthly_income >")),
            "f.yaml:10:29: error: syntax error: the condition ends too early",
        ),
        (
            ruleset(rule(when="monthy_income > 100")),
            "f.yaml:10:13: error: unknown field 'monthy_income'",
        ),
        (
            ruleset(rule(when="locale > 100")),
            "f.yaml:10:13: error: cannot compare number with string",
        ),
        (
            ruleset(rule(when='"tenure_months > 5 and plan == 1"')),
            "f.yaml:10:36: error: unknown field 'plan'",
        ),
        (ruleset(rule(tier="Z")), "f.yaml:11:13: error: tier 'Z' is not in levels"),
        (ruleset(rule() + rule()), "error: the name 'r1' is used twice"),
        (
            ruleset(rule().replace("owner", "ownr")),
            "f.yaml:8:7: error: tiers.rules.0.ownr: unknown key 'ownr'",
        ),
        (
            ruleset(rule().replace("      owner: me\n", "")),
            "error: tiers.rules.0.owner: is required here; add it",
        ),
        (
            ruleset(rule(), policies=f"  A: {POLICY}\n  B: {POLICY}\n"),
            "error: tier 'C' has no policy",
        ),
        (
            ruleset(rule(), extra="rankings:\n  top: {by: locale, top: 10%, owner: me}\n"),
            "f.yaml:4:13: error: rankings.top.by: locale is not a number; rank by a number",
        ),
        (
            ruleset(rule(), extra="rankings:\n  top: {by: usage, top: 200%, owner: me}\n"),
            "error: rankings.top.top: top is a count (500) or a percentage ('10%')",
        ),
        ("ruleset: [unclosed\n", "f.yaml:2:1: error: YAML"),
        ("", "f.yaml:1:1: error: the file is empty"),
    ],
)
def test_errors_name_file_line_and_column(source: str, expected: str) -> None:
    found = problems(source)
    assert any(expected in p for p in found), found


def test_a_condition_in_a_block_scalar_is_located() -> None:
    source = ruleset(
        "    - name: r1\n      owner: me\n      priority: 1\n      when: |\n"
        "        monthly_income > 100 and\n          bogus == 1\n      tier: A\n"
    )
    assert any("f.yaml:12:11: error: unknown field 'bogus'" in p for p in problems(source))


def test_overlap_shadowing_and_unreachable_tiers_are_warned() -> None:
    source = ruleset(
        rule("rich", "monthly_income > 100", "A", 3)
        + rule("richer", "monthly_income > 200", "B", 2)  # always shadowed by `rich`
        + rule("paying", "monthly_income > 50", "B", 1)
    )
    rules = loads(source, "f.yaml")
    warnings = [str(w) for w in analyse(rules)]
    assert any("'richer' never decides" in w for w in warnings), warnings
    assert any("'rich' and 'paying' give different tiers" in w for w in warnings), warnings
    only_a = loads(ruleset(rule("rich", "monthly_income > 100", "A")), "f.yaml")
    assert any("tier 'B' can never be reached" in str(w) for w in analyse(only_a))


def test_equal_priorities_are_a_warning() -> None:
    rules = loads(ruleset(rule("a1") + rule("a2", "tenure_months > 5", "B")), "f.yaml")
    assert any("priority 1 is also 'a1'" in str(w) for w in rules.warnings)


def test_the_cli_exits_non_zero_on_errors_and_touches_nothing(tmp_path: Path) -> None:
    from clientela.settings import Settings

    settings = Settings(home=tmp_path / "home")
    bad = tmp_path / "bad.yaml"
    bad.write_text(ruleset(rule(when="monthy_income > 100")))
    r = run_cli(settings, "rules", "check", str(bad))
    assert r.returncode == 1
    assert f"{bad}:10:13: error: unknown field 'monthy_income'" in r.stderr
    assert "1 error(s); nothing was changed" in r.stderr
    ok = run_cli(settings, "rules", "check", str(CRM))
    assert ok.returncode == 0 and "rule set crm" in ok.stdout and ": OK" in ok.stdout
    missing = run_cli(settings, "rules", "check", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    assert not (tmp_path / "home").exists()  # validating wrote nothing


def test_every_field_is_documented() -> None:
    from rules.features import FEATURES

    doc = (Path(__file__).resolve().parent.parent / "docs" / "rules.md").read_text()
    missing = [name for name in FEATURES if f"| `{name}` |" not in doc]
    assert not missing, f"docs/rules.md does not describe {missing}"
