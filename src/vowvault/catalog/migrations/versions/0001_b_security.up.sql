-- PostgreSQL-only part of the initial catalog: roles, JWT helpers, triggers, row-level
-- security, views and maintenance functions. Runs after 0001_a_scheduling.up.sql.

-- Roles are cluster-wide: create them once, tolerate a concurrent creator.
DO $roles$
BEGIN
    BEGIN
        CREATE ROLE vowvault_tenant NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
    BEGIN
        CREATE ROLE vowvault_service NOLOGIN;
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
END
$roles$;
COMMENT ON ROLE vowvault_tenant IS
    'API-facing role: sees only rows of the organization named in request.jwt.claims';
COMMENT ON ROLE vowvault_service IS
    'Backup workers and the CLI: every organization, but audit_log stays append-only';

-- The PostgREST / Supabase convention: claims of the caller's verified JWT.
CREATE SCHEMA IF NOT EXISTS auth;

CREATE FUNCTION auth.jwt() RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('request.jwt.claims', true), ''), '{}')::jsonb
$$;
COMMENT ON FUNCTION auth.jwt() IS 'Claims of the caller (request.jwt.claims), {} when unset';

CREATE FUNCTION auth.organization_id() RETURNS uuid
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN auth.jwt() ->> 'organization_id'
             ~* '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$'
        THEN (auth.jwt() ->> 'organization_id')::uuid
    END
$$;
COMMENT ON FUNCTION auth.organization_id() IS
    'The caller''s organization from its claims, NULL when absent or malformed (sees nothing)';

CREATE FUNCTION auth.role() RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT auth.jwt() ->> 'role'
$$;

GRANT USAGE ON SCHEMA auth TO vowvault_tenant, vowvault_service;
GRANT USAGE ON SCHEMA public TO vowvault_tenant, vowvault_service;
GRANT SELECT, INSERT, UPDATE, DELETE ON
    organizations, wedding_calendar, backup_policies, backup_jobs, backup_storage,
    recovery_jobs, encryption_keys, backup_analytics, erasure_requests,
    webhook_endpoints, webhook_deliveries
    TO vowvault_service;
GRANT SELECT, INSERT ON audit_log TO vowvault_service;
GRANT USAGE ON SEQUENCE audit_log_id_seq TO vowvault_service;
GRANT SELECT ON alembic_version TO vowvault_service;
GRANT SELECT ON organizations, encryption_keys, audit_log, backup_analytics
    TO vowvault_tenant;
GRANT SELECT, INSERT, UPDATE, DELETE ON
    wedding_calendar, backup_policies, backup_jobs, backup_storage, recovery_jobs,
    erasure_requests, webhook_endpoints, webhook_deliveries
    TO vowvault_tenant;

-- updated_at follows every UPDATE, whoever writes.
CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

DO $triggers$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['organizations', 'backup_policies', 'backup_jobs',
                             'backup_storage', 'recovery_jobs', 'encryption_keys',
                             'erasure_requests', 'webhook_endpoints', 'webhook_deliveries']
    LOOP
        EXECUTE 'CREATE TRIGGER ' || quote_ident('trg_' || t || '_updated_at')
             || ' BEFORE UPDATE ON ' || quote_ident(t)
             || ' FOR EACH ROW EXECUTE FUNCTION set_updated_at()';
    END LOOP;
END
$triggers$;

-- The audit log is append-only for everybody, owner included.
CREATE FUNCTION audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
        MESSAGE = 'audit_log is append-only: ' || TG_OP || ' is not allowed';
END
$$;
CREATE TRIGGER trg_audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER trg_audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();

