BEGIN;

CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL, 
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> 0001

CREATE TYPE vendor_type AS ENUM ('PHOTOGRAPHER', 'VIDEOGRAPHER', 'VENUE', 'FLORIST', 'PLANNER', 'CATERER', 'PLATFORM', 'OTHER');

CREATE TABLE organizations (
    id UUID DEFAULT gen_random_uuid() NOT NULL, 
    slug VARCHAR(63) NOT NULL, 
    name VARCHAR(255) NOT NULL, 
    vendor_type vendor_type DEFAULT 'OTHER' NOT NULL, 
    is_active BOOLEAN DEFAULT true NOT NULL, 
    shredded_at TIMESTAMP WITH TIME ZONE, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT pk_organizations PRIMARY KEY (id), 
    CONSTRAINT ck_organizations_slug_not_empty CHECK (slug <> ''), 
    CONSTRAINT uq_organizations_slug UNIQUE (slug)
);

CREATE TABLE audit_log (
    id BIGSERIAL NOT NULL, 
    organization_id UUID, 
    occurred_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    actor VARCHAR(255) NOT NULL, 
    actor_role VARCHAR(64), 
    action VARCHAR(64) NOT NULL, 
    target_type VARCHAR(64) NOT NULL, 
    target_id VARCHAR(255), 
    summary TEXT, 
    before JSONB, 
    after JSONB, 
    prev_hash VARCHAR(64) NOT NULL, 
    row_hash VARCHAR(64) NOT NULL, 
    CONSTRAINT pk_audit_log PRIMARY KEY (id), 
    CONSTRAINT fk_audit_log_organization_id_organizations FOREIGN KEY(organization_id) REFERENCES organizations (id) ON DELETE RESTRICT, 
    CONSTRAINT uq_audit_log_prev_hash UNIQUE (prev_hash), 
    CONSTRAINT uq_audit_log_row_hash UNIQUE (row_hash)
);

CREATE INDEX idx_audit_log_org_time ON audit_log (organization_id, occurred_at DESC);

CREATE INDEX idx_audit_log_target ON audit_log (target_type, target_id);

CREATE TYPE backup_type AS ENUM ('FULL', 'INCREMENTAL', 'DIFFERENTIAL', 'TRANSACTION_LOG', 'CONFIGURATION', 'USER_DATA');

CREATE TYPE backup_priority AS ENUM ('LOW', 'NORMAL', 'HIGH', 'CRITICAL', 'EMERGENCY');

CREATE TYPE storage_tier AS ENUM ('HOT', 'WARM', 'COLD', 'ARCHIVE', 'DEEP_ARCHIVE');

CREATE TABLE backup_policies (
    id UUID DEFAULT gen_random_uuid() NOT NULL, 
    organization_id UUID NOT NULL, 
    name VARCHAR(255) NOT NULL, 
    description TEXT, 
    backup_type backup_type NOT NULL, 
    source_kind VARCHAR(32) NOT NULL, 
    source_config JSONB NOT NULL, 
    priority backup_priority DEFAULT 'NORMAL' NOT NULL, 
    schedule_cron VARCHAR(100) NOT NULL, 
    timezone VARCHAR(64) DEFAULT 'UTC' NOT NULL, 
    peak_season_multiplier INTEGER DEFAULT '5' NOT NULL, 
    effective_schedules JSONB NOT NULL, 
    retention_days INTEGER DEFAULT '30' NOT NULL, 
    keep_last INTEGER DEFAULT '0' NOT NULL, 
    keep_daily INTEGER DEFAULT '0' NOT NULL, 
    keep_weekly INTEGER DEFAULT '0' NOT NULL, 
    keep_monthly INTEGER DEFAULT '0' NOT NULL, 
    keep_yearly INTEGER DEFAULT '0' NOT NULL, 
    min_verified_backups INTEGER DEFAULT '1' NOT NULL, 
    legal_hold_years INTEGER DEFAULT '0' NOT NULL, 
    wedding_day_priority BOOLEAN DEFAULT false NOT NULL, 
    vendor_type vendor_type, 
    storage_tier storage_tier DEFAULT 'HOT' NOT NULL, 
    storage_targets JSONB NOT NULL, 
    encryption_enabled BOOLEAN DEFAULT true NOT NULL, 
    key_provider VARCHAR(64) DEFAULT 'local' NOT NULL, 
    lifecycle_rules JSONB NOT NULL, 
    max_retries INTEGER DEFAULT '2' NOT NULL, 
    rto_target_minutes INTEGER DEFAULT '15' NOT NULL, 
    is_active BOOLEAN DEFAULT true NOT NULL, 
    spec_hash VARCHAR(64) NOT NULL, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT pk_backup_policies PRIMARY KEY (id), 
    CONSTRAINT ck_backup_policies_retention_counts_not_negative CHECK (keep_last >= 0 AND keep_daily >= 0 AND keep_weekly >= 0 AND keep_monthly >= 0 AND keep_yearly >= 0 AND min_verified_backups >= 0 AND legal_hold_years >= 0), 
    CONSTRAINT ck_backup_policies_max_retries_range CHECK (max_retries BETWEEN 0 AND 10), 
    CONSTRAINT ck_backup_policies_peak_multiplier_range CHECK (peak_season_multiplier BETWEEN 1 AND 60), 
    CONSTRAINT ck_backup_policies_retention_days_positive CHECK (retention_days >= 1), 
    CONSTRAINT ck_backup_policies_rto_positive CHECK (rto_target_minutes > 0), 
    CONSTRAINT fk_backup_policies_organization_id_organizations FOREIGN KEY(organization_id) REFERENCES organizations (id) ON DELETE RESTRICT, 
    CONSTRAINT uq_backup_policies_name UNIQUE (name), 
    CONSTRAINT ck_backup_policies_source_kind CHECK (source_kind IN ('POSTGRES_LOGICAL', 'POSTGRES_PHYSICAL', 'DIRECTORY'))
);

