"""initial catalog: tables, enums and indexes on every backend; on PostgreSQL also
roles, row-level security, views, functions and triggers (the .sql files beside this one).

Revision ID: 0001
Revises: 
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from vowvault.catalog.migrations.sqlfiles import run_sql_files
from vowvault.catalog.types import TZDateTime, gen_random_uuid

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('organizations',
    sa.Column('id', sa.Uuid(), server_default=gen_random_uuid(), nullable=False),
    sa.Column('slug', sa.String(length=63), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('vendor_type', sa.Enum('PHOTOGRAPHER', 'VIDEOGRAPHER', 'VENUE', 'FLORIST', 'PLANNER', 'CATERER', 'PLATFORM', 'OTHER', name='vendor_type', create_constraint=True), server_default='OTHER', nullable=False),
    sa.Column('is_active', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('shredded_at', TZDateTime(), nullable=True),
    sa.Column('created_at', TZDateTime(), server_default=sa.func.now(), nullable=False),
    sa.Column('updated_at', TZDateTime(), server_default=sa.func.now(), nullable=False),
    sa.CheckConstraint("slug <> ''", name=op.f('ck_organizations_slug_not_empty')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_organizations')),
    sa.UniqueConstraint('slug', name=op.f('uq_organizations_slug'))
    )
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('organization_id', sa.Uuid(), nullable=True),
    sa.Column('occurred_at', TZDateTime(), server_default=sa.func.now(), nullable=False),
    sa.Column('actor', sa.String(length=255), nullable=False),
    sa.Column('actor_role', sa.String(length=64), nullable=True),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target_type', sa.String(length=64), nullable=False),
    sa.Column('target_id', sa.String(length=255), nullable=True),
    sa.Column('summary', sa.Text(), nullable=True),
    sa.Column('before', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('after', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('row_hash', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_audit_log_organization_id_organizations'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log')),
    sa.UniqueConstraint('prev_hash', name=op.f('uq_audit_log_prev_hash')),
    sa.UniqueConstraint('row_hash', name=op.f('uq_audit_log_row_hash'))
    )
    op.create_index('idx_audit_log_org_time', 'audit_log', ['organization_id', sa.literal_column('occurred_at DESC')], unique=False)
    op.create_index('idx_audit_log_target', 'audit_log', ['target_type', 'target_id'], unique=False)
    op.create_table('backup_policies',
    sa.Column('id', sa.Uuid(), server_default=gen_random_uuid(), nullable=False),
    sa.Column('organization_id', sa.Uuid(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('backup_type', sa.Enum('FULL', 'INCREMENTAL', 'DIFFERENTIAL', 'TRANSACTION_LOG', 'CONFIGURATION', 'USER_DATA', name='backup_type', create_constraint=True), nullable=False),
    sa.Column('source_kind', sa.Enum('POSTGRES_LOGICAL', 'POSTGRES_PHYSICAL', 'DIRECTORY', name='source_kind', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('source_config', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('priority', sa.Enum('LOW', 'NORMAL', 'HIGH', 'CRITICAL', 'EMERGENCY', name='backup_priority', create_constraint=True), server_default='NORMAL', nullable=False),
    sa.Column('schedule_cron', sa.String(length=100), nullable=False),
    sa.Column('timezone', sa.String(length=64), server_default='UTC', nullable=False),
    sa.Column('peak_season_multiplier', sa.Integer(), server_default='5', nullable=False),
    sa.Column('effective_schedules', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('retention_days', sa.Integer(), server_default='30', nullable=False),
    sa.Column('keep_last', sa.Integer(), server_default='0', nullable=False),
    sa.Column('keep_daily', sa.Integer(), server_default='0', nullable=False),
    sa.Column('keep_weekly', sa.Integer(), server_default='0', nullable=False),
    sa.Column('keep_monthly', sa.Integer(), server_default='0', nullable=False),
    sa.Column('keep_yearly', sa.Integer(), server_default='0', nullable=False),
    sa.Column('min_verified_backups', sa.Integer(), server_default='1', nullable=False),
    sa.Column('legal_hold_years', sa.Integer(), server_default='0', nullable=False),
    sa.Column('wedding_day_priority', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('vendor_type', sa.Enum('PHOTOGRAPHER', 'VIDEOGRAPHER', 'VENUE', 'FLORIST', 'PLANNER', 'CATERER', 'PLATFORM', 'OTHER', name='vendor_type', create_constraint=True), nullable=True),
    sa.Column('storage_tier', sa.Enum('HOT', 'WARM', 'COLD', 'ARCHIVE', 'DEEP_ARCHIVE', name='storage_tier', create_constraint=True), server_default='HOT', nullable=False),
    sa.Column('storage_targets', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('encryption_enabled', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('key_provider', sa.String(length=64), server_default='local', nullable=False),
    sa.Column('lifecycle_rules', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('max_retries', sa.Integer(), server_default='2', nullable=False),
    sa.Column('rto_target_minutes', sa.Integer(), server_default='15', nullable=False),
    sa.Column('is_active', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('spec_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', TZDateTime(), server_default=sa.func.now(), nullable=False),
    sa.Column('updated_at', TZDateTime(), server_default=sa.func.now(), nullable=False),
    sa.CheckConstraint('keep_last >= 0 AND keep_daily >= 0 AND keep_weekly >= 0 AND keep_monthly >= 0 AND keep_yearly >= 0 AND min_verified_backups >= 0 AND legal_hold_years >= 0', name=op.f('ck_backup_policies_retention_counts_not_negative')),
    sa.CheckConstraint('max_retries BETWEEN 0 AND 10', name=op.f('ck_backup_policies_max_retries_range')),
    sa.CheckConstraint('peak_season_multiplier BETWEEN 1 AND 60', name=op.f('ck_backup_policies_peak_multiplier_range')),
    sa.CheckConstraint('retention_days >= 1', name=op.f('ck_backup_policies_retention_days_positive')),
    sa.CheckConstraint('rto_target_minutes > 0', name=op.f('ck_backup_policies_rto_positive')),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_backup_policies_organization_id_organizations'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_backup_policies')),
    sa.UniqueConstraint('name', name=op.f('uq_backup_policies_name'))
    )
    op.create_index('idx_backup_policies_active', 'backup_policies', ['priority'], unique=False, postgresql_where=sa.text('is_active'), sqlite_where=sa.text('is_active'))
    op.create_index('idx_backup_policies_org', 'backup_policies', ['organization_id'], unique=False)
    op.create_table('encryption_keys',
    sa.Column('id', sa.Uuid(), server_default=gen_random_uuid(), nullable=False),
    sa.Column('organization_id', sa.Uuid(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('key_ref', sa.String(length=255), nullable=False),
    sa.Column('algorithm', sa.String(length=32), server_default='AES-256-GCM', nullable=False),
    sa.Column('status', sa.Enum('ACTIVE', 'RETIRED', 'DESTROYED', name='key_status', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('rotation_due_at', TZDateTime(), nullable=True),
    sa.Column('retired_at', TZDateTime(), nullable=True),
    sa.Column('destroyed_at', TZDateTime(), nullable=True),
    sa.Column('created_at', TZDateTime(), server_default=sa.func.now(), nullable=False),
    sa.Column('updated_at', TZDateTime(), server_default=sa.func.now(), nullable=False),
    sa.CheckConstraint('version >= 1', name=op.f('ck_encryption_keys_version_positive')),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_encryption_keys_organization_id_organizations'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_encryption_keys')),
    sa.UniqueConstraint('organization_id', 'version', name=op.f('uq_encryption_keys_organization_id_version'))
    )
    op.create_index('idx_encryption_keys_one_active', 'encryption_keys', ['organization_id'], unique=True, postgresql_where=sa.text("status = 'ACTIVE'"), sqlite_where=sa.text("status = 'ACTIVE'"))
    op.create_index('idx_encryption_keys_rotation_due', 'encryption_keys', ['rotation_due_at'], unique=False, postgresql_where=sa.text("status = 'ACTIVE'"), sqlite_where=sa.text("status = 'ACTIVE'"))
    op.create_table('erasure_requests',
    sa.Column('id', sa.Uuid(), server_default=gen_random_uuid(), nullable=False),
    sa.Column('organization_id', sa.Uuid(), nullable=False),
    sa.Column('subject_type', sa.Enum('COUPLE', 'WEDDING', 'VENDOR', 'PERSON', name='erasure_subject', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('subject_ref', sa.String(length=255), nullable=False),
    sa.Column('scope', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('status', sa.Enum('PENDING', 'IN_PROGRESS', 'COMPLETED', name='erasure_status', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('requested_by', sa.String(length=255), nullable=False),
    sa.Column('requested_at', TZDateTime(), server_default=sa.func.now(), nullable=False),
    sa.Column('completed_at', TZDateTime(), nullable=True),
    sa.Column('created_at', TZDateTime(), server_default=sa.func.now(), nullable=False),
    sa.Column('updated_at', TZDateTime(), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_erasure_requests_organization_id_organizations'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_erasure_requests'))
    )
    op.create_index('idx_erasure_requests_org_status', 'erasure_requests', ['organization_id', 'status'], unique=False)
    op.create_index('idx_erasure_requests_subject', 'erasure_requests', ['subject_ref'], unique=False)
    op.create_table('webhook_endpoints',
    sa.Column('id', sa.Uuid(), server_default=gen_random_uuid(), nullable=False),
    sa.Column('organization_id', sa.Uuid(), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('secret_ref', sa.String(length=255), nullable=False),
    sa.Column('events', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('is_active', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('created_at', TZDateTime(), server_default=sa.func.now(), nullable=False),
    sa.Column('updated_at', TZDateTime(), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_webhook_endpoints_organization_id_organizations'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_endpoints'))
    )
    op.create_index('idx_webhook_endpoints_org', 'webhook_endpoints', ['organization_id'], unique=False)
    op.create_table('wedding_calendar',
    sa.Column('id', sa.Uuid(), server_default=gen_random_uuid(), nullable=False),
    sa.Column('organization_id', sa.Uuid(), nullable=False),
    sa.Column('wedding_id', sa.Uuid(), nullable=False),
    sa.Column('wedding_date', sa.Date(), nullable=False),
    sa.Column('created_at', TZDateTime(), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_wedding_calendar_organization_id_organizations'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_wedding_calendar')),
    sa.UniqueConstraint('organization_id', 'wedding_id', name=op.f('uq_wedding_calendar_organization_id_wedding_id'))
    )
    op.create_index('idx_wedding_calendar_date', 'wedding_calendar', ['wedding_date', 'organization_id'], unique=False)
    op.create_table('backup_analytics',
    sa.Column('id', sa.Uuid(), server_default=gen_random_uuid(), nullable=False),
    sa.Column('organization_id', sa.Uuid(), nullable=False),
    sa.Column('policy_id', sa.Uuid(), nullable=False),
    sa.Column('analytics_date', sa.Date(), nullable=False),
    sa.Column('total_jobs', sa.Integer(), nullable=False),
    sa.Column('successful_jobs', sa.Integer(), nullable=False),
    sa.Column('failed_jobs', sa.Integer(), nullable=False),
    sa.Column('corrupted_jobs', sa.Integer(), nullable=False),
    sa.Column('success_rate_percent', sa.Numeric(precision=5, scale=2), nullable=True),
    sa.Column('expected_runs', sa.Integer(), nullable=True),
    sa.Column('compliance_percentage', sa.Numeric(precision=5, scale=2), nullable=True),
    sa.Column('source_bytes', sa.BigInteger(), nullable=False),
    sa.Column('stored_bytes', sa.BigInteger(), nullable=False),
    sa.Column('bytes_by_tier', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('bytes_by_provider', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('avg_compression_ratio', sa.Numeric(precision=5, scale=4), nullable=True),
    sa.Column('duration_p50_seconds', sa.Numeric(precision=12, scale=3), nullable=True),
    sa.Column('duration_p95_seconds', sa.Numeric(precision=12, scale=3), nullable=True),
    sa.Column('throughput_p50_mib_s', sa.Numeric(precision=12, scale=3), nullable=True),
    sa.Column('throughput_p95_mib_s', sa.Numeric(precision=12, scale=3), nullable=True),
    sa.Column('drills_run', sa.Integer(), nullable=False),
    sa.Column('drills_passed', sa.Integer(), nullable=False),
    sa.Column('rto_avg_seconds', sa.Numeric(precision=12, scale=3), nullable=True),
    sa.Column('key_age_days', sa.Integer(), nullable=True),
    sa.Column('forecast', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('created_at', TZDateTime(), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_backup_analytics_organization_id_organizations'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['policy_id'], ['backup_policies.id'], name=op.f('fk_backup_analytics_policy_id_backup_policies'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_backup_analytics')),
    sa.UniqueConstraint('policy_id', 'analytics_date', name=op.f('uq_backup_analytics_policy_id_analytics_date'))
    )
    op.create_index('idx_backup_analytics_org_date', 'backup_analytics', ['organization_id', sa.literal_column('analytics_date DESC')], unique=False)
    op.create_table('backup_jobs',
    sa.Column('id', sa.Uuid(), server_default=gen_random_uuid(), nullable=False),
    sa.Column('organization_id', sa.Uuid(), nullable=False),
    sa.Column('policy_id', sa.Uuid(), nullable=True),
    sa.Column('job_name', sa.String(length=255), nullable=False),
    sa.Column('backup_type', sa.Enum('FULL', 'INCREMENTAL', 'DIFFERENTIAL', 'TRANSACTION_LOG', 'CONFIGURATION', 'USER_DATA', name='backup_type', create_constraint=True), nullable=False),
    sa.Column('status', sa.Enum('SCHEDULED', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELLED', 'CORRUPTED', 'EXPIRED', name='backup_status', create_constraint=True), server_default='SCHEDULED', nullable=False),
    sa.Column('priority', sa.Enum('LOW', 'NORMAL', 'HIGH', 'CRITICAL', 'EMERGENCY', name='backup_priority', create_constraint=True), server_default='NORMAL', nullable=False),
    sa.Column('scheduled_at', TZDateTime(), nullable=False),
    sa.Column('started_at', TZDateTime(), nullable=True),
    sa.Column('completed_at', TZDateTime(), nullable=True),
    sa.Column('heartbeat_at', TZDateTime(), nullable=True),
    sa.Column('parent_job_id', sa.Uuid(), nullable=True),
    sa.Column('source_bytes', sa.BigInteger(), nullable=True),
    sa.Column('stored_bytes', sa.BigInteger(), nullable=True),
    sa.Column('actual_size_gb', sa.Numeric(precision=10, scale=2), nullable=True),
    sa.Column('compression_ratio', sa.Numeric(precision=5, scale=4), nullable=True),
    sa.Column('file_count', sa.Integer(), nullable=True),
    sa.Column('related_wedding_ids', sa.JSON().with_variant(postgresql.ARRAY(sa.UUID(as_uuid=False)), 'postgresql'), nullable=True),
    sa.Column('is_wedding_day_backup', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('retry_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('verification_status', sa.Enum('PENDING', 'VERIFIED', 'FAILED', name='verification_status', native_enum=False, create_constraint=True, length=32), nullable=True),
    sa.Column('verified_at', TZDateTime(), nullable=True),
    sa.Column('stage_durations', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('source_info', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('format_version', sa.SmallInteger(), nullable=True),
    sa.Column('manifest_sha256', sa.String(length=64), nullable=True),
    sa.Column('encryption_key_id', sa.Uuid(), nullable=True),
    sa.Column('wrapped_dek', sa.LargeBinary(), nullable=True),
    sa.Column('flow_run_id', sa.String(length=64), nullable=True),
    sa.Column('worker_host', sa.String(length=255), nullable=True),
    sa.Column('worker_pid', sa.Integer(), nullable=True),
    sa.Column('legal_hold', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('expires_at', TZDateTime(), nullable=True),
    sa.Column('deletion_date', TZDateTime(), nullable=True),
    sa.Column('created_at', TZDateTime(), server_default=sa.func.now(), nullable=False),
    sa.Column('updated_at', TZDateTime(), server_default=sa.func.now(), nullable=False),
    sa.CheckConstraint("status <> 'COMPLETED' OR completed_at IS NOT NULL", name=op.f('ck_backup_jobs_completed_has_time')),
    sa.CheckConstraint('compression_ratio IS NULL OR compression_ratio >= 0', name=op.f('ck_backup_jobs_compression_ratio_not_negative')),
    sa.CheckConstraint('retry_count >= 0', name=op.f('ck_backup_jobs_retry_count_not_negative')),
    sa.ForeignKeyConstraint(['encryption_key_id'], ['encryption_keys.id'], name=op.f('fk_backup_jobs_encryption_key_id_encryption_keys'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_backup_jobs_organization_id_organizations'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['parent_job_id'], ['backup_jobs.id'], name=op.f('fk_backup_jobs_parent_job_id_backup_jobs'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['policy_id'], ['backup_policies.id'], name=op.f('fk_backup_jobs_policy_id_backup_policies'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_backup_jobs'))
    )
    op.create_index('idx_backup_jobs_expires', 'backup_jobs', ['expires_at'], unique=False, postgresql_where=sa.text('deletion_date IS NULL'), sqlite_where=sa.text('deletion_date IS NULL'))
    op.create_index('idx_backup_jobs_in_progress', 'backup_jobs', ['heartbeat_at'], unique=False, postgresql_where=sa.text("status = 'IN_PROGRESS'"), sqlite_where=sa.text("status = 'IN_PROGRESS'"))
    op.create_index('idx_backup_jobs_key', 'backup_jobs', ['encryption_key_id'], unique=False)
    op.create_index('idx_backup_jobs_org_created', 'backup_jobs', ['organization_id', sa.literal_column('created_at DESC')], unique=False)
    op.create_index('idx_backup_jobs_parent', 'backup_jobs', ['parent_job_id'], unique=False)
    op.create_index('idx_backup_jobs_policy_completed', 'backup_jobs', ['policy_id', sa.literal_column('completed_at DESC')], unique=False, postgresql_where=sa.text("status = 'COMPLETED'"), sqlite_where=sa.text("status = 'COMPLETED'"))
    op.create_index('idx_backup_jobs_policy_id', 'backup_jobs', ['policy_id'], unique=False)
    op.create_index('idx_backup_jobs_scheduled_at', 'backup_jobs', ['scheduled_at'], unique=False)
    op.create_index('idx_backup_jobs_status_date', 'backup_jobs', ['status', sa.literal_column('created_at DESC')], unique=False)
    op.create_index('idx_backup_jobs_wedding_day', 'backup_jobs', ['is_wedding_day_backup'], unique=False, postgresql_where=sa.text('is_wedding_day_backup = true'), sqlite_where=sa.text('is_wedding_day_backup = 1'))
    op.create_table('webhook_deliveries',
    sa.Column('id', sa.Uuid(), server_default=gen_random_uuid(), nullable=False),
    sa.Column('organization_id', sa.Uuid(), nullable=False),
    sa.Column('endpoint_id', sa.Uuid(), nullable=False),
    sa.Column('event_type', sa.String(length=64), nullable=False),
    sa.Column('message_id', sa.String(length=64), nullable=False),
    sa.Column('payload', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('status', sa.Enum('PENDING', 'DELIVERED', 'FAILED', 'GAVE_UP', name='delivery_status', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('response_status', sa.Integer(), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('next_attempt_at', TZDateTime(), nullable=True),
    sa.Column('delivered_at', TZDateTime(), nullable=True),
    sa.Column('created_at', TZDateTime(), server_default=sa.func.now(), nullable=False),
    sa.Column('updated_at', TZDateTime(), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['endpoint_id'], ['webhook_endpoints.id'], name=op.f('fk_webhook_deliveries_endpoint_id_webhook_endpoints'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_webhook_deliveries_organization_id_organizations'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries')),
    sa.UniqueConstraint('message_id', name=op.f('uq_webhook_deliveries_message_id'))
    )
    op.create_index('idx_webhook_deliveries_endpoint', 'webhook_deliveries', ['endpoint_id', sa.literal_column('created_at DESC')], unique=False)
    op.create_index('idx_webhook_deliveries_pending', 'webhook_deliveries', ['next_attempt_at'], unique=False, postgresql_where=sa.text("status = 'PENDING'"), sqlite_where=sa.text("status = 'PENDING'"))
    op.create_table('backup_storage',
    sa.Column('id', sa.Uuid(), server_default=gen_random_uuid(), nullable=False),
    sa.Column('organization_id', sa.Uuid(), nullable=False),
    sa.Column('backup_job_id', sa.Uuid(), nullable=False),
    sa.Column('storage_provider', sa.String(length=100), nullable=False),
    sa.Column('storage_url', sa.Text(), nullable=False),
    sa.Column('copy_role', sa.Enum('PRIMARY', 'COPY', name='copy_role', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('object_kind', sa.Enum('DATA', 'INDEX', 'MANIFEST', 'KEY', name='object_kind', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('storage_tier', sa.Enum('HOT', 'WARM', 'COLD', 'ARCHIVE', 'DEEP_ARCHIVE', name='storage_tier', create_constraint=True), server_default='HOT', nullable=False),
    sa.Column('file_path', sa.Text(), nullable=False),
    sa.Column('file_size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('checksum_sha256', sa.String(length=64), nullable=True),
    sa.Column('is_encrypted', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('encryption_key_id', sa.String(length=255), nullable=True),
    sa.Column('status', sa.Enum('PENDING', 'STORED', 'VERIFIED', 'FAILED', 'DELETING', 'DELETED', name='copy_status', native_enum=False, create_constraint=True, length=32), nullable=False),
    sa.Column('is_archived', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('restore_state', sa.String(length=32), nullable=True),
    sa.Column('legal_hold', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('tier_changed_at', TZDateTime(), nullable=True),
    sa.Column('verified_at', TZDateTime(), nullable=True),
    sa.Column('deletion_date', TZDateTime(), nullable=True),
    sa.Column('created_at', TZDateTime(), server_default=sa.func.now(), nullable=False),
    sa.Column('updated_at', TZDateTime(), server_default=sa.func.now(), nullable=False),
    sa.CheckConstraint('file_size_bytes >= 0', name=op.f('ck_backup_storage_size_not_negative')),
    sa.ForeignKeyConstraint(['backup_job_id'], ['backup_jobs.id'], name=op.f('fk_backup_storage_backup_job_id_backup_jobs'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_backup_storage_organization_id_organizations'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_backup_storage')),
    sa.UniqueConstraint('storage_url', 'file_path', name=op.f('uq_backup_storage_storage_url_file_path'))
    )
    op.create_index('idx_backup_storage_job', 'backup_storage', ['backup_job_id'], unique=False)
    op.create_index('idx_backup_storage_lifecycle', 'backup_storage', ['storage_tier', 'created_at'], unique=False, postgresql_where=sa.text('deletion_date IS NULL'), sqlite_where=sa.text('deletion_date IS NULL'))
    op.create_index('idx_backup_storage_org', 'backup_storage', ['organization_id'], unique=False)
    op.create_index('idx_backup_storage_tier', 'backup_storage', ['storage_tier'], unique=False)
    op.create_table('recovery_jobs',
    sa.Column('id', sa.Uuid(), server_default=gen_random_uuid(), nullable=False),
    sa.Column('organization_id', sa.Uuid(), nullable=False),
    sa.Column('backup_job_id', sa.Uuid(), nullable=False),
    sa.Column('recovery_type', sa.Enum('FULL_RESTORE', 'POINT_IN_TIME', 'PARTIAL', 'DR_DRILL', 'EMERGENCY', name='recovery_type', create_constraint=True), nullable=False),
    sa.Column('status', sa.Enum('PENDING', 'IN_PROGRESS', 'VALIDATING', 'COMPLETED', 'FAILED', 'CANCELLED', name='recovery_status', create_constraint=True), server_default='PENDING', nullable=False),
    sa.Column('is_emergency_recovery', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('requested_by', sa.String(length=255), nullable=True),
    sa.Column('requester_role', sa.String(length=64), nullable=True),
    sa.Column('target_kind', sa.String(length=32), nullable=True),
    sa.Column('target_description', sa.Text(), nullable=True),
    sa.Column('started_at', TZDateTime(), nullable=True),
    sa.Column('completed_at', TZDateTime(), nullable=True),
    sa.Column('duration_seconds', sa.Numeric(precision=12, scale=3), nullable=True),
    sa.Column('rto_seconds', sa.Numeric(precision=12, scale=3), nullable=True),
    sa.Column('rto_target_seconds', sa.Integer(), nullable=True),
    sa.Column('rpo_seconds', sa.Numeric(precision=14, scale=3), nullable=True),
    sa.Column('bytes_restored', sa.BigInteger(), nullable=True),
    sa.Column('storage_used', sa.Text(), nullable=True),
    sa.Column('validation', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('erasures_applied', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('flow_run_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', TZDateTime(), server_default=sa.func.now(), nullable=False),
    sa.Column('updated_at', TZDateTime(), server_default=sa.func.now(), nullable=False),
    sa.CheckConstraint("NOT is_emergency_recovery OR recovery_type = 'EMERGENCY'", name=op.f('ck_recovery_jobs_emergency_type_matches')),
    sa.ForeignKeyConstraint(['backup_job_id'], ['backup_jobs.id'], name=op.f('fk_recovery_jobs_backup_job_id_backup_jobs'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_recovery_jobs_organization_id_organizations'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_recovery_jobs'))
    )
    op.create_index('idx_recovery_jobs_backup', 'recovery_jobs', ['backup_job_id'], unique=False)
    op.create_index('idx_recovery_jobs_emergency', 'recovery_jobs', ['organization_id'], unique=False, postgresql_where=sa.text('is_emergency_recovery'), sqlite_where=sa.text('is_emergency_recovery'))
    op.create_index('idx_recovery_jobs_org_created', 'recovery_jobs', ['organization_id', sa.literal_column('created_at DESC')], unique=False)
    op.create_index('idx_recovery_jobs_type_created', 'recovery_jobs', ['recovery_type', sa.literal_column('created_at DESC')], unique=False)



    run_sql_files("0001", "upgrade")


def downgrade() -> None:
    run_sql_files("0001", "downgrade")

    op.drop_index('idx_recovery_jobs_type_created', table_name='recovery_jobs')
    op.drop_index('idx_recovery_jobs_org_created', table_name='recovery_jobs')
    op.drop_index('idx_recovery_jobs_emergency', table_name='recovery_jobs', postgresql_where=sa.text('is_emergency_recovery'), sqlite_where=sa.text('is_emergency_recovery'))
    op.drop_index('idx_recovery_jobs_backup', table_name='recovery_jobs')
    op.drop_table('recovery_jobs')
    op.drop_index('idx_backup_storage_tier', table_name='backup_storage')
    op.drop_index('idx_backup_storage_org', table_name='backup_storage')
    op.drop_index('idx_backup_storage_lifecycle', table_name='backup_storage', postgresql_where=sa.text('deletion_date IS NULL'), sqlite_where=sa.text('deletion_date IS NULL'))
    op.drop_index('idx_backup_storage_job', table_name='backup_storage')
    op.drop_table('backup_storage')
    op.drop_index('idx_webhook_deliveries_pending', table_name='webhook_deliveries', postgresql_where=sa.text("status = 'PENDING'"), sqlite_where=sa.text("status = 'PENDING'"))
    op.drop_index('idx_webhook_deliveries_endpoint', table_name='webhook_deliveries')
    op.drop_table('webhook_deliveries')
    op.drop_index('idx_backup_jobs_wedding_day', table_name='backup_jobs', postgresql_where=sa.text('is_wedding_day_backup = true'), sqlite_where=sa.text('is_wedding_day_backup = 1'))
    op.drop_index('idx_backup_jobs_status_date', table_name='backup_jobs')
    op.drop_index('idx_backup_jobs_scheduled_at', table_name='backup_jobs')
    op.drop_index('idx_backup_jobs_policy_id', table_name='backup_jobs')
    op.drop_index('idx_backup_jobs_policy_completed', table_name='backup_jobs', postgresql_where=sa.text("status = 'COMPLETED'"), sqlite_where=sa.text("status = 'COMPLETED'"))
    op.drop_index('idx_backup_jobs_parent', table_name='backup_jobs')
    op.drop_index('idx_backup_jobs_org_created', table_name='backup_jobs')
    op.drop_index('idx_backup_jobs_key', table_name='backup_jobs')
    op.drop_index('idx_backup_jobs_in_progress', table_name='backup_jobs', postgresql_where=sa.text("status = 'IN_PROGRESS'"), sqlite_where=sa.text("status = 'IN_PROGRESS'"))
    op.drop_index('idx_backup_jobs_expires', table_name='backup_jobs', postgresql_where=sa.text('deletion_date IS NULL'), sqlite_where=sa.text('deletion_date IS NULL'))
    op.drop_table('backup_jobs')
    op.drop_index('idx_backup_analytics_org_date', table_name='backup_analytics')
    op.drop_table('backup_analytics')
    op.drop_index('idx_wedding_calendar_date', table_name='wedding_calendar')
    op.drop_table('wedding_calendar')
    op.drop_index('idx_webhook_endpoints_org', table_name='webhook_endpoints')
    op.drop_table('webhook_endpoints')
    op.drop_index('idx_erasure_requests_subject', table_name='erasure_requests')
    op.drop_index('idx_erasure_requests_org_status', table_name='erasure_requests')
    op.drop_table('erasure_requests')
    op.drop_index('idx_encryption_keys_rotation_due', table_name='encryption_keys', postgresql_where=sa.text("status = 'ACTIVE'"), sqlite_where=sa.text("status = 'ACTIVE'"))
    op.drop_index('idx_encryption_keys_one_active', table_name='encryption_keys', postgresql_where=sa.text("status = 'ACTIVE'"), sqlite_where=sa.text("status = 'ACTIVE'"))
    op.drop_table('encryption_keys')
    op.drop_index('idx_backup_policies_org', table_name='backup_policies')
    op.drop_index('idx_backup_policies_active', table_name='backup_policies', postgresql_where=sa.text('is_active'), sqlite_where=sa.text('is_active'))
    op.drop_table('backup_policies')
    op.drop_index('idx_audit_log_target', table_name='audit_log')
    op.drop_index('idx_audit_log_org_time', table_name='audit_log')
    op.drop_table('audit_log')
    op.drop_table('organizations')
    if op.get_context().dialect.name == "postgresql":
        for name in ("backup_type", "backup_status", "backup_priority", "storage_tier",
                     "recovery_status", "recovery_type", "vendor_type"):
            op.execute(f"DROP TYPE IF EXISTS {name}")