-- Row-level security: FORCEd, so that a table owner is not exempt by accident.
DO $rls$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['organizations', 'wedding_calendar', 'backup_policies',
                             'backup_jobs', 'backup_storage', 'recovery_jobs',
                             'encryption_keys', 'backup_analytics', 'audit_log',
                             'erasure_requests', 'webhook_endpoints', 'webhook_deliveries']
    LOOP
        EXECUTE 'ALTER TABLE ' || quote_ident(t) || ' ENABLE ROW LEVEL SECURITY';
        EXECUTE 'ALTER TABLE ' || quote_ident(t) || ' FORCE ROW LEVEL SECURITY';
        EXECUTE 'CREATE POLICY ' || quote_ident(t || '_service_access') || ' ON '
             || quote_ident(t) || ' FOR ALL TO vowvault_service USING (true) WITH CHECK (true)';
    END LOOP;
    FOREACH t IN ARRAY ARRAY['wedding_calendar', 'backup_policies', 'backup_jobs',
                             'backup_storage', 'encryption_keys', 'backup_analytics',
                             'audit_log', 'erasure_requests', 'webhook_endpoints',
                             'webhook_deliveries']
    LOOP
        EXECUTE 'CREATE POLICY ' || quote_ident(t || '_org_isolation') || ' ON '
             || quote_ident(t) || ' FOR ALL TO vowvault_tenant'
             || ' USING (organization_id = auth.organization_id())'
             || ' WITH CHECK (organization_id = auth.organization_id())';
    END LOOP;
END
$rls$;

CREATE POLICY organizations_org_isolation ON organizations FOR SELECT TO vowvault_tenant
    USING (id = auth.organization_id());

-- Ordinary recoveries: the organization's own, emergency ones excluded.
CREATE POLICY recovery_jobs_org_isolation ON recovery_jobs FOR ALL TO vowvault_tenant
    USING (organization_id = auth.organization_id() AND NOT is_emergency_recovery)
    WITH CHECK (organization_id = auth.organization_id() AND NOT is_emergency_recovery);

-- Emergency recoveries: only admins, owners and emergency contacts of the organization.
CREATE POLICY emergency_recovery_access ON recovery_jobs FOR SELECT TO vowvault_tenant
    USING (is_emergency_recovery
           AND organization_id = auth.organization_id()
           AND auth.role() IN ('admin', 'owner', 'emergency_contact'));
CREATE POLICY emergency_recovery_request ON recovery_jobs FOR INSERT TO vowvault_tenant
    WITH CHECK (is_emergency_recovery
                AND organization_id = auth.organization_id()
                AND auth.role() IN ('admin', 'owner', 'emergency_contact'));

-- Views run with the caller's rights (security_invoker), so RLS applies through them.
CREATE VIEW backup_health_summary WITH (security_invoker = true) AS
SELECT
    bp.id AS policy_id,
    bp.organization_id,
    bp.name AS policy_name,
    bp.backup_type,
    bp.priority,
    count(bj.id) AS total_jobs,
    count(bj.id) FILTER (WHERE bj.status = 'COMPLETED') AS successful_jobs,
    count(bj.id) FILTER (WHERE bj.status IN ('FAILED', 'CORRUPTED')) AS failed_jobs,
    round(count(bj.id) FILTER (WHERE bj.status = 'COMPLETED')::numeric
          / nullif(count(bj.id) FILTER (WHERE bj.status NOT IN ('SCHEDULED', 'IN_PROGRESS',
                                                                'CANCELLED')), 0)
          * 100, 2) AS success_rate_percent,
    sum(bj.actual_size_gb) FILTER (WHERE bj.status = 'COMPLETED') AS total_backup_size_gb,
    max(bj.completed_at) FILTER (WHERE bj.status = 'COMPLETED') AS last_success_at,
    max(bj.created_at) FILTER (WHERE bj.status IN ('FAILED', 'CORRUPTED')) AS last_failure_at
FROM backup_policies bp
LEFT JOIN backup_jobs bj ON bj.policy_id = bp.id AND bj.deletion_date IS NULL
WHERE bp.is_active
GROUP BY bp.id, bp.organization_id, bp.name, bp.backup_type, bp.priority;

CREATE VIEW wedding_day_backup_status WITH (security_invoker = true) AS
SELECT
    bj.organization_id,
    bj.related_wedding_ids,
    count(*) AS total_backups,
    count(*) FILTER (WHERE bj.status = 'COMPLETED') AS completed_backups,
    CASE
        WHEN count(*) FILTER (WHERE bj.status IN ('FAILED', 'CORRUPTED')) > 0 THEN 'CRITICAL'
        WHEN count(*) FILTER (WHERE bj.status = 'COMPLETED') = count(*) THEN 'HEALTHY'
        ELSE 'PARTIAL'
    END AS overall_status,
    max(bj.completed_at) AS last_completed_at