CREATE INDEX idx_backup_policies_active ON backup_policies (priority) WHERE is_active;

CREATE INDEX idx_backup_policies_org ON backup_policies (organization_id);

CREATE TABLE encryption_keys (
    id UUID DEFAULT gen_random_uuid() NOT NULL, 
    organization_id UUID NOT NULL, 
    version INTEGER NOT NULL, 
    provider VARCHAR(32) NOT NULL, 
    key_ref VARCHAR(255) NOT NULL, 
    algorithm VARCHAR(32) DEFAULT 'AES-256-GCM' NOT NULL, 
    status VARCHAR(32) NOT NULL, 
    rotation_due_at TIMESTAMP WITH TIME ZONE, 
    retired_at TIMESTAMP WITH TIME ZONE, 
    destroyed_at TIMESTAMP WITH TIME ZONE, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT pk_encryption_keys PRIMARY KEY (id), 
    CONSTRAINT ck_encryption_keys_version_positive CHECK (version >= 1), 
    CONSTRAINT fk_encryption_keys_organization_id_organizations FOREIGN KEY(organization_id) REFERENCES organizations (id) ON DELETE RESTRICT, 
    CONSTRAINT uq_encryption_keys_organization_id_version UNIQUE (organization_id, version), 
    CONSTRAINT ck_encryption_keys_key_status CHECK (status IN ('ACTIVE', 'RETIRED', 'DESTROYED'))
);

CREATE UNIQUE INDEX idx_encryption_keys_one_active ON encryption_keys (organization_id) WHERE status = 'ACTIVE';

CREATE INDEX idx_encryption_keys_rotation_due ON encryption_keys (rotation_due_at) WHERE status = 'ACTIVE';

CREATE TABLE erasure_requests (
    id UUID DEFAULT gen_random_uuid() NOT NULL, 
    organization_id UUID NOT NULL, 
    subject_type VARCHAR(32) NOT NULL, 
    subject_ref VARCHAR(255) NOT NULL, 
    scope JSONB NOT NULL, 
    status VARCHAR(32) NOT NULL, 
    requested_by VARCHAR(255) NOT NULL, 
    requested_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    completed_at TIMESTAMP WITH TIME ZONE, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT pk_erasure_requests PRIMARY KEY (id), 
    CONSTRAINT fk_erasure_requests_organization_id_organizations FOREIGN KEY(organization_id) REFERENCES organizations (id) ON DELETE RESTRICT, 
    CONSTRAINT ck_erasure_requests_erasure_subject CHECK (subject_type IN ('COUPLE', 'WEDDING', 'VENDOR', 'PERSON')), 
    CONSTRAINT ck_erasure_requests_erasure_status CHECK (status IN ('PENDING', 'IN_PROGRESS', 'COMPLETED'))
);

CREATE INDEX idx_erasure_requests_org_status ON erasure_requests (organization_id, status);

CREATE INDEX idx_erasure_requests_subject ON erasure_requests (subject_ref);

CREATE TABLE webhook_endpoints (
    id UUID DEFAULT gen_random_uuid() NOT NULL, 
    organization_id UUID NOT NULL, 
    url TEXT NOT NULL, 
    secret_ref VARCHAR(255) NOT NULL, 
    events JSONB NOT NULL, 
    is_active BOOLEAN DEFAULT true NOT NULL, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT pk_webhook_endpoints PRIMARY KEY (id), 
    CONSTRAINT fk_webhook_endpoints_organization_id_organizations FOREIGN KEY(organization_id) REFERENCES organizations (id) ON DELETE RESTRICT
);

CREATE INDEX idx_webhook_endpoints_org ON webhook_endpoints (organization_id);

CREATE TABLE wedding_calendar (
    id UUID DEFAULT gen_random_uuid() NOT NULL, 
    organization_id UUID NOT NULL, 
    wedding_id UUID NOT NULL, 
    wedding_date DATE NOT NULL, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT pk_wedding_calendar PRIMARY KEY (id), 
    CONSTRAINT fk_wedding_calendar_organization_id_organizations FOREIGN KEY(organization_id) REFERENCES organizations (id) ON DELETE RESTRICT, 
    CONSTRAINT uq_wedding_calendar_organization_id_wedding_id UNIQUE (organization_id, wedding_id)
);

CREATE INDEX idx_wedding_calendar_date ON wedding_calendar (wedding_date, organization_id);

CREATE TABLE backup_analytics (
    id UUID DEFAULT gen_random_uuid() NOT NULL, 
    organization_id UUID NOT NULL, 
    policy_id UUID NOT NULL, 
    analytics_date DATE NOT NULL, 
    total_jobs INTEGER NOT NULL, 
    successful_jobs INTEGER NOT NULL, 
    failed_jobs INTEGER NOT NULL, 
    corrupted_jobs INTEGER NOT NULL, 
    success_rate_percent NUMERIC(5, 2), 
    expected_runs INTEGER, 
    compliance_percentage NUMERIC(5, 2), 
    source_bytes BIGINT NOT NULL, 
    stored_bytes BIGINT NOT NULL, 
    bytes_by_tier JSONB, 
    bytes_by_provider JSONB, 
    avg_compression_ratio NUMERIC(5, 4), 
    duration_p50_seconds NUMERIC(12, 3), 
    duration_p95_seconds NUMERIC(12, 3), 
    throughput_p50_mib_s NUMERIC(12, 3), 
    throughput_p95_mib_s NUMERIC(12, 3), 
    drills_run INTEGER NOT NULL, 
    drills_passed INTEGER NOT NULL, 
    rto_avg_seconds NUMERIC(12, 3), 
    key_age_days INTEGER, 
    forecast JSONB, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT pk_backup_analytics PRIMARY KEY (id), 
    CONSTRAINT fk_backup_analytics_organization_id_organizations FOREIGN KEY(organization_id) REFERENCES organizations (id) ON DELETE RESTRICT, 
    CONSTRAINT fk_backup_analytics_policy_id_backup_policies FOREIGN KEY(policy_id) REFERENCES backup_policies (id) ON DELETE RESTRICT, 
    CONSTRAINT uq_backup_analytics_policy_id_analytics_date UNIQUE (policy_id, analytics_date)
);

