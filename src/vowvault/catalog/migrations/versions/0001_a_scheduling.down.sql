-- Drops what 0001_a_scheduling.up.sql creates, in reverse order.
DROP FUNCTION IF EXISTS check_backup_compliance(integer, timestamptz);
DROP FUNCTION IF EXISTS vowvault_expected_runs(uuid, timestamptz, timestamptz);
DROP FUNCTION IF EXISTS backup_priority_at(uuid, timestamptz);
DROP FUNCTION IF EXISTS calculate_next_backup_time(uuid, timestamptz);
DROP FUNCTION IF EXISTS vowvault_cron_fires(text, text, timestamptz, timestamptz);
DROP FUNCTION IF EXISTS vowvault_cron_next(text, text, timestamptz);
DROP FUNCTION IF EXISTS vowvault_cron_day_matches(date, integer[], integer[], integer[]);
DROP FUNCTION IF EXISTS vowvault_cron_parse(text);
DROP FUNCTION IF EXISTS vowvault_cron_field(text, integer, integer);
