-- Roles are cluster-wide and may serve other catalogs: they are left in place.
DROP FUNCTION IF EXISTS generate_backup_analytics(date);
DROP FUNCTION IF EXISTS retention_candidates(timestamptz);
DROP FUNCTION IF EXISTS lifecycle_candidates(timestamptz);
DROP VIEW IF EXISTS backup_capacity_planning;
DROP VIEW IF EXISTS wedding_day_backup_status;
DROP VIEW IF EXISTS backup_health_summary;
DROP TRIGGER IF EXISTS trg_audit_log_no_truncate ON audit_log;
DROP TRIGGER IF EXISTS trg_audit_log_no_update ON audit_log;
DROP FUNCTION IF EXISTS audit_log_append_only() CASCADE;
DROP FUNCTION IF EXISTS set_updated_at() CASCADE;
DROP SCHEMA IF EXISTS auth CASCADE;