CREATE INDEX idx_backup_analytics_org_date ON backup_analytics (organization_id, analytics_date DESC);

CREATE TYPE backup_status AS ENUM ('SCHEDULED', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELLED', 'CORRUPTED', 'EXPIRED');

CREATE TABLE backup_jobs (
    id UUID DEFAULT gen_random_uuid() NOT NULL, 
    organization_id UUID NOT NULL, 
    policy_id UUID, 
    job_name VARCHAR(255) NOT NULL, 
    backup_type backup_type NOT NULL, 
    status backup_status DEFAULT 'SCHEDULED' NOT NULL, 
    priority backup_priority DEFAULT 'NORMAL' NOT NULL, 
    scheduled_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    started_at TIMESTAMP WITH TIME ZONE, 
    completed_at TIMESTAMP WITH TIME ZONE, 
    heartbeat_at TIMESTAMP WITH TIME ZONE, 
    parent_job_id UUID, 
    source_bytes BIGINT, 
    stored_bytes BIGINT, 
    actual_size_gb NUMERIC(10, 2), 
    compression_ratio NUMERIC(5, 4), 
    file_count INTEGER, 
    related_wedding_ids UUID[], 
    is_wedding_day_backup BOOLEAN DEFAULT false NOT NULL, 
    error_message TEXT, 
    retry_count INTEGER DEFAULT '0' NOT NULL, 
    verification_status VARCHAR(32), 
    verified_at TIMESTAMP WITH TIME ZONE, 
    stage_durations JSONB, 
    source_info JSONB, 
    format_version SMALLINT, 
    manifest_sha256 VARCHAR(64), 
    encryption_key_id UUID, 
    wrapped_dek BYTEA, 
    flow_run_id VARCHAR(64), 
    worker_host VARCHAR(255), 
    worker_pid INTEGER, 
    legal_hold BOOLEAN DEFAULT false NOT NULL, 
    expires_at TIMESTAMP WITH TIME ZONE, 
    deletion_date TIMESTAMP WITH TIME ZONE, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT pk_backup_jobs PRIMARY KEY (id), 
    CONSTRAINT ck_backup_jobs_completed_has_time CHECK (status <> 'COMPLETED' OR completed_at IS NOT NULL), 
    CONSTRAINT ck_backup_jobs_compression_ratio_not_negative CHECK (compression_ratio IS NULL OR compression_ratio >= 0), 
    CONSTRAINT ck_backup_jobs_retry_count_not_negative CHECK (retry_count >= 0), 
    CONSTRAINT fk_backup_jobs_encryption_key_id_encryption_keys FOREIGN KEY(encryption_key_id) REFERENCES encryption_keys (id) ON DELETE RESTRICT, 
    CONSTRAINT fk_backup_jobs_organization_id_organizations FOREIGN KEY(organization_id) REFERENCES organizations (id) ON DELETE RESTRICT, 
    CONSTRAINT fk_backup_jobs_parent_job_id_backup_jobs FOREIGN KEY(parent_job_id) REFERENCES backup_jobs (id) ON DELETE RESTRICT, 
    CONSTRAINT fk_backup_jobs_policy_id_backup_policies FOREIGN KEY(policy_id) REFERENCES backup_policies (id) ON DELETE RESTRICT, 
    CONSTRAINT ck_backup_jobs_verification_status CHECK (verification_status IN ('PENDING', 'VERIFIED', 'FAILED'))
);

CREATE INDEX idx_backup_jobs_expires ON backup_jobs (expires_at) WHERE deletion_date IS NULL;

CREATE INDEX idx_backup_jobs_in_progress ON backup_jobs (heartbeat_at) WHERE status = 'IN_PROGRESS';

CREATE INDEX idx_backup_jobs_key ON backup_jobs (encryption_key_id);

CREATE INDEX idx_backup_jobs_org_created ON backup_jobs (organization_id, created_at DESC);

CREATE INDEX idx_backup_jobs_parent ON backup_jobs (parent_job_id);

CREATE INDEX idx_backup_jobs_policy_completed ON backup_jobs (policy_id, completed_at DESC) WHERE status = 'COMPLETED';

CREATE INDEX idx_backup_jobs_policy_id ON backup_jobs (policy_id);

CREATE INDEX idx_backup_jobs_scheduled_at ON backup_jobs (scheduled_at);

CREATE INDEX idx_backup_jobs_status_date ON backup_jobs (status, created_at DESC);

CREATE INDEX idx_backup_jobs_wedding_day ON backup_jobs (is_wedding_day_backup) WHERE is_wedding_day_backup = true;

CREATE TABLE webhook_deliveries (
    id UUID DEFAULT gen_random_uuid() NOT NULL, 
    organization_id UUID NOT NULL, 
    endpoint_id UUID NOT NULL, 
    event_type VARCHAR(64) NOT NULL, 
    message_id VARCHAR(64) NOT NULL, 
    payload JSONB NOT NULL, 
    status VARCHAR(32) NOT NULL, 
    attempts INTEGER DEFAULT '0' NOT NULL, 
    response_status INTEGER, 
    error_message TEXT, 
    next_attempt_at TIMESTAMP WITH TIME ZONE, 
    delivered_at TIMESTAMP WITH TIME ZONE, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT pk_webhook_deliveries PRIMARY KEY (id), 
    CONSTRAINT fk_webhook_deliveries_endpoint_id_webhook_endpoints FOREIGN KEY(endpoint_id) REFERENCES webhook_endpoints (id) ON DELETE RESTRICT, 
    CONSTRAINT fk_webhook_deliveries_organization_id_organizations FOREIGN KEY(organization_id) REFERENCES organizations (id) ON DELETE RESTRICT, 
    CONSTRAINT uq_webhook_deliveries_message_id UNIQUE (message_id), 
    CONSTRAINT ck_webhook_deliveries_delivery_status CHECK (status IN ('PENDING', 'DELIVERED', 'FAILED', 'GAVE_UP'))
);

CREATE INDEX idx_webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at DESC);