FROM backup_jobs bj
WHERE bj.is_wedding_day_backup
GROUP BY bj.organization_id, bj.related_wedding_ids;

-- Capacity planning: what each provider and tier holds, how fast it grows, and a 90-day
-- projection (linear from the last 30 days; the peak-season column applies the report's
-- 2.5x capacity multiplier).
CREATE VIEW backup_capacity_planning WITH (security_invoker = true) AS
SELECT
    bs.organization_id,
    bs.storage_provider,
    bs.storage_tier,
    count(*) AS objects,
    sum(bs.file_size_bytes) AS stored_bytes,
    sum(bs.file_size_bytes) FILTER (WHERE bs.created_at >= now() - interval '30 days')
        AS added_last_30_days_bytes,
    sum(bs.file_size_bytes)
        + 3 * coalesce(sum(bs.file_size_bytes)
                       FILTER (WHERE bs.created_at >= now() - interval '30 days'), 0)
        AS projected_90_days_bytes,
    sum(bs.file_size_bytes)
        + 7.5 * coalesce(sum(bs.file_size_bytes)
                         FILTER (WHERE bs.created_at >= now() - interval '30 days'), 0)
        AS projected_90_days_peak_bytes
FROM backup_storage bs
WHERE bs.deletion_date IS NULL AND bs.status NOT IN ('DELETED', 'FAILED')
GROUP BY bs.organization_id, bs.storage_provider, bs.storage_tier;

GRANT SELECT ON backup_health_summary, wedding_day_backup_status, backup_capacity_planning
    TO vowvault_tenant, vowvault_service;

-- Objects whose policy's lifecycle rules want them in a colder tier now.
CREATE FUNCTION lifecycle_candidates(as_of timestamptz DEFAULT now())
RETURNS TABLE (storage_id uuid, backup_job_id uuid, policy_name varchar,
               current_tier storage_tier, target_tier storage_tier, age_days integer)
LANGUAGE sql STABLE AS $$
    SELECT DISTINCT ON (bs.id)
        bs.id, bs.backup_job_id, bp.name, bs.storage_tier,
        (rule ->> 'tier')::storage_tier,
        floor(extract(epoch FROM as_of - bs.created_at) / 86400)::integer
    FROM backup_storage bs
    JOIN backup_jobs bj ON bj.id = bs.backup_job_id
    JOIN backup_policies bp ON bp.id = bj.policy_id
    CROSS JOIN LATERAL jsonb_array_elements(bp.lifecycle_rules) AS rule
    WHERE bs.deletion_date IS NULL
      AND bs.status IN ('STORED', 'VERIFIED')
      AND bs.object_kind = 'DATA'
      AND bj.status = 'COMPLETED'
      AND as_of - bs.created_at >= make_interval(days => (rule ->> 'after_days')::integer)
      AND (rule ->> 'tier')::storage_tier > bs.storage_tier
    ORDER BY bs.id, (rule ->> 'after_days')::integer DESC
$$;
COMMENT ON FUNCTION lifecycle_candidates(timestamptz) IS
    'Data objects due for a colder tier: the rule with the most days that applies wins. '
    'Manifests and keys stay where they are readable. The lifecycle flow plans from this '
    'and respects each provider''s minimum storage duration.';

-- Backups past their policy's retention_days and not held; the retention planner then
-- applies keep-last/daily/... rules, dependencies and running restores before deleting.
CREATE FUNCTION retention_candidates(as_of timestamptz DEFAULT now())
RETURNS TABLE (backup_job_id uuid, policy_name varchar, completed_at timestamptz,
               age_days integer, reason text)
