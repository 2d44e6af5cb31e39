"""`vowvault policies ...` and `vowvault catalog ...` as a platform engineer uses them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa

from vowvault.catalog.db import make_engine

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "policies.yaml"


def counts(url: str) -> dict[str, int]:
    engine = make_engine(url)
    with engine.connect() as conn:
        out = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
               for t in ("organizations", "backup_policies", "audit_log", "wedding_calendar")}
    engine.dispose()
    return out


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path, cli_env: dict[str, str]) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{Path(cli_env['VOWVAULT_HOME']) / 'catalog.db'}"
    url = request.getfixturevalue("pg_database")()
    cli_env["VOWVAULT_DATABASE_URL"] = url
    return url


def test_apply_is_idempotent_and_audited(cli, catalog_url: str) -> None:
    if catalog_url.startswith("postgresql"):
        assert "migrated from empty" in cli("catalog", "upgrade").stdout
    first = cli("policies", "apply", str(EXAMPLE))
    assert "create     policy grand-hall-db" in first.stdout
    assert "9 changed, 0 unchanged" in first.stdout
    after_first = counts(catalog_url)
    # 8 changes and the migration that created the catalog.
    assert after_first == {"organizations": 3, "backup_policies": 4, "audit_log": 10,
                           "wedding_calendar": 2}
    second = cli("policies", "apply", str(EXAMPLE))
    assert "0 changed, 4 unchanged" in second.stdout
    assert counts(catalog_url) == after_first
    assert "audit log intact: 10 rows" in cli("audit", "verify").stdout
    assert "catalog.upgrade" in cli("audit", "list").stdout


def test_removed_policy_is_deactivated_and_changes_are_shown(cli, catalog_url: str,
                                                             tmp_path: Path) -> None:
    cli("catalog", "upgrade")
    cli("policies", "apply", str(EXAMPLE))
    text = EXAMPLE.read_text()
    start = text.index("  # Platform configuration")
    edited = tmp_path / "edited.yaml"
    edited.write_text(text[:start].replace('cron: "0 */6 * * *"', 'cron: "0 */4 * * *"'))
    plan = cli("policies", "apply", "--dry-run", str(edited)).stdout
    assert "would deactivate policy platform-config" in plan
    assert "would update     policy grand-hall-db" in plan and "schedule_cron" in plan
    # A change inside a nested value is shown by its key, old and new in full.
    moved = tmp_path / "moved.yaml"
    far = "/srv/a/long/path/that/goes/on/and/on/for/a/while/until/it/reaches/the/photos"
    moved.write_text(text.replace("${LUMIERE_PHOTOS:-${VOWVAULT_HOME}/demo/lumiere-photos}",
                                  far))
    change = next(ln for ln in cli("policies", "apply", "--dry-run", str(moved)).stdout
                  .splitlines() if "lumiere-photos" in ln)
    assert "source_config.path: " in change and f" -> {far})" in change, change
    assert "..." not in change and "storage_targets" not in change, change
    assert "yes" in cli("policies", "list").stdout.split("platform-config")[1].splitlines()[0]
    cli("policies", "apply", str(edited))
    listed = cli("policies", "list").stdout
    assert "platform-config" not in listed
    assert "platform-config" in cli("policies", "list", "--all").stdout
    shown = cli("policies", "show", "grand-hall-db").stdout
    assert "0 0,4,8,12,16,20 * * *" in shown
    log = cli("audit", "list", "--limit", "5").stdout
    assert "policy.deactivate" in log and "policy.update" in log
    # Putting it back reactivates the same policy: its history is kept.
    applied = cli("policies", "apply", str(EXAMPLE)).stdout
    assert "reactivate policy platform-config" in applied


BAD_EDITS = [
    ('cron: "0 1 * * *"', 'cron: "0 25 * * *"',
     "policy 'lumiere-photos': field schedule.cron: invalid cron '0 25 * * *'"),
    ("tier: WARM", "tier: TEPID", "policy 'platform-config': field storage[0].tier: 'TEPID'"),
    ("days: 90,", "days: -90,", "policy 'grand-hall-db': field retention.days: must be >= 1"),
    ("name: platform-config", "name: grand-hall-db", "policy name 'grand-hall-db' is used twice"),
    ("    priority: normal", "    priorty: normal",
     "policy 'platform-config': field priorty: unknown key 'priorty' (did you mean "
     "'priority'?)"),
]


def test_bad_files_exit_2_with_one_line_and_leave_the_catalog_alone(
        cli, catalog_url: str, tmp_path: Path) -> None:
    cli("catalog", "upgrade")
    cli("policies", "apply", str(EXAMPLE))
    before = counts(catalog_url)
    text = EXAMPLE.read_text()
    # Every kind of mistake on the embedded catalog; one of them is enough on PostgreSQL.
    edits = BAD_EDITS if catalog_url.startswith("sqlite") else BAD_EDITS[:1]
    for i, (old, new, message) in enumerate(edits):
        bad = tmp_path / f"bad{i}.yaml"
        assert old in text
        bad.write_text(text.replace(old, new, 1))
        for command in ("validate", "apply"):
            proc = cli("policies", command, str(bad), check=False)
            assert proc.returncode == 2, proc.stderr
            assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
            assert proc.stderr.startswith(f"vowvault: error: {bad}:")
            assert message in proc.stderr
    assert counts(catalog_url) == before


def test_list_shows_next_runs_and_wedding_day_priority(cli) -> None:
    cli("policies", "apply", str(EXAMPLE))
    listed = cli("policies", "list").stdout
    for name in ("lumiere-photos", "grand-hall-db", "platform-config"):
        assert name in listed
    assert "NEXT RUN" in listed and "+5 peak" in listed
    shown = cli("policies", "show", "lumiere-photos").stdout
    assert "effective schedules" in shown and "2027-06-12" in shown


def test_unknown_policy_and_missing_file(cli) -> None:
    proc = cli("policies", "show", "nope", check=False)
    assert proc.returncode == 2 and "no policy named 'nope'" in proc.stderr
    proc = cli("policies", "validate", "/nonexistent.yaml", check=False)
    assert proc.returncode == 2 and "no such file" in proc.stderr


def test_db_schema_prints_the_postgres_ddl(cli) -> None:
    ddl = cli("catalog", "schema").stdout
    assert ddl == (ROOT / "schema.sql").read_text()


def test_unreachable_postgres_catalog_is_one_line(cli) -> None:
    proc = cli("policies", "list", check=False,
               VOWVAULT_DATABASE_URL="postgresql://postgres@127.0.0.1:1/nowhere")
    assert proc.returncode == 4
    assert proc.stderr.startswith("vowvault: error: cannot reach the catalog")
    assert proc.stderr.count("\n") == 1


def test_postgres_catalog_must_be_migrated_explicitly(cli, pg_database) -> None:
    url = pg_database()
    proc = cli("policies", "list", check=False, VOWVAULT_DATABASE_URL=url)
    assert proc.returncode == 4 and "run `vowvault catalog upgrade`" in proc.stderr
    assert shutil.which("psql")


def test_audit_verify_names_the_tampered_row(cli, cli_env: dict[str, str]) -> None:
    import sqlite3

    cli("policies", "apply", str(EXAMPLE))
    intact = cli("audit", "verify")
    assert intact.stdout.startswith("audit log intact: 10 rows, head ")
    db = Path(cli_env["VOWVAULT_HOME"]) / "catalog.db"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE audit_log SET summary = 'policy removed by nobody' WHERE id = 4")
    edited = cli("audit", "verify", check=False)
    assert edited.returncode == 3
    assert edited.stderr.strip() == "audit row 4: row content does not match its hash: it " \
                                    "was edited"
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM audit_log WHERE id = 4")
    deleted = cli("audit", "verify", check=False)
    assert deleted.returncode == 3
    assert "audit row 5: chain broken before this row" in deleted.stderr


def test_more_problems_are_listed_with_v(cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\norganizations: [{slug: a, name: A}]\npolicies:\n"
                   "  - name: p\n    organization: a\n    source: {kind: directory, path: /x}\n"
                   "    schedule: {cron: \"0 99 * * *\"}\n    priorty: high\n"
                   "    storage: [{url: \"file:///tmp/s\", tier: TEPID}]\n")
    quiet = cli("policies", "validate", str(bad), check=False)
    assert quiet.returncode == 2 and len(quiet.stderr.strip().splitlines()) == 1
    assert "(and 2 more problems; -v lists them)" in quiet.stderr
    loud = cli("-v", "policies", "validate", str(bad), check=False)
    assert loud.returncode == 2
    assert f"{bad}:7: policies[0].schedule.cron: invalid cron" in loud.stderr
    assert f"{bad}:9: policies[0].storage[0].tier: 'TEPID'" in loud.stderr