CREATE INDEX idx_webhook_deliveries_pending ON webhook_deliveries (next_attempt_at) WHERE status = 'PENDING';

CREATE TABLE backup_storage (
    id UUID DEFAULT gen_random_uuid() NOT NULL, 
    organization_id UUID NOT NULL, 
    backup_job_id UUID NOT NULL, 
    storage_provider VARCHAR(100) NOT NULL, 
    storage_url TEXT NOT NULL, 
    copy_role VARCHAR(32) NOT NULL, 
    object_kind VARCHAR(32) NOT NULL, 
    storage_tier storage_tier DEFAULT 'HOT' NOT NULL, 
    file_path TEXT NOT NULL, 
    file_size_bytes BIGINT NOT NULL, 
    checksum_sha256 VARCHAR(64), 
    is_encrypted BOOLEAN DEFAULT true NOT NULL, 
    encryption_key_id VARCHAR(255), 
    status VARCHAR(32) NOT NULL, 
    is_archived BOOLEAN DEFAULT false NOT NULL, 
    restore_state VARCHAR(32), 
    legal_hold BOOLEAN DEFAULT false NOT NULL, 
    tier_changed_at TIMESTAMP WITH TIME ZONE, 
    verified_at TIMESTAMP WITH TIME ZONE, 
    deletion_date TIMESTAMP WITH TIME ZONE, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT pk_backup_storage PRIMARY KEY (id), 
    CONSTRAINT ck_backup_storage_size_not_negative CHECK (file_size_bytes >= 0), 
    CONSTRAINT fk_backup_storage_backup_job_id_backup_jobs FOREIGN KEY(backup_job_id) REFERENCES backup_jobs (id) ON DELETE RESTRICT, 
    CONSTRAINT fk_backup_storage_organization_id_organizations FOREIGN KEY(organization_id) REFERENCES organizations (id) ON DELETE RESTRICT, 
    CONSTRAINT uq_backup_storage_storage_url_file_path UNIQUE (storage_url, file_path), 
    CONSTRAINT ck_backup_storage_copy_role CHECK (copy_role IN ('PRIMARY', 'COPY')), 
    CONSTRAINT ck_backup_storage_object_kind CHECK (object_kind IN ('DATA', 'INDEX', 'MANIFEST', 'KEY')), 
    CONSTRAINT ck_backup_storage_copy_status CHECK (status IN ('PENDING', 'STORED', 'VERIFIED', 'FAILED', 'DELETING', 'DELETED'))
);

CREATE INDEX idx_backup_storage_job ON backup_storage (backup_job_id);

CREATE INDEX idx_backup_storage_lifecycle ON backup_storage (storage_tier, created_at) WHERE deletion_date IS NULL;

CREATE INDEX idx_backup_storage_org ON backup_storage (organization_id);

CREATE INDEX idx_backup_storage_tier ON backup_storage (storage_tier);

CREATE TYPE recovery_type AS ENUM ('FULL_RESTORE', 'POINT_IN_TIME', 'PARTIAL', 'DR_DRILL', 'EMERGENCY');

CREATE TYPE recovery_status AS ENUM ('PENDING', 'IN_PROGRESS', 'VALIDATING', 'COMPLETED', 'FAILED', 'CANCELLED');

CREATE TABLE recovery_jobs (
    id UUID DEFAULT gen_random_uuid() NOT NULL, 
    organization_id UUID NOT NULL, 
    backup_job_id UUID NOT NULL, 
    recovery_type recovery_type NOT NULL, 
    status recovery_status DEFAULT 'PENDING' NOT NULL, 
    is_emergency_recovery BOOLEAN DEFAULT false NOT NULL, 
    requested_by VARCHAR(255), 
    requester_role VARCHAR(64), 
    target_kind VARCHAR(32), 
    target_description TEXT, 
    started_at TIMESTAMP WITH TIME ZONE, 
    completed_at TIMESTAMP WITH TIME ZONE, 
    duration_seconds NUMERIC(12, 3), 
    rto_seconds NUMERIC(12, 3), 
    rto_target_seconds INTEGER, 
    rpo_seconds NUMERIC(14, 3), 
    bytes_restored BIGINT, 
    storage_used TEXT, 
    validation JSONB, 
    erasures_applied JSONB, 
    error_message TEXT, 
    flow_run_id VARCHAR(64), 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT pk_recovery_jobs PRIMARY KEY (id), 
    CONSTRAINT ck_recovery_jobs_emergency_type_matches CHECK (NOT is_emergency_recovery OR recovery_type = 'EMERGENCY'), 
    CONSTRAINT fk_recovery_jobs_backup_job_id_backup_jobs FOREIGN KEY(backup_job_id) REFERENCES backup_jobs (id) ON DELETE RESTRICT, 
    CONSTRAINT fk_recovery_jobs_organization_id_organizations FOREIGN KEY(organization_id) REFERENCES organizations (id) ON DELETE RESTRICT
);