LANGUAGE sql STABLE AS $$
    SELECT bj.id, bp.name, coalesce(bj.completed_at, bj.created_at),
           floor(extract(epoch FROM as_of - coalesce(bj.completed_at, bj.created_at))
                 / 86400)::integer,
           'older than ' || bp.retention_days || ' days'
    FROM backup_jobs bj
    JOIN backup_policies bp ON bp.id = bj.policy_id
    WHERE bj.deletion_date IS NULL
      AND bj.status IN ('COMPLETED', 'FAILED', 'CORRUPTED', 'CANCELLED')
      AND NOT bj.legal_hold
      AND coalesce(bj.completed_at, bj.created_at)
          < as_of - make_interval(days => bp.retention_days)
      AND coalesce(bj.completed_at, bj.created_at)
          < as_of - make_interval(years => bp.legal_hold_years)
      AND NOT EXISTS (SELECT 1 FROM backup_jobs child
                      WHERE child.parent_job_id = bj.id AND child.deletion_date IS NULL)
$$;
COMMENT ON FUNCTION retention_candidates(timestamptz) IS
    'Backups past retention_days and any legal hold, with no live dependant. A first '
    'filter: the retention planner keeps some of them (keep-last/daily/weekly/...).';

-- Daily numbers per policy into backup_analytics (idempotent for a date).
CREATE FUNCTION generate_backup_analytics(target_date date DEFAULT current_date)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    day_start timestamptz := target_date::timestamp AT TIME ZONE 'UTC';
    day_end timestamptz := (target_date + 1)::timestamp AT TIME ZONE 'UTC';
