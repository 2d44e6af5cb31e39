"""The PostgreSQL-only parts of the catalog do what they say: views, maintenance functions,
triggers, row-level security (a first proof; the keys-and-tenants work goes further)."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import psycopg
import pytest

UTC = dt.UTC
NOW = dt.datetime(2026, 6, 20, 12, 0, tzinfo=UTC)


def org(conn: psycopg.Connection, slug: str) -> uuid.UUID:
    return conn.execute("INSERT INTO organizations (slug, name) VALUES (%s, %s) RETURNING id",
                        (slug, slug)).fetchone()[0]


def policy(conn: psycopg.Connection, org_id: uuid.UUID, name: str, **cols: object) -> uuid.UUID:
    values = {
        "organization_id": org_id, "name": name, "backup_type": "FULL",
        "source_kind": "DIRECTORY", "source_config": json.dumps({"kind": "directory"}),
        "schedule_cron": "0 2 * * *", "effective_schedules": json.dumps(["0 2 * * *"]),
        "storage_targets": json.dumps([{"url": "file:///b", "tier": "HOT"}]),
        "lifecycle_rules": json.dumps([{"after_days": 30, "tier": "COLD"},
                                       {"after_days": 365, "tier": "ARCHIVE"}]),
        "spec_hash": "x" * 64, "retention_days": 30, **cols,
    }
    cols_sql = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    return conn.execute(f"INSERT INTO backup_policies ({cols_sql}) VALUES ({marks}) RETURNING id",
                        list(values.values())).fetchone()[0]


def job(conn: psycopg.Connection, org_id: uuid.UUID, policy_id: uuid.UUID, status: str,
        completed: dt.datetime, size: int = 1000, **cols: object) -> uuid.UUID:
    values = {"organization_id": org_id, "policy_id": policy_id, "job_name": "j",
              "backup_type": "FULL", "status": status, "scheduled_at": completed,
              "started_at": completed - dt.timedelta(seconds=10), "completed_at": completed,
              "created_at": completed - dt.timedelta(seconds=10),
              "source_bytes": size, "stored_bytes": size // 3, "actual_size_gb": 0,
              "compression_ratio": 0.3333, **cols}
    cols_sql = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    return conn.execute(f"INSERT INTO backup_jobs ({cols_sql}) VALUES ({marks}) RETURNING id",
                        list(values.values())).fetchone()[0]


def stored(conn: psycopg.Connection, org_id: uuid.UUID, job_id: uuid.UUID, created: dt.datetime,
           tier: str = "HOT", size: int = 333) -> uuid.UUID:
    return conn.execute(
        "INSERT INTO backup_storage (organization_id, backup_job_id, storage_provider, "
        "storage_url, copy_role, object_kind, storage_tier, file_path, file_size_bytes, "
        "status, created_at) VALUES (%s, %s, 'local', 'file:///b', 'PRIMARY', 'DATA', %s, %s, "
        "%s, 'VERIFIED', %s) RETURNING id",
        (org_id, job_id, tier, f"p/{uuid.uuid4()}", size, created)).fetchone()[0]


@pytest.fixture
def conn(pg_url: str):
    with psycopg.connect(pg_url, autocommit=True) as c:
        yield c


def test_views_summarise_health_weddings_and_capacity(conn: psycopg.Connection) -> None:
    a = org(conn, "a")
    p = policy(conn, a, "photos")
    for i in range(3):
        j = job(conn, a, p, "COMPLETED", NOW - dt.timedelta(days=i),
                is_wedding_day_backup=i == 0, related_wedding_ids=[str(uuid.UUID(int=1))])
        stored(conn, a, j, NOW - dt.timedelta(days=i))
    job(conn, a, p, "FAILED", NOW, is_wedding_day_backup=True,
        related_wedding_ids=[str(uuid.UUID(int=1))])
    health = conn.execute("SELECT total_jobs, successful_jobs, failed_jobs, "
                          "success_rate_percent FROM backup_health_summary").fetchone()
    assert health == (4, 3, 1, 75)
    wedding = conn.execute("SELECT total_backups, completed_backups, overall_status "
                           "FROM wedding_day_backup_status").fetchone()
    assert wedding == (2, 1, "CRITICAL")
    capacity = conn.execute("SELECT storage_provider, storage_tier, objects, stored_bytes "
                            "FROM backup_capacity_planning").fetchone()
    assert capacity == ("local", "HOT", 3, 999)


def test_lifecycle_candidates_follow_the_policy_rules(conn: psycopg.Connection) -> None:
    a = org(conn, "a")
    p = policy(conn, a, "photos")
    young = stored(conn, a, job(conn, a, p, "COMPLETED", NOW), NOW - dt.timedelta(days=5))
    month = stored(conn, a, job(conn, a, p, "COMPLETED", NOW), NOW - dt.timedelta(days=40))
    old = stored(conn, a, job(conn, a, p, "COMPLETED", NOW), NOW - dt.timedelta(days=400))
    done = stored(conn, a, job(conn, a, p, "COMPLETED", NOW), NOW - dt.timedelta(days=400),
                  tier="ARCHIVE")
    rows = {r[0]: (r[3], r[4]) for r in conn.execute(
        "SELECT * FROM lifecycle_candidates(%s)", (NOW,))}
    assert rows == {month: ("HOT", "COLD"), old: ("HOT", "ARCHIVE")}
    assert young not in rows and done not in rows


def test_retention_candidates_respect_holds_and_dependants(conn: psycopg.Connection) -> None:
    a = org(conn, "a")
    p = policy(conn, a, "photos")
    held_policy = policy(conn, a, "legal", legal_hold_years=7)
    fresh = job(conn, a, p, "COMPLETED", NOW - dt.timedelta(days=3))
    expired = job(conn, a, p, "COMPLETED", NOW - dt.timedelta(days=40))
    held = job(conn, a, p, "COMPLETED", NOW - dt.timedelta(days=40), legal_hold=True)
    parent = job(conn, a, p, "COMPLETED", NOW - dt.timedelta(days=50))
    job(conn, a, p, "COMPLETED", NOW - dt.timedelta(days=1), parent_job_id=parent)
    under_legal = job(conn, a, held_policy, "COMPLETED", NOW - dt.timedelta(days=400))
    ids = {r[0] for r in conn.execute("SELECT * FROM retention_candidates(%s)", (NOW,))}
    assert ids == {expired}
    assert not {fresh, held, parent, under_legal} & ids


def test_generate_backup_analytics_is_idempotent(conn: psycopg.Connection) -> None:
    a = org(conn, "a")
    p = policy(conn, a, "photos")
    day = dt.date(2026, 6, 20)
    at2 = dt.datetime(2026, 6, 20, 2, 5, tzinfo=UTC)
    j = job(conn, a, p, "COMPLETED", at2, size=10 * 1048576)
    stored(conn, a, j, at2)
    job(conn, a, p, "FAILED", at2 + dt.timedelta(hours=1))
    for _ in range(2):
        conn.execute("SELECT generate_backup_analytics(%s)", (day,))
    rows = conn.execute("SELECT total_jobs, successful_jobs, failed_jobs, success_rate_percent, "
                        "expected_runs, compliance_percentage, bytes_by_tier, "
                        "duration_p50_seconds, throughput_p50_mib_s FROM backup_analytics"
                        ).fetchall()
    assert len(rows) == 1
    total, ok, failed, rate, expected, compliance, by_tier, p50, tp50 = rows[0]
    assert (total, ok, failed, float(rate), expected, float(compliance)) == (
        2, 1, 1, 50.0, 1, 100.0)
    assert by_tier == {"HOT": 333}
    assert float(p50) == 10.0 and float(tp50) == pytest.approx(1.0)


def test_updated_at_trigger_and_append_only_audit(conn: psycopg.Connection) -> None:
    a = org(conn, "a")
    before = conn.execute("SELECT updated_at FROM organizations WHERE id = %s", (a,)).fetchone()
    conn.execute("UPDATE organizations SET name = 'b' WHERE id = %s", (a,))
    after = conn.execute("SELECT updated_at FROM organizations WHERE id = %s", (a,)).fetchone()
    assert after > before
    conn.execute("INSERT INTO audit_log (actor, action, target_type, prev_hash, row_hash) "
                 "VALUES ('t', 'x', 'y', %s, %s)", ("0" * 64, "1" * 64))
    for sql in ("UPDATE audit_log SET actor = 'evil'", "DELETE FROM audit_log",
                "TRUNCATE audit_log"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute(sql)


def test_tenant_role_sees_only_its_organization(conn: psycopg.Connection, pg_url: str) -> None:
    a, b = org(conn, "a"), org(conn, "b")
    policy(conn, a, "a-photos")
    policy(conn, b, "b-photos")
    role = f"vv_user_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {role} LOGIN IN ROLE vowvault_tenant")
    try:
        with psycopg.connect(pg_url.replace("postgres@", f"{role}@"), autocommit=True) as t:
            t.execute("SELECT set_config('request.jwt.claims', %s, false)",
                      (json.dumps({"organization_id": str(a), "role": "member"}),))
            names = [r[0] for r in t.execute("SELECT name FROM backup_policies")]
            assert names == ["a-photos"]
            assert t.execute("SELECT count(*) FROM organizations").fetchone()[0] == 1
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                policy(t, b, "sneaky")
            t.execute("SELECT set_config('request.jwt.claims', '', false)")
            assert t.execute("SELECT count(*) FROM backup_policies").fetchone()[0] == 0
    finally:
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")