CREATE INDEX idx_recovery_jobs_backup ON recovery_jobs (backup_job_id);

CREATE INDEX idx_recovery_jobs_emergency ON recovery_jobs (organization_id) WHERE is_emergency_recovery;

CREATE INDEX idx_recovery_jobs_org_created ON recovery_jobs (organization_id, created_at DESC);

CREATE INDEX idx_recovery_jobs_type_created ON recovery_jobs (recovery_type, created_at DESC);

-- Scheduling rules in PostgreSQL: the same rules as src/vowvault/scheduling.py, which a
-- property-based test (tests/integration/test_scheduling_sql.py) checks against Python.
--
-- Time rules (module docstring of vowvault.scheduling):
--   * a cron expression matches wall-clock times in the policy's timezone;
--   * a wall-clock time that does not exist (clocks go forward) is read with the UTC
--     offset in force before the change;
--   * a wall-clock time that happens twice (clocks go back) fires once, at its second
--     (standard-time) occurrence.
-- This is exactly what (local_timestamp AT TIME ZONE tz) does, so the functions below use it.
--
-- This file is run as one statement string through SQLAlchemy text(): it must contain no
-- percent sign and no colon directly followed by a word character (bind parameter syntax);
-- double-colon casts are fine.

-- ---------------------------------------------------------------------------------------
-- Cron parsing
-- ---------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION vowvault_cron_field(field text, lo integer, hi integer)
RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
DECLARE
    part text;
    m text[];
    a integer;
    b integer;
    step integer;
    vals integer[] := '{}';
BEGIN
    IF field IS NULL OR lo IS NULL OR hi IS NULL OR lo > hi THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'vowvault_cron_field needs a field and a range lo <= hi';
    END IF;
    field := btrim(field);
    IF field = '*' THEN
        RETURN NULL;
    END IF;
    IF field = '' THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'empty cron field';
    END IF;
    FOREACH part IN ARRAY string_to_array(field, ',') LOOP
        m := regexp_match(part, '^(\*|([0-9]+)(-([0-9]+))?)(/([0-9]+))?$');
        IF m IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = 'invalid cron field ' || quote_literal(field)
                          || ' (expected *, numbers, ranges a-b and steps /n)';
        END IF;
        step := coalesce(m[6]::integer, 1);
        IF m[1] = '*' THEN
            a := lo;
            b := hi;
        ELSE
            a := m[2]::integer;
            -- a bare number with a step (5/15) runs from the number to the end of the range
            b := coalesce(m[4]::integer, CASE WHEN m[6] IS NULL THEN a ELSE hi END);
        END IF;
        IF step < 1 OR a < lo OR b > hi OR a > b THEN
            RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
                MESSAGE = 'cron field ' || quote_literal(field) || ' is out of range '
                          || lo || '-' || hi || ' or has a zero step or a reversed range';
        END IF;
        vals := vals || ARRAY(SELECT generate_series(a, b, step));
    END LOOP;
    vals := ARRAY(SELECT DISTINCT v FROM unnest(vals) AS v ORDER BY v);
    IF cardinality(vals) = hi - lo + 1 THEN
        RETURN NULL;  -- allows every value: the same as '*', as in normalize_cron
    END IF;
    RETURN vals;
END
$$;

COMMENT ON FUNCTION vowvault_cron_field(text, integer, integer) IS
'Expands one cron field into the sorted array of the values it allows within lo..hi. '
'NULL means unrestricted: the field is * or allows every value of the range (as '
'vowvault.scheduling.normalize_cron, which writes such fields as *). Accepts numbers, '
'ranges a-b, comma lists and steps (*/s, a-b/s, a/s); names (MON, JAN) are not accepted, '
'the catalog stores the canonical numeric form. Raises invalid_parameter_value otherwise.';

CREATE OR REPLACE FUNCTION vowvault_cron_parse(
    cron text,
    OUT minutes integer[], OUT hours integer[], OUT doms integer[],
    OUT months integer[], OUT dows integer[])
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    expr text := btrim(regexp_replace(cron, '\s+', ' ', 'g'));
    f text[];
BEGIN
    expr := CASE lower(expr)
        WHEN '@yearly' THEN '0 0 1 1 *'
        WHEN '@annually' THEN '0 0 1 1 *'
        WHEN '@monthly' THEN '0 0 1 * *'
        WHEN '@weekly' THEN '0 0 * * 0'
        WHEN '@daily' THEN '0 0 * * *'
        WHEN '@midnight' THEN '0 0 * * *'
        WHEN '@hourly' THEN '0 * * * *'
        ELSE expr END;
    f := string_to_array(expr, ' ');
    IF cardinality(f) IS DISTINCT FROM 5 THEN
        RAISE EXCEPTION USING ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'cron ' || quote_literal(cron) || ' must have 5 fields (minute hour '
                      || 'day-of-month month day-of-week)';
    END IF;
    minutes := vowvault_cron_field(f[1], 0, 59);
    hours := vowvault_cron_field(f[2], 0, 23);
    doms := vowvault_cron_field(f[3], 1, 31);
    months := vowvault_cron_field(f[4], 1, 12);
    dows := vowvault_cron_field(f[5], 0, 7);
    IF dows IS NOT NULL THEN
        -- 7 is another name for Sunday (0)
        dows := ARRAY(SELECT DISTINCT mod(v, 7) FROM unnest(dows) AS v ORDER BY 1);
        IF cardinality(dows) = 7 THEN
            dows := NULL;
        END IF;
    END IF;