BEGIN
    INSERT INTO backup_analytics AS ba (
        id, organization_id, policy_id, analytics_date, total_jobs, successful_jobs,
        failed_jobs, corrupted_jobs, success_rate_percent, expected_runs,
        compliance_percentage, source_bytes, stored_bytes, bytes_by_tier, bytes_by_provider,
        avg_compression_ratio, duration_p50_seconds, duration_p95_seconds,
        throughput_p50_mib_s, throughput_p95_mib_s, drills_run, drills_passed,
        rto_avg_seconds, key_age_days, created_at)
    SELECT
        gen_random_uuid(), bp.organization_id, bp.id, target_date,
        coalesce(j.total, 0), coalesce(j.ok, 0), coalesce(j.failed, 0),
        coalesce(j.corrupted, 0),
        round(j.ok::numeric * 100 / nullif(j.finished, 0), 2),
        e.expected,
        CASE WHEN e.expected = 0 THEN 100.00
             ELSE round(least(coalesce(j.ok, 0), e.expected)::numeric * 100 / e.expected, 2)
        END,
        coalesce(j.source_bytes, 0), coalesce(j.stored_bytes, 0),
        s.by_tier, s.by_provider,
        j.ratio, j.p50, j.p95, j.tp50, j.tp95,
        coalesce(d.run, 0), coalesce(d.passed, 0), d.rto,
        k.age_days, now()
    FROM backup_policies bp
    CROSS JOIN LATERAL (
        SELECT vowvault_expected_runs(bp.id, day_start, day_end) AS expected
    ) e
    LEFT JOIN LATERAL (
        SELECT count(*) AS total,
               count(*) FILTER (WHERE status = 'COMPLETED') AS ok,
               count(*) FILTER (WHERE status = 'FAILED') AS failed,
               count(*) FILTER (WHERE status = 'CORRUPTED') AS corrupted,
               count(*) FILTER (WHERE status IN ('COMPLETED', 'FAILED', 'CORRUPTED'))
                   AS finished,
               sum(source_bytes) FILTER (WHERE status = 'COMPLETED') AS source_bytes,
               sum(stored_bytes) FILTER (WHERE status = 'COMPLETED') AS stored_bytes,
               avg(compression_ratio) FILTER (WHERE status = 'COMPLETED') AS ratio,
               percentile_cont(0.5) WITHIN GROUP (
                   ORDER BY extract(epoch FROM completed_at - started_at))
                   FILTER (WHERE status = 'COMPLETED') AS p50,
               percentile_cont(0.95) WITHIN GROUP (
                   ORDER BY extract(epoch FROM completed_at - started_at))
                   FILTER (WHERE status = 'COMPLETED') AS p95,
               percentile_cont(0.5) WITHIN GROUP (
                   ORDER BY source_bytes / 1048576.0
                            / nullif(extract(epoch FROM completed_at - started_at), 0))
                   FILTER (WHERE status = 'COMPLETED') AS tp50,
               percentile_cont(0.95) WITHIN GROUP (
                   ORDER BY source_bytes / 1048576.0
                            / nullif(extract(epoch FROM completed_at - started_at), 0))
                   FILTER (WHERE status = 'COMPLETED') AS tp95
        FROM backup_jobs
        WHERE policy_id = bp.id
          AND coalesce(completed_at, created_at) >= day_start
          AND coalesce(completed_at, created_at) < day_end
    ) j ON true
    LEFT JOIN LATERAL (
        SELECT jsonb_object_agg(tier, bytes) FILTER (WHERE tier IS NOT NULL) AS by_tier,
               (SELECT jsonb_object_agg(provider, bytes) FROM (
                    SELECT bs2.storage_provider AS provider, sum(bs2.file_size_bytes) AS bytes
                    FROM backup_storage bs2 JOIN backup_jobs bj2 ON bj2.id = bs2.backup_job_id
                    WHERE bj2.policy_id = bp.id AND bs2.deletion_date IS NULL
                      AND bs2.created_at < day_end
                    GROUP BY bs2.storage_provider) p) AS by_provider
        FROM (
            SELECT bs.storage_tier::text AS tier, sum(bs.file_size_bytes) AS bytes
            FROM backup_storage bs JOIN backup_jobs bj ON bj.id = bs.backup_job_id
            WHERE bj.policy_id = bp.id AND bs.deletion_date IS NULL AND bs.created_at < day_end
            GROUP BY bs.storage_tier
        ) t
    ) s ON true
    LEFT JOIN LATERAL (
        SELECT count(*) AS run,
               count(*) FILTER (WHERE rj.status = 'COMPLETED') AS passed,
               avg(rj.rto_seconds) FILTER (WHERE rj.status = 'COMPLETED') AS rto
        FROM recovery_jobs rj JOIN backup_jobs bj ON bj.id = rj.backup_job_id
        WHERE bj.policy_id = bp.id AND rj.recovery_type = 'DR_DRILL'
          AND rj.created_at >= day_start AND rj.created_at < day_end
    ) d ON true
    LEFT JOIN LATERAL (
        SELECT floor(extract(epoch FROM day_end - ek.created_at) / 86400)::integer AS age_days
        FROM encryption_keys ek
        WHERE ek.organization_id = bp.organization_id AND ek.status = 'ACTIVE'
    ) k ON true
    WHERE bp.is_active OR j.total > 0
    ON CONFLICT (policy_id, analytics_date) DO UPDATE SET
        total_jobs = excluded.total_jobs, successful_jobs = excluded.successful_jobs,
        failed_jobs = excluded.failed_jobs, corrupted_jobs = excluded.corrupted_jobs,
        success_rate_percent = excluded.success_rate_percent,
        expected_runs = excluded.expected_runs,
        compliance_percentage = excluded.compliance_percentage,
        source_bytes = excluded.source_bytes, stored_bytes = excluded.stored_bytes,
        bytes_by_tier = excluded.bytes_by_tier, bytes_by_provider = excluded.bytes_by_provider,
        avg_compression_ratio = excluded.avg_compression_ratio,
        duration_p50_seconds = excluded.duration_p50_seconds,
        duration_p95_seconds = excluded.duration_p95_seconds,
        throughput_p50_mib_s = excluded.throughput_p50_mib_s,
        throughput_p95_mib_s = excluded.throughput_p95_mib_s,
        drills_run = excluded.drills_run, drills_passed = excluded.drills_passed,
        rto_avg_seconds = excluded.rto_avg_seconds, key_age_days = excluded.key_age_days;
END
$$;
COMMENT ON FUNCTION generate_backup_analytics(date) IS
    'Per policy, for one UTC day: jobs, success rate, compliance against the schedule, '
    'bytes per tier and provider, compression, duration and throughput percentiles, drills '
    'and key age. Idempotent: re-running a day replaces its rows.';
