"""Row-level security on the real PostgreSQL catalog, with non-superuser roles: a tenant
with claims for organization A cannot read, insert, update or delete B's rows in any table;
emergency recoveries are for admin/owner/emergency_contact only; the workers' service role
sees every organization; RLS is FORCEd, so a table owner is not exempt."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest

TABLES = ["wedding_calendar", "backup_policies", "backup_jobs", "backup_storage",
          "recovery_jobs", "encryption_keys", "backup_analytics", "audit_log",
          "erasure_requests", "webhook_endpoints", "webhook_deliveries"]
READ_ONLY_FOR_TENANTS = {"encryption_keys", "backup_analytics", "audit_log"}


def seed(conn: psycopg.Connection, org: uuid.UUID, tag: str) -> dict[str, object]:
    """One row per tenant table for ``org``; returns their ids."""
    q = conn.execute
    ids: dict[str, object] = {}
    ids["wedding_calendar"] = q(
        "INSERT INTO wedding_calendar (organization_id, wedding_id, wedding_date) "
        "VALUES (%s, gen_random_uuid(), '2027-06-12') RETURNING id", (org,)).fetchone()[0]
    policy = q("INSERT INTO backup_policies (organization_id, name, backup_type, source_kind, "
               "source_config, schedule_cron, effective_schedules, storage_targets, "
               "lifecycle_rules, spec_hash) VALUES (%s, %s, 'FULL', 'DIRECTORY', '{}', "
               "'0 2 * * *', '[\"0 2 * * *\"]', '[]', '[]', 'x') RETURNING id",
               (org, f"policy-{tag}")).fetchone()[0]
    ids["backup_policies"] = policy
    key = q("INSERT INTO encryption_keys (organization_id, version, provider, key_ref, "
            "status) VALUES (%s, 1, 'local', 'ref', 'ACTIVE') RETURNING id", (org,)
            ).fetchone()[0]
    ids["encryption_keys"] = key
    job = q("INSERT INTO backup_jobs (organization_id, policy_id, job_name, backup_type, "
            "scheduled_at) VALUES (%s, %s, 'j', 'FULL', now()) RETURNING id", (org, policy)
            ).fetchone()[0]
    ids["backup_jobs"] = job
    ids["backup_storage"] = q(
        "INSERT INTO backup_storage (organization_id, backup_job_id, storage_provider, "
        "storage_url, copy_role, object_kind, file_path, file_size_bytes, status) VALUES "
        "(%s, %s, 'local', 'file:///b', 'PRIMARY', 'DATA', %s, 1, 'STORED') RETURNING id",
        (org, job, f"p/{tag}")).fetchone()[0]
    ids["recovery_jobs"] = q(
        "INSERT INTO recovery_jobs (organization_id, backup_job_id, recovery_type) VALUES "
        "(%s, %s, 'FULL_RESTORE') RETURNING id", (org, job)).fetchone()[0]
    ids["emergency"] = q(
        "INSERT INTO recovery_jobs (organization_id, backup_job_id, recovery_type, "
        "is_emergency_recovery) VALUES (%s, %s, 'EMERGENCY', true) RETURNING id", (org, job)
    ).fetchone()[0]
    ids["backup_analytics"] = q(
        "INSERT INTO backup_analytics (id, organization_id, policy_id, analytics_date, "
        "total_jobs, successful_jobs, failed_jobs, corrupted_jobs, source_bytes, stored_bytes,"
        " drills_run, drills_passed) VALUES (gen_random_uuid(), %s, %s, current_date, 0, 0, "
        "0, 0, 0, 0, 0, 0) RETURNING id", (org, policy)).fetchone()[0]
    ids["audit_log"] = q(
        "INSERT INTO audit_log (organization_id, actor, action, target_type, prev_hash, "
        "row_hash) VALUES (%s, 'a', 'x', 'y', %s, %s) RETURNING id",
        (org, uuid.uuid4().hex * 2, uuid.uuid4().hex * 2)).fetchone()[0]
    ids["erasure_requests"] = q(
        "INSERT INTO erasure_requests (organization_id, subject_type, subject_ref, scope, "
        "status, requested_by) VALUES (%s, 'COUPLE', 'c', '{}', 'PENDING', 'dpo') "
        "RETURNING id", (org,)).fetchone()[0]
    endpoint = q("INSERT INTO webhook_endpoints (organization_id, url, secret_ref, events) "
                 "VALUES (%s, 'https://h/x', 'env:S', '[]') RETURNING id", (org,)).fetchone()[0]
    ids["webhook_endpoints"] = endpoint
    ids["webhook_deliveries"] = q(
        "INSERT INTO webhook_deliveries (organization_id, endpoint_id, event_type, message_id, "
        "payload, status) VALUES (%s, %s, 'backup_completed', %s, '{}', 'PENDING') "
        "RETURNING id", (org, endpoint, f"msg_{uuid.uuid4().hex}")).fetchone()[0]
    return ids


@pytest.fixture
def world(pg_url: str) -> Iterator[dict[str, object]]:
    """Two organizations with a row in every table, and login roles for the checks."""
    suffix = uuid.uuid4().hex[:8]
    roles = {"api": f"vv_api_{suffix}", "worker": f"vv_worker_{suffix}",
             "owner": f"vv_owner_{suffix}"}
    with psycopg.connect(pg_url, autocommit=True) as admin:
        a = admin.execute("INSERT INTO organizations (slug, name) VALUES ('a', 'A') "
                          "RETURNING id").fetchone()[0]
        b = admin.execute("INSERT INTO organizations (slug, name) VALUES ('b', 'B') "
                          "RETURNING id").fetchone()[0]
        rows = {"a": seed(admin, a, "a"), "b": seed(admin, b, "b")}
        admin.execute(f"CREATE ROLE {roles['api']} LOGIN IN ROLE vowvault_tenant")
        admin.execute(f"CREATE ROLE {roles['worker']} LOGIN IN ROLE vowvault_service")
        admin.execute(f"CREATE ROLE {roles['owner']} LOGIN")
        try:
            yield {"url": pg_url, "a": a, "b": b, "rows": rows, "roles": roles}
        finally:
            for role in roles.values():
                admin.execute(f"REASSIGN OWNED BY {role} TO postgres")
                admin.execute(f"DROP OWNED BY {role}")
                admin.execute(f"DROP ROLE {role}")


def connect(world: dict[str, object], who: str, claims: dict[str, object] | None = None
            ) -> psycopg.Connection:
    role = world["roles"][who]  # type: ignore[index]
    conn = psycopg.connect(str(world["url"]).replace("postgres@", f"{role}@"), autocommit=True)
    if claims is not None:
        conn.execute("SELECT set_config('request.jwt.claims', %s, false)",
                     (json.dumps({k: str(v) for k, v in claims.items()}),))
    return conn


def test_a_tenant_cannot_touch_another_organizations_rows(world) -> None:
    a, b, rows = world["a"], world["b"], world["rows"]
    with connect(world, "api", {"organization_id": a, "role": "member"}) as t:
        assert t.execute("SELECT id FROM organizations").fetchall() == [(a,)]
        for table in TABLES:
            orgs = {r[0] for r in t.execute(f"SELECT organization_id FROM {table}")}
            assert orgs == {a}, table
            b_id = rows["b"][table]
            # Read
            assert t.execute(f"SELECT count(*) FROM {table} WHERE id = %s", (b_id,)
                             ).fetchone()[0] == 0, table
            # Update and delete: B's rows are invisible, so nothing happens to them.
            if table not in READ_ONLY_FOR_TENANTS:
                assert t.execute(f"UPDATE {table} SET organization_id = organization_id "
                                 f"WHERE id = %s", (b_id,)).rowcount == 0, table
                assert t.execute(f"DELETE FROM {table} WHERE id = %s", (b_id,)
                                 ).rowcount == 0, table
                # Moving an own row to B is refused too.
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level"):
                    t.execute(f"UPDATE {table} SET organization_id = %s WHERE id = %s",
                              (b, rows["a"][table]))
            else:
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    t.execute(f"DELETE FROM {table} WHERE id = %s", (b_id,))
        # Insert: rows for B are refused (by policy, or by grant for read-only tables).
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level"):
            t.execute("INSERT INTO erasure_requests (organization_id, subject_type, "
                      "subject_ref, scope, status, requested_by) VALUES (%s, 'COUPLE', 'c', "
                      "'{}', 'PENDING', 'evil')", (b,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level"):
            t.execute("INSERT INTO wedding_calendar (organization_id, wedding_id, "
                      "wedding_date) VALUES (%s, gen_random_uuid(), '2027-01-01')", (b,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            t.execute("INSERT INTO encryption_keys (organization_id, version, provider, "
                      "key_ref) VALUES (%s, 9, 'local', 'x')", (b,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            t.execute("INSERT INTO audit_log (organization_id, actor, action, target_type, "
                      "prev_hash, row_hash) VALUES (%s, 'a', 'b', 'c', 'd', 'e')", (b,))
    with psycopg.connect(str(world["url"])) as admin:  # B's rows are all still there
        for table in TABLES:
            assert admin.execute(f"SELECT count(*) FROM {table} WHERE organization_id = %s",
                                 (b,)).fetchone()[0] >= 1, table


def test_no_claims_no_rows(world) -> None:
    with connect(world, "api") as t:
        for table in ["organizations", *TABLES]:
            assert t.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
    with connect(world, "api", {"organization_id": "not-a-uuid"}) as t:
        assert t.execute("SELECT count(*) FROM backup_policies").fetchone()[0] == 0


@pytest.mark.parametrize(("role", "sees"), [("admin", True), ("owner", True),
                                             ("emergency_contact", True), ("member", False),
                                             ("photographer", False)])
def test_emergency_recoveries_only_for_emergency_roles(world, role: str, sees: bool) -> None:
    a, rows = world["a"], world["rows"]
    with connect(world, "api", {"organization_id": a, "role": role}) as t:
        found = {r[0] for r in t.execute("SELECT id FROM recovery_jobs")}
        assert (rows["a"]["emergency"] in found) is sees
        assert rows["a"]["recovery_jobs"] in found  # ordinary recoveries: every member
        assert rows["b"]["emergency"] not in found  # never another organization's
        job = rows["a"]["backup_jobs"]
        insert = ("INSERT INTO recovery_jobs (organization_id, backup_job_id, recovery_type, "
                  "is_emergency_recovery) VALUES (%s, %s, 'EMERGENCY', true)")
        if sees:
            t.execute(insert, (a, job))
        else:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                t.execute(insert, (a, job))


def test_the_service_role_sees_every_organization_but_cannot_rewrite_the_audit(world) -> None:
    with connect(world, "worker") as w:
        for table in TABLES:
            orgs = {r[0] for r in w.execute(f"SELECT organization_id FROM {table}")}
            assert orgs == {world["a"], world["b"]}, table
        w.execute("UPDATE backup_jobs SET retry_count = 1 WHERE organization_id = %s",
                  (world["b"],))
        for sql in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                w.execute(sql)


def test_rls_is_forced_so_table_owners_are_not_exempt(world) -> None:
    owner = world["roles"]["owner"]
    with psycopg.connect(str(world["url"]), autocommit=True) as admin:
        for table in ["organizations", *TABLES]:
            admin.execute(f"ALTER TABLE {table} OWNER TO {owner}")
        forced = admin.execute(
            "SELECT count(*) FROM pg_class WHERE relname = ANY(%s) AND relforcerowsecurity",
            (["organizations", *TABLES],)).fetchone()[0]
        assert forced == len(TABLES) + 1
    with connect(world, "owner") as o:
        for table in ["organizations", *TABLES]:
            assert o.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0, table
    # Without FORCE the owner would have seen everything: that is what FORCE prevents.
    with psycopg.connect(str(world["url"]), autocommit=True) as admin:
        admin.execute("ALTER TABLE backup_policies NO FORCE ROW LEVEL SECURITY")
    with connect(world, "owner") as o:
        assert o.execute("SELECT count(*) FROM backup_policies").fetchone()[0] == 2


def test_storage_targets_are_the_services_alone(world) -> None:
    """No organization owns a target (several may share one): tenants see and write none
    of it, whatever their claims; the service role does."""
    with psycopg.connect(str(world["url"]), autocommit=True) as admin:
        admin.execute("INSERT INTO storage_targets (url, marker_id) VALUES "
                      "('file:///srv/nas', gen_random_uuid())")
    for claims in ({"organization_id": world["a"], "role": "admin"}, {}):
        with connect(world, "api", claims) as t, \
                pytest.raises(psycopg.errors.InsufficientPrivilege):
            t.execute("SELECT count(*) FROM storage_targets")
    with connect(world, "worker") as w:
        assert w.execute("SELECT count(*) FROM storage_targets").fetchone()[0] == 1
        w.execute("UPDATE storage_targets SET available = false")