END
$$;

COMMENT ON FUNCTION vowvault_cron_parse(text) IS
'Splits a 5-field cron expression (or @daily-style macro) into the arrays of allowed '
'minutes, hours, days of month, months and days of week (0 = Sunday, 7 folded into 0); '
'a NULL array means the field is unrestricted (see vowvault_cron_field).';

CREATE OR REPLACE FUNCTION vowvault_cron_day_matches(
    d date, doms integer[], months integer[], dows integer[])
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT (months IS NULL OR extract(month FROM d)::integer = ANY (months))
       AND CASE
             WHEN doms IS NOT NULL AND dows IS NOT NULL
               THEN extract(day FROM d)::integer = ANY (doms)
                    OR extract(dow FROM d)::integer = ANY (dows)
             ELSE (doms IS NULL OR extract(day FROM d)::integer = ANY (doms))
                  AND (dows IS NULL OR extract(dow FROM d)::integer = ANY (dows))
           END
$$;

COMMENT ON FUNCTION vowvault_cron_day_matches(date, integer[], integer[], integer[]) IS
'Whether cron fires on calendar day d: its month must be allowed, and day-of-month and '
'day-of-week are OR-ed when both are restricted (Vixie cron), AND-ed otherwise (so when '
'either is unrestricted only the other one restricts). NULL arrays are unrestricted; '
'day of week 0 is Sunday.';

