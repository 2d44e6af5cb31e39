"""schema.sql, the Alembic migrations and the SQLAlchemy models describe one schema."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from pg_schema import describe, differences

from vowvault.catalog.db import make_engine, postgres_ddl, upgrade
from vowvault.catalog.models import Base

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_SQL = ROOT / "schema.sql"


def apply_schema_sql(url: str) -> None:
    subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(SCHEMA_SQL)],
                   check=True, capture_output=True, text=True)


def test_schema_sql_is_what_the_migrations_render() -> None:
    assert SCHEMA_SQL.read_text() == postgres_ddl(), \
        "schema.sql is stale: regenerate it with `vowvault catalog schema > schema.sql`"


def test_schema_sql_builds_the_same_catalog_as_the_migrations(pg_url: str, pg_database) -> None:
    from_sql = pg_database()
    apply_schema_sql(from_sql)
    diff = differences(describe(pg_url), describe(from_sql))
    assert diff == []


def test_the_comparison_notices_a_single_column_difference(pg_url: str, pg_database) -> None:
    from_sql = pg_database()
    apply_schema_sql(from_sql)
    with psycopg.connect(from_sql, autocommit=True) as conn:
        conn.execute("ALTER TABLE backup_jobs ALTER COLUMN job_name TYPE varchar(254)")
    diff = differences(describe(pg_url), describe(from_sql))
    assert any("backup_jobs" in d and "job_name" in d for d in diff)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_models_and_migrations_agree(backend: str, tmp_path: Path, pg_url: str) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}" if backend == "sqlite" else pg_url
    engine = make_engine(url)
    upgrade(engine)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    engine.dispose()
    if backend == "sqlite":
        # SQLite's reflection cannot see DESC in an index, so an index with a DESC column
        # shows as removed and added under the same name; PostgreSQL checks those fully.
        added = {d[1].name for d in diff if d[0] == "add_index"}
        removed = {d[1].name for d in diff if d[0] == "remove_index"}
        desc = {d[1].name for d in diff if d[0] == "add_index"
                and any("DESC" in str(e) for e in d[1].expressions)}
        diff = [d for d in diff if not (d[0] in ("add_index", "remove_index")
                                        and d[1].name in added & removed & desc)]
    assert diff == []


def test_catalog_holds_the_reports_schema(pg_url: str) -> None:
    schema = describe(pg_url)
    tables = {row[1] for row in schema["columns"] if row[0] == "public"}
    assert {"organizations", "backup_policies", "backup_jobs", "backup_storage",
            "recovery_jobs", "encryption_keys", "backup_analytics", "audit_log",
            "erasure_requests", "webhook_endpoints", "webhook_deliveries",
            "wedding_calendar"} <= tables
    enums = {row[0] for row in schema["enums"]}
    assert enums == {"backup_type", "backup_status", "backup_priority", "storage_tier",
                     "recovery_status", "recovery_type", "vendor_type"}
    indexes = {row[1]: row[2] for row in schema["indexes"]}
    assert "WHERE (is_wedding_day_backup = true)" in indexes["idx_backup_jobs_wedding_day"]
    assert "(status, created_at DESC)" in indexes["idx_backup_jobs_status_date"]
    assert "idx_backup_storage_tier" in indexes and "idx_backup_jobs_policy_id" in indexes
    assert len([n for n in indexes if n.startswith("idx_")]) >= 20
    views = {row[0] for row in schema["views"]}
    assert {"backup_health_summary", "wedding_day_backup_status",
            "backup_capacity_planning"} <= views
    functions = {row[1] for row in schema["functions"]}
    assert {"calculate_next_backup_time", "check_backup_compliance",
            "generate_backup_analytics", "set_updated_at", "lifecycle_candidates",
            "retention_candidates", "backup_priority_at", "jwt"} <= functions
    policies = {(row[0], row[1]) for row in schema["policies"]}
    assert ("recovery_jobs", "emergency_recovery_access") in policies
    assert ("backup_policies", "backup_policies_org_isolation") in policies
    assert all(force for _, rls, force in schema["rls"] if _ != "alembic_version")


def test_sqlite_catalog_has_the_same_tables(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    upgrade(engine)
    names = set(sa.inspect(engine).get_table_names())
    engine.dispose()
    assert set(Base.metadata.tables) | {"alembic_version"} == names


def test_head_constant_is_the_migrations_head() -> None:
    from vowvault.catalog.db import HEAD, migrations_head

    assert migrations_head() == HEAD


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_catalog_holding_backups_migrates_down_and_up_intact(
        backend: str, tmp_path: Path, pg_url: str, policy_on) -> None:
    """SQLite alters a table by copying it: rows that refer to it must survive (the
    foreign keys are checked before the migration commits)."""
    from vowvault.catalog.db import downgrade
    from vowvault.engine.backup import run_backup
    from vowvault.engine.context import Context
    from vowvault.engine.restore import restore_backup
    from vowvault.settings import Settings

    url = f"sqlite:///{tmp_path / 'c.db'}" if backend == "sqlite" else pg_url
    ctx = Context.from_settings(Settings(home=tmp_path / "home", database_url=url,
                                         actor="t"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "guests.json").write_text('{"name": "Ada"}')
    policy_on(ctx, "photos", f"{{kind: directory, path: {src}}}")
    done = run_backup(ctx, "photos")
    engine = ctx.catalog.engine

    def counts() -> tuple[object, ...]:
        with engine.connect() as conn:
            return tuple(conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar()
                         for t in ("backup_policies", "backup_jobs", "backup_storage",
                                   "audit_log"))

    before = counts()
    downgrade(engine, "0002")
    with engine.connect() as conn:
        assert "full_every_days" not in {c["name"] for c in
                                         sa.inspect(conn).get_columns("backup_policies")}
    upgrade(engine)
    assert counts() == before
    restore_backup(ctx, done.job_id, to_dir=tmp_path / "out")
    assert (tmp_path / "out" / "guests.json").read_text() == '{"name": "Ada"}'
    ctx.close()
