"""The policy file format: what validates, and the one-line errors for what does not."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from vowvault.domain import BackupType, Priority, Tier, VendorType
from vowvault.errors import PolicyError
from vowvault.policies.loader import load_policy_file, parse_policy_text

ROOT = Path(__file__).resolve().parents[2]

BASE = """\
version: 1
organizations:
  - {slug: lumiere, name: Lumiere, vendor_type: photographer}
policies:
  - name: photos
    organization: lumiere
    source: {kind: directory, path: /srv/photos}
    schedule: {cron: "0 2 * * *", timezone: Europe/London}
    storage:
      - {url: "file:///backups", tier: HOT}
"""


def parse(text: str, **env: str) -> object:
    return parse_policy_text(textwrap.dedent(text), "p.yaml", env)


def error_of(text: str) -> str:
    with pytest.raises(PolicyError) as info:
        parse(text)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_the_example_file_is_valid() -> None:
    parsed = load_policy_file(ROOT / "examples" / "policies.yaml", env={})
    names = {p.name for p in parsed.policies}
    assert names == {"lumiere-photos", "grand-hall-db", "platform-config", "vowvault-catalog"}
    venue = next(p for p in parsed.policies if p.name == "grand-hall-db")
    assert venue.source.kind == "postgres"
    assert venue.hold_years == 7  # legal_retention: true
    assert venue.priority == Priority.CRITICAL


def test_defaults_and_case_insensitive_enums() -> None:
    parsed = parse(BASE)
    p = parsed.policies[0]
    assert p.backup_type == BackupType.FULL and p.priority == Priority.NORMAL
    assert p.storage[0].tier == Tier.HOT and parsed.organizations[0].vendor_type == \
        VendorType.PHOTOGRAPHER
    assert [(r.after_days, r.tier) for r in p.lifecycle] == [(30, Tier.COLD),
                                                             (365, Tier.ARCHIVE)]
    assert p.retention.days == 30 and p.peak_season.multiplier == 5
    assert len(p.schedules()) == 6


def test_environment_variables_are_expanded() -> None:
    text = BASE.replace("/srv/photos", "'${PHOTOS:-/srv/default}'")
    assert parse(text).policies[0].source.path == "/srv/default"
    assert parse(text, PHOTOS="/data/p").policies[0].source.path == "/data/p"
    with pytest.raises(PolicyError, match="PHOTOS2 is not set"):
        parse(BASE.replace("/srv/photos", "'${PHOTOS2}'"))


def test_a_default_may_use_another_variable_and_vowvault_home_is_always_set(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    text = BASE.replace("/srv/photos", "'${PHOTOS:-${VOWVAULT_HOME}/demo/photos}'")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("VOWVAULT_HOME", raising=False)
    assert parse(text).policies[0].source.path == f"{tmp_path}/.vowvault/demo/photos"
    assert parse(text, VOWVAULT_HOME="/v").policies[0].source.path == "/v/demo/photos"
    assert parse(text, PHOTOS="/data/p").policies[0].source.path == "/data/p"
    with pytest.raises(PolicyError, match="NOPE is not set"):
        parse(BASE.replace("/srv/photos", "'${PHOTOS:-${NOPE}/x}'"))


@pytest.mark.parametrize(("old", "new", "expected"), [
    ('cron: "0 2 * * *"', 'cron: "61 2 * * *"',
     "p.yaml:8: policy 'photos': field schedule.cron: invalid cron '61 2 * * *'"),
    ("tier: HOT", "tier: LUKEWARM",
     "p.yaml:10: policy 'photos': field storage[0].tier: 'LUKEWARM' is not one of"),
    ("schedule:", "retention: {days: -3}\n    schedule:",
     "p.yaml:8: policy 'photos': field retention.days: must be >= 1, not -3"),
    ("schedule:", "schedul:",
     "p.yaml:8: policy 'photos': field schedul: unknown key 'schedul' (did you mean "
     "'schedule'?)"),
    ("timezone: Europe/London", "timezone: Mars/Olympus",
     "field schedule.timezone: unknown timezone 'Mars/Olympus'"),
    ("file:///backups", "ftp://host/backups", "field storage[0].url: unknown storage scheme"),
    ("file:///backups", "s3://key:secret@bucket/x", "contains credentials"),
    ("kind: directory, path: /srv/photos",
     "kind: postgres, dsn: 'postgresql://u:hunter2@db/x'", "contains a password"),
    ("kind: directory, path: /srv/photos}",
     "kind: postgres, dsn: 'postgresql://db/x', mode: physical}\n    backup_type: incremental",
     "backup_type INCREMENTAL is not possible for a postgres_physical source"),
    ("organization: lumiere", "organization: nobody",
     "field organization: organization 'nobody' is not declared"),
    ("name: photos", "name: Photos!", "field name: 'Photos!' must be lower-case"),
    ("kind: directory, path: /srv/photos", "kind: tape, path: /srv/photos",
     "kind 'tape' is not one of"),
    ("kind: directory, path: /srv/photos", "kind: directory, path: srv/photos",
     "must be an absolute path"),
])
def test_bad_input_gets_one_line_naming_file_policy_field(old: str, new: str,
                                                          expected: str) -> None:
    assert old in BASE
    assert expected in error_of(BASE.replace(old, new, 1))


def test_duplicate_policy_names() -> None:
    doubled = BASE + BASE.split("policies:\n", 1)[1]
    assert "policy name 'photos' is used twice" in error_of(doubled)


def test_duplicate_yaml_keys_are_refused() -> None:
    text = BASE.replace("    schedule:", "    priority: low\n    priority: high\n    schedule:")
    assert "key 'priority' appears twice" in error_of(text)


def test_lifecycle_must_go_colder() -> None:
    text = BASE + "    lifecycle: [{after_days: 10, tier: COLD}, {after_days: 20, tier: WARM}]\n"
    assert "not colder than COLD" in error_of(text)


def test_incremental_pg_dump_is_refused() -> None:
    text = BASE.replace("kind: directory, path: /srv/photos",
                        "kind: postgres, dsn: 'postgresql://db/x'") + \
        "    backup_type: incremental\n"
    assert "backup_type INCREMENTAL is not possible for a postgres_logical source" in \
        error_of(text)


def test_peak_season_of_a_monthly_cron_needs_explicit_schedules() -> None:
    text = BASE.replace('"0 2 * * *"', '"0 2 1 * *"')
    assert "peak_season" in error_of(text)
    fixed = text + '    peak_season: {schedules: ["0 2 * * 1"]}\n'
    assert parse(fixed).policies[0].schedules() == ["0 2 * 5-10 1", "0 2 1 1-4,11,12 *"]


def test_yaml_syntax_errors_name_the_line() -> None:
    assert error_of("policies:\n  - name: [unclosed\n").startswith("p.yaml:")


def test_missing_file() -> None:
    with pytest.raises(PolicyError, match="no such file"):
        load_policy_file("/nonexistent/policies.yaml")


def test_an_alias_bomb_is_refused_in_one_line() -> None:
    """Nine levels of nine aliases: a few hundred bytes that would expand to 387 million
    values. Refused after a bounded amount of work, memory untouched."""
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i in range(8):
        prev, cur = chr(97 + i), chr(98 + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    assert "alias bomb" in error_of("\n".join(lines) + "\n")


@pytest.mark.parametrize("depth", [65, 5000])
def test_deep_nesting_is_refused_in_one_line(depth: int) -> None:
    assert "nests deeper than 64 levels" in error_of("x: " + "[" * depth + "1" + "]" * depth)


def test_a_huge_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    from vowvault.policies import loader

    big = tmp_path / "big.yaml"
    with big.open("w") as f:
        f.write("version: 1\n# " + "x" * (loader.MAX_BYTES + 10) + "\n")
    with pytest.raises(PolicyError, match="larger than 16 MiB"):
        load_policy_file(big)