-- ---------------------------------------------------------------------------------------
-- Fire times of one cron expression in a timezone
-- ---------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION vowvault_cron_next(cron text, tz text, after timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
AS $$
DECLARE
    margin constant interval := interval '3 hours';
    p record;
    mins integer[];
    hrs integer[];
    start_local timestamp;
    d date;
    last_day date;
    h integer;
    mi integer;
    l timestamp;
    inst timestamptz;
    best timestamptz;
    best_local timestamp;
BEGIN
    IF NOT isfinite(after) THEN
        RETURN NULL;
    END IF;
    SELECT * INTO p FROM vowvault_cron_parse(cron);
    mins := coalesce(p.minutes, ARRAY(SELECT generate_series(0, 59)));
    hrs := coalesce(p.hours, ARRAY(SELECT generate_series(0, 23)));
    -- Wall-clock fire times strictly after this one are examined, in order (the Python
    -- version walks croniter from the same point).
    start_local := date_trunc('minute', after AT TIME ZONE tz) - margin;
    d := start_local::date;
    last_day := d + 3700;  -- about ten years: enough for Feb 29 (at most 8 years apart)
    WHILE d <= last_day LOOP
        IF p.months IS NOT NULL AND NOT (extract(month FROM d)::integer = ANY (p.months)) THEN
            d := (date_trunc('month', d) + interval '1 month')::date;
            CONTINUE;
        END IF;
        IF best_local IS NOT NULL AND d > best_local + margin THEN
            RETURN best;
        END IF;
        IF vowvault_cron_day_matches(d, p.doms, p.months, p.dows) THEN
            FOREACH h IN ARRAY hrs LOOP
                CONTINUE WHEN d + make_time(h, 59, 0) <= start_local;
                FOREACH mi IN ARRAY mins LOOP
                    l := d + make_time(h, mi, 0);
                    CONTINUE WHEN l <= start_local;
                    IF best_local IS NOT NULL AND l > best_local + margin THEN
                        -- a wall-clock time this much later cannot be an earlier instant
                        RETURN best;
                    END IF;
                    inst := l AT TIME ZONE tz;
                    IF inst > after AND (best IS NULL OR inst < best) THEN
                        best := inst;
                        best_local := l;
                    END IF;
                END LOOP;
            END LOOP;
        END IF;
        d := d + 1;
    END LOOP;
    RETURN best;
END
$$;

COMMENT ON FUNCTION vowvault_cron_next(text, text, timestamptz) IS
'The first instant strictly after "after" at which cron fires in timezone tz (Python '
'vowvault.scheduling.next_fire): the smallest (L AT TIME ZONE tz) greater than "after" '
'over wall-clock fire times L, searched from the wall clock of "after" (truncated to the '
'minute) minus 3 hours until L passes the best candidate''s wall clock plus 3 hours. '
'Nonexistent wall-clock times use the offset before the change; repeated ones fire at '
'their second (standard-time) occurrence. NULL when nothing fires within about ten years. '
'IMMUTABLE like AT TIME ZONE itself (it depends on the timezone database).';

CREATE OR REPLACE FUNCTION vowvault_cron_fires(
    cron text, tz text, start_at timestamptz, end_at timestamptz)
RETURNS SETOF timestamptz
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    WITH p AS (
        SELECT * FROM vowvault_cron_parse(cron)
    ), w AS (
        SELECT date_trunc('minute', start_at AT TIME ZONE tz) - interval '3 hours' AS lo,
               (end_at AT TIME ZONE tz) + interval '3 hours' AS hi
        WHERE isfinite(start_at) AND isfinite(end_at)
    ), days AS (
        SELECT g::date AS d
        FROM w, p, generate_series(w.lo::date::timestamp, w.hi, interval '1 day') AS g
        WHERE vowvault_cron_day_matches(g::date, p.doms, p.months, p.dows)
    ), local_fires AS (
        SELECT days.d + make_time(h, mi, 0) AS l
        FROM p, days,
             unnest(coalesce(p.hours, ARRAY(SELECT generate_series(0, 23)))) AS h,
             unnest(coalesce(p.minutes, ARRAY(SELECT generate_series(0, 59)))) AS mi
    ), instants AS (
        SELECT f.l AT TIME ZONE tz AS instant
        FROM local_fires AS f, w
        WHERE f.l > w.lo AND f.l <= w.hi
    )
    SELECT DISTINCT i.instant
    FROM instants AS i
    WHERE i.instant > start_at AND i.instant <= end_at
    ORDER BY i.instant
$$;

COMMENT ON FUNCTION vowvault_cron_fires(text, text, timestamptz, timestamptz) IS
'The distinct instants in (start_at, end_at] at which cron fires in timezone tz, in order '
'(Python vowvault.scheduling.fires_between): wall-clock fire times L after the wall clock '
'of start_at (truncated to the minute) minus 3 hours and up to the wall clock of end_at '
'plus 3 hours, mapped with (L AT TIME ZONE tz). Two wall-clock times that denote the same '
'instant (around a forward change) count once.';

-- ---------------------------------------------------------------------------------------
-- Policies
-- ---------------------------------------------------------------------------------------

CREATE OR REPLACE FUNCTION calculate_next_backup_time(
    policy_id uuid, from_time timestamptz DEFAULT now())
RETURNS timestamptz
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$
    SELECT min(vowvault_cron_next(s.cron, p.timezone, calculate_next_backup_time.from_time))
    FROM backup_policies AS p
    CROSS JOIN LATERAL jsonb_array_elements_text(p.effective_schedules) AS s(cron)
    WHERE p.id = calculate_next_backup_time.policy_id
      AND p.is_active
$$;

COMMENT ON FUNCTION calculate_next_backup_time(uuid, timestamptz) IS
'The next run of a policy strictly after from_time: the earliest vowvault_cron_next over '
'its effective_schedules (peak season included) in its timezone (Python '
'vowvault.scheduling.next_run). NULL when the policy does not exist, is inactive '
'(is_active false: it will not run), or none of its schedules fires within ten years.';

CREATE OR REPLACE FUNCTION backup_priority_at(
    policy_id uuid, at_time timestamptz DEFAULT now())
RETURNS backup_priority
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$
    SELECT CASE
             WHEN NOT p.wedding_day_priority THEN p.priority
             WHEN NOT (extract(isodow FROM x.local_day) = 6
                       OR EXISTS (SELECT 1
                                  FROM wedding_calendar AS w
                                  WHERE w.organization_id = p.organization_id
                                    AND w.wedding_date = x.local_day))
               THEN p.priority
             WHEN p.priority = 'LOW' THEN 'NORMAL'::backup_priority
             WHEN p.priority = 'NORMAL' THEN 'HIGH'::backup_priority
             WHEN p.priority = 'HIGH' THEN 'CRITICAL'::backup_priority
             ELSE p.priority  -- CRITICAL stays, EMERGENCY is only declared by people
           END
    FROM backup_policies AS p
    CROSS JOIN LATERAL (
        SELECT (backup_priority_at.at_time AT TIME ZONE p.timezone)::date AS local_day
    ) AS x
    WHERE p.id = backup_priority_at.policy_id
$$;

COMMENT ON FUNCTION backup_priority_at(uuid, timestamptz) IS
'The priority of a run of the policy at at_time (Python '
'vowvault.scheduling.effective_priority): when wedding_day_priority is set and the local '
'date of at_time in the policy''s timezone is a wedding day (a Saturday, or a '
'wedding_calendar date of the policy''s organization), the base priority is raised one '
'level, up to CRITICAL; CRITICAL and EMERGENCY are kept. NULL when the policy does not '
'exist; is_active is not consulted.';

CREATE OR REPLACE FUNCTION vowvault_expected_runs(
    policy_id uuid, start_at timestamptz, end_at timestamptz)
RETURNS integer
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$
    SELECT (SELECT count(DISTINCT f.instant)::integer
            FROM jsonb_array_elements_text(p.effective_schedules) AS s(cron)
            CROSS JOIN LATERAL vowvault_cron_fires(
                s.cron, p.timezone,
                vowvault_expected_runs.start_at, vowvault_expected_runs.end_at) AS f(instant))
    FROM backup_policies AS p
    WHERE p.id = vowvault_expected_runs.policy_id
$$;

COMMENT ON FUNCTION vowvault_expected_runs(uuid, timestamptz, timestamptz) IS
'How many runs the policy''s effective_schedules promise in (start_at, end_at]: distinct '
'instants over all its schedules in its timezone (Python '
'vowvault.scheduling.expected_runs). NULL when the policy does not exist; is_active is not '
'consulted (callers such as check_backup_compliance pick the active policies).';

CREATE OR REPLACE FUNCTION check_backup_compliance(
    days_back integer DEFAULT 7, as_of timestamptz DEFAULT now())
RETURNS TABLE(policy_name varchar, compliance_percentage numeric)
LANGUAGE sql STABLE STRICT PARALLEL SAFE
AS $$
    SELECT p.name::varchar,
           CASE WHEN e.expected = 0 THEN 100.00
                ELSE round(least(a.actual, e.expected) * 100.0 / e.expected, 2)
           END
    FROM backup_policies AS p
    CROSS JOIN LATERAL (
        SELECT check_backup_compliance.as_of
               - make_interval(days => check_backup_compliance.days_back) AS window_start
    ) AS w
    CROSS JOIN LATERAL (
        SELECT vowvault_expected_runs(p.id, w.window_start, check_backup_compliance.as_of)
               AS expected
    ) AS e
    CROSS JOIN LATERAL (
        SELECT count(*) AS actual
        FROM backup_jobs AS j
        WHERE j.policy_id = p.id
          AND j.status = 'COMPLETED'
          AND j.completed_at > w.window_start
          AND j.completed_at <= check_backup_compliance.as_of
    ) AS a
    WHERE p.is_active
    ORDER BY p.name
$$;

COMMENT ON FUNCTION check_backup_compliance(integer, timestamptz) IS
'For every active policy, the share of the runs its schedules promised in the window '
'(as_of - days_back days, as_of] that have a COMPLETED backup job completed in that '
'window: round(least(actual, expected) * 100 / expected, 2), and 100.00 when nothing was '
'expected. expected is vowvault_expected_runs; extra completed jobs do not count above '
'100. as_of defaults to now(); give it to evaluate a fixed window.';;

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
    'and key age. Idempotent: re-running a day replaces its rows.';;

INSERT INTO alembic_version (version_num) VALUES ('0001') RETURNING alembic_version.version_num;

-- Running upgrade 0001 -> 0002

ALTER TABLE webhook_deliveries ADD COLUMN attempt_log JSONB;

ALTER TABLE webhook_deliveries ADD COLUMN escalation BOOLEAN DEFAULT false NOT NULL;

ALTER TABLE webhook_endpoints ADD CONSTRAINT uq_webhook_endpoints_organization_id_url UNIQUE (organization_id, url);

UPDATE alembic_version SET version_num='0002' WHERE alembic_version.version_num = '0001';

-- Running upgrade 0002 -> 0003

ALTER TABLE backup_policies ADD COLUMN full_every_days INTEGER DEFAULT '7' NOT NULL;

ALTER TABLE backup_policies ADD CONSTRAINT ck_backup_policies_full_every_days_range CHECK (full_every_days BETWEEN 1 AND 366);

UPDATE alembic_version SET version_num='0003' WHERE alembic_version.version_num = '0002';

-- Running upgrade 0003 -> 0004

CREATE TABLE storage_targets (
    id UUID DEFAULT gen_random_uuid() NOT NULL, 
    url TEXT NOT NULL, 
    marker_id UUID NOT NULL, 
    format_version INTEGER DEFAULT '1' NOT NULL, 
    checked_at TIMESTAMP WITH TIME ZONE, 
    available BOOLEAN DEFAULT true NOT NULL, 
    problem TEXT, 
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL, 
    CONSTRAINT pk_storage_targets PRIMARY KEY (id), 
    CONSTRAINT uq_storage_targets_url UNIQUE (url)
);

ALTER TABLE backup_storage ADD COLUMN health VARCHAR(32) DEFAULT 'UNCHECKED' NOT NULL;

ALTER TABLE backup_storage ADD COLUMN checked_at TIMESTAMP WITH TIME ZONE;

ALTER TABLE backup_storage ADD COLUMN problem TEXT;

ALTER TABLE backup_storage ADD CONSTRAINT ck_backup_storage_copy_health CHECK (health IN ('UNCHECKED', 'INTACT', 'DAMAGED', 'MISSING', 'UNREACHABLE'));

CREATE INDEX idx_backup_storage_checked ON backup_storage (storage_url, checked_at);

UPDATE backup_storage SET health = 'INTACT', checked_at = verified_at WHERE status = 'VERIFIED';

UPDATE backup_storage SET status = 'STORED', health = 'DAMAGED', checked_at = verified_at, problem = 'read back wrong (before migration 0004)' WHERE status = 'FAILED' AND verified_at IS NOT NULL;

ALTER TABLE backup_policies ADD COLUMN verify_max_age_days INTEGER DEFAULT '45' NOT NULL;

ALTER TABLE backup_policies ADD COLUMN scrub_cycle_days INTEGER DEFAULT '30' NOT NULL;

ALTER TABLE backup_policies ADD COLUMN scrub_archived BOOLEAN DEFAULT false NOT NULL;

ALTER TABLE backup_policies ADD CONSTRAINT ck_backup_policies_verification_ranges CHECK (verify_max_age_days BETWEEN 1 AND 3660 AND scrub_cycle_days BETWEEN 1 AND verify_max_age_days);

-- storage_targets is the service's own table: no organization owns a target, so tenants
-- get no grant and no policy (RLS, forced, denies them everything).
GRANT SELECT, INSERT, UPDATE, DELETE ON storage_targets TO vowvault_service;
ALTER TABLE storage_targets ENABLE ROW LEVEL SECURITY;
ALTER TABLE storage_targets FORCE ROW LEVEL SECURITY;
CREATE POLICY storage_targets_service_access ON storage_targets
    FOR ALL TO vowvault_service USING (true) WITH CHECK (true);;

UPDATE alembic_version SET version_num='0004' WHERE alembic_version.version_num = '0003';

-- Running upgrade 0004 -> 0005

ALTER TABLE backup_jobs ADD COLUMN owner_token VARCHAR(64);

ALTER TABLE backup_jobs ADD COLUMN lease_expires_at TIMESTAMP WITH TIME ZONE;

ALTER TABLE recovery_jobs ADD COLUMN worker_host VARCHAR(255);

ALTER TABLE recovery_jobs ADD COLUMN worker_pid INTEGER;

ALTER TABLE recovery_jobs ADD COLUMN owner_token VARCHAR(64);

ALTER TABLE recovery_jobs ADD COLUMN heartbeat_at TIMESTAMP WITH TIME ZONE;

ALTER TABLE recovery_jobs ADD COLUMN lease_expires_at TIMESTAMP WITH TIME ZONE;

UPDATE alembic_version SET version_num='0005' WHERE alembic_version.version_num = '0004';

COMMIT;

