"""SQLAlchemy models: the single source of truth of the catalog schema.

Every tenant-owned table carries ``organization_id`` so that PostgreSQL row-level security
can isolate organizations. Sizes are kept exactly in bytes (BIGINT); the report's
``actual_size_gb`` is kept too, for its views and dashboards.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from vowvault.catalog.types import (
    BigIntPK,
    JSONDoc,
    TZDateTime,
    UUIDList,
    check_enum,
    gen_random_uuid,
    pg_enum,
)
from vowvault.domain import (
    BackupStatus,
    BackupType,
    CopyHealth,
    CopyRole,
    CopyStatus,
    DeliveryStatus,
    ErasureStatus,
    ErasureSubject,
    KeyStatus,
    ObjectKind,
    Priority,
    RecoveryStatus,
    RecoveryType,
    SourceKind,
    Tier,
    VendorType,
    VerificationStatus,
)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BACKUP_TYPE = pg_enum(BackupType, "backup_type")
BACKUP_STATUS = pg_enum(BackupStatus, "backup_status")
BACKUP_PRIORITY = pg_enum(Priority, "backup_priority")
STORAGE_TIER = pg_enum(Tier, "storage_tier")
RECOVERY_STATUS = pg_enum(RecoveryStatus, "recovery_status")
RECOVERY_TYPE = pg_enum(RecoveryType, "recovery_type")
VENDOR_TYPE = pg_enum(VendorType, "vendor_type")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)


def _pk() -> Mapped[uuid.UUID]:
    return mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4,
                         server_default=gen_random_uuid())


def _created() -> Mapped[dt.datetime]:
    return mapped_column(TZDateTime, nullable=False, default=utcnow, server_default=sa.func.now())


def _updated() -> Mapped[dt.datetime]:
    return mapped_column(TZDateTime, nullable=False, default=utcnow, onupdate=utcnow,
                         server_default=sa.func.now())


def _org_fk() -> Mapped[uuid.UUID]:
    return mapped_column(sa.ForeignKey("organizations.id", ondelete="RESTRICT"), nullable=False)


class Organization(Base):
    """A tenant. Never deleted: a shredded organization keeps its row and its history."""

    __tablename__ = "organizations"

    id: Mapped[uuid.UUID] = _pk()
    slug: Mapped[str] = mapped_column(sa.String(63), nullable=False, unique=True)
    name: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    vendor_type: Mapped[VendorType] = mapped_column(VENDOR_TYPE, nullable=False,
                                                    default=VendorType.OTHER,
                                                    server_default=VendorType.OTHER.value)
    is_active: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=True,
                                            server_default=sa.true())
    shredded_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()

    __table_args__ = (
        sa.CheckConstraint("slug <> ''", name="slug_not_empty"),
    )


class WeddingDate(Base):
    """A wedding an organization works on: its date raises backup priority that day."""

    __tablename__ = "wedding_calendar"

    id: Mapped[uuid.UUID] = _pk()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    wedding_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, nullable=False)
    wedding_date: Mapped[dt.date] = mapped_column(sa.Date, nullable=False)
    created_at: Mapped[dt.datetime] = _created()

    __table_args__ = (
        sa.UniqueConstraint("organization_id", "wedding_id"),
        sa.Index("idx_wedding_calendar_date", "wedding_date", "organization_id"),
    )


class BackupPolicy(Base):
    """A policy as applied from a policy file. Deactivated, never deleted."""

    __tablename__ = "backup_policies"

    id: Mapped[uuid.UUID] = _pk()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    name: Mapped[str] = mapped_column(sa.String(255), nullable=False, unique=True)
    description: Mapped[str | None] = mapped_column(sa.Text)
    backup_type: Mapped[BackupType] = mapped_column(BACKUP_TYPE, nullable=False)
    source_kind: Mapped[SourceKind] = mapped_column(check_enum(SourceKind, "source_kind"),
                                                    nullable=False)
    source_config: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False)
    priority: Mapped[Priority] = mapped_column(BACKUP_PRIORITY, nullable=False,
                                               default=Priority.NORMAL,
                                               server_default=Priority.NORMAL.value)
    schedule_cron: Mapped[str] = mapped_column(sa.String(100), nullable=False)
    timezone: Mapped[str] = mapped_column(sa.String(64), nullable=False, default="UTC",
                                          server_default="UTC")
    peak_season_multiplier: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=5,
                                                        server_default="5")
    effective_schedules: Mapped[list[str]] = mapped_column(JSONDoc, nullable=False)
    retention_days: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=30,
                                                server_default="30")
    keep_last: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0,
                                           server_default="0")
    keep_daily: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0,
                                            server_default="0")
    keep_weekly: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0,
                                             server_default="0")
    keep_monthly: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0,
                                              server_default="0")
    keep_yearly: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0,
                                             server_default="0")
    min_verified_backups: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=1,
                                                      server_default="1")
    legal_hold_years: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0,
                                                  server_default="0")
    wedding_day_priority: Mapped[bool] = mapped_column(sa.Boolean, nullable=False,
                                                       default=False, server_default=sa.false())
    vendor_type: Mapped[VendorType | None] = mapped_column(VENDOR_TYPE)
    storage_tier: Mapped[Tier] = mapped_column(STORAGE_TIER, nullable=False, default=Tier.HOT,
                                               server_default=Tier.HOT.value)
    storage_targets: Mapped[list[dict[str, Any]]] = mapped_column(JSONDoc, nullable=False)
    encryption_enabled: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=True,
                                                     server_default=sa.true())
    key_provider: Mapped[str] = mapped_column(sa.String(64), nullable=False, default="local",
                                              server_default="local")
    lifecycle_rules: Mapped[list[dict[str, Any]]] = mapped_column(JSONDoc, nullable=False)
    max_retries: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=2,
                                             server_default="2")
    rto_target_minutes: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=15,
                                                    server_default="15")
    full_every_days: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=7,
                                                 server_default="7")
    verify_max_age_days: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=45,
                                                     server_default="45")
    scrub_cycle_days: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=30,
                                                  server_default="30")
    scrub_archived: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=False,
                                                 server_default=sa.false())
    is_active: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=True,
                                            server_default=sa.true())
    spec_hash: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()

    organization: Mapped[Organization] = relationship(lazy="joined")

    __table_args__ = (
        sa.CheckConstraint("retention_days >= 1", name="retention_days_positive"),
        sa.CheckConstraint(
            "keep_last >= 0 AND keep_daily >= 0 AND keep_weekly >= 0 AND keep_monthly >= 0 "
            "AND keep_yearly >= 0 AND min_verified_backups >= 0 AND legal_hold_years >= 0",
            name="retention_counts_not_negative"),
        sa.CheckConstraint("peak_season_multiplier BETWEEN 1 AND 60",
                           name="peak_multiplier_range"),
        sa.CheckConstraint("max_retries BETWEEN 0 AND 10", name="max_retries_range"),
        sa.CheckConstraint("rto_target_minutes > 0", name="rto_positive"),
        sa.CheckConstraint("full_every_days BETWEEN 1 AND 366", name="full_every_days_range"),
        sa.CheckConstraint("verify_max_age_days BETWEEN 1 AND 3660 AND scrub_cycle_days "
                           "BETWEEN 1 AND verify_max_age_days", name="verification_ranges"),
        sa.Index("idx_backup_policies_org", "organization_id"),
        sa.Index("idx_backup_policies_active", "priority",
                 postgresql_where=sa.text("is_active"), sqlite_where=sa.text("is_active")),
    )


class BackupJob(Base):
    """One run of a policy and what it produced (a *backup*)."""

    __tablename__ = "backup_jobs"

    id: Mapped[uuid.UUID] = _pk()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    policy_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("backup_policies.id", ondelete="RESTRICT"))
    job_name: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    backup_type: Mapped[BackupType] = mapped_column(BACKUP_TYPE, nullable=False)
    status: Mapped[BackupStatus] = mapped_column(BACKUP_STATUS, nullable=False,
                                                 default=BackupStatus.SCHEDULED,
                                                 server_default=BackupStatus.SCHEDULED.value)
    priority: Mapped[Priority] = mapped_column(BACKUP_PRIORITY, nullable=False,
                                               default=Priority.NORMAL,
                                               server_default=Priority.NORMAL.value)
    scheduled_at: Mapped[dt.datetime] = mapped_column(TZDateTime, nullable=False)
    started_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    completed_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    parent_job_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("backup_jobs.id", ondelete="RESTRICT"))
    source_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    stored_bytes: Mapped[int | None] = mapped_column(sa.BigInteger)
    actual_size_gb: Mapped[Decimal | None] = mapped_column(sa.Numeric(10, 2))
    compression_ratio: Mapped[Decimal | None] = mapped_column(sa.Numeric(5, 4))
    file_count: Mapped[int | None] = mapped_column(sa.Integer)
    related_wedding_ids: Mapped[list[str] | None] = mapped_column(UUIDList)
    is_wedding_day_backup: Mapped[bool] = mapped_column(sa.Boolean, nullable=False,
                                                        default=False, server_default=sa.false())
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    retry_count: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0,
                                             server_default="0")
    verification_status: Mapped[VerificationStatus | None] = mapped_column(
        check_enum(VerificationStatus, "verification_status"))
    verified_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    stage_durations: Mapped[dict[str, float] | None] = mapped_column(JSONDoc)
    source_info: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    format_version: Mapped[int | None] = mapped_column(sa.SmallInteger)
    manifest_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    encryption_key_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("encryption_keys.id", ondelete="RESTRICT"))
    wrapped_dek: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    flow_run_id: Mapped[str | None] = mapped_column(sa.String(64))
    worker_host: Mapped[str | None] = mapped_column(sa.String(255))
    worker_pid: Mapped[int | None] = mapped_column(sa.Integer)
    owner_token: Mapped[str | None] = mapped_column(sa.String(64))
    """Who runs the job now: its result is recorded only by the holder of this token."""
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    """Renewed by the heartbeat, in the catalog server's clock (PostgreSQL's now())."""
    legal_hold: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=False,
                                             server_default=sa.false())
    expires_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    deletion_date: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()

    policy: Mapped[BackupPolicy | None] = relationship()

    __table_args__ = (
        sa.CheckConstraint("retry_count >= 0", name="retry_count_not_negative"),
        sa.CheckConstraint("compression_ratio IS NULL OR compression_ratio >= 0",
                           name="compression_ratio_not_negative"),
        sa.CheckConstraint("status <> 'COMPLETED' OR completed_at IS NOT NULL",
                           name="completed_has_time"),
        # The report's indexes.
        sa.Index("idx_backup_jobs_wedding_day", "is_wedding_day_backup",
                 postgresql_where=sa.text("is_wedding_day_backup = true"),
                 sqlite_where=sa.text("is_wedding_day_backup = 1")),
        sa.Index("idx_backup_jobs_status_date", "status", sa.text("created_at DESC")),
        sa.Index("idx_backup_jobs_policy_id", "policy_id"),
        # What the flows and the CLI ask.
        sa.Index("idx_backup_jobs_org_created", "organization_id", sa.text("created_at DESC")),
        sa.Index("idx_backup_jobs_policy_completed", "policy_id", sa.text("completed_at DESC"),
                 postgresql_where=sa.text("status = 'COMPLETED'"),
                 sqlite_where=sa.text("status = 'COMPLETED'")),
        sa.Index("idx_backup_jobs_in_progress", "heartbeat_at",
                 postgresql_where=sa.text("status = 'IN_PROGRESS'"),
                 sqlite_where=sa.text("status = 'IN_PROGRESS'")),
        sa.Index("idx_backup_jobs_parent", "parent_job_id"),
        sa.Index("idx_backup_jobs_scheduled_at", "scheduled_at"),
        sa.Index("idx_backup_jobs_expires", "expires_at",
                 postgresql_where=sa.text("deletion_date IS NULL"),
                 sqlite_where=sa.text("deletion_date IS NULL")),
        sa.Index("idx_backup_jobs_key", "encryption_key_id"),
    )


class BackupStorage(Base):
    """One stored object of one backup on one target (a backup has several: data, manifest,
    wrapped key; and again for every copy)."""

    __tablename__ = "backup_storage"

    id: Mapped[uuid.UUID] = _pk()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    backup_job_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("backup_jobs.id", ondelete="RESTRICT"), nullable=False)
    storage_provider: Mapped[str] = mapped_column(sa.String(100), nullable=False)
    storage_url: Mapped[str] = mapped_column(sa.Text, nullable=False)
    copy_role: Mapped[CopyRole] = mapped_column(check_enum(CopyRole, "copy_role"),
                                                nullable=False, default=CopyRole.PRIMARY)
    object_kind: Mapped[ObjectKind] = mapped_column(check_enum(ObjectKind, "object_kind"),
                                                    nullable=False, default=ObjectKind.DATA)
    storage_tier: Mapped[Tier] = mapped_column(STORAGE_TIER, nullable=False, default=Tier.HOT,
                                               server_default=Tier.HOT.value)
    file_path: Mapped[str] = mapped_column(sa.Text, nullable=False)
    file_size_bytes: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    checksum_sha256: Mapped[str | None] = mapped_column(sa.String(64))
    is_encrypted: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=True,
                                               server_default=sa.true())
    encryption_key_id: Mapped[str | None] = mapped_column(sa.String(255))
    status: Mapped[CopyStatus] = mapped_column(check_enum(CopyStatus, "copy_status"),
                                               nullable=False, default=CopyStatus.PENDING)
    is_archived: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=False,
                                              server_default=sa.false())
    restore_state: Mapped[str | None] = mapped_column(sa.String(32))
    legal_hold: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=False,
                                             server_default=sa.false())
    tier_changed_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    verified_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    health: Mapped[CopyHealth] = mapped_column(check_enum(CopyHealth, "copy_health"),
                                               nullable=False, default=CopyHealth.UNCHECKED,
                                               server_default=CopyHealth.UNCHECKED.value)
    """What the last check of this object's copy found (``checked_at``, ``problem``)."""
    checked_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    problem: Mapped[str | None] = mapped_column(sa.Text)
    deletion_date: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()

    __table_args__ = (
        sa.CheckConstraint("file_size_bytes >= 0", name="size_not_negative"),
        sa.Index("idx_backup_storage_checked", "storage_url", "checked_at"),
        sa.UniqueConstraint("storage_url", "file_path"),
        sa.Index("idx_backup_storage_tier", "storage_tier"),
        sa.Index("idx_backup_storage_job", "backup_job_id"),
        sa.Index("idx_backup_storage_org", "organization_id"),
        sa.Index("idx_backup_storage_lifecycle", "storage_tier", "created_at",
                 postgresql_where=sa.text("deletion_date IS NULL"),
                 sqlite_where=sa.text("deletion_date IS NULL")),
    )


class StorageTarget(Base):
    """A storage target the service has used, and the repository marker it holds. A target
    whose marker is missing or another is unavailable (an unmounted NAS, another bucket),
    never evidence that its backups are damaged. A service table: no organization owns a
    target (several may share one), so tenants see none of it."""

    __tablename__ = "storage_targets"

    id: Mapped[uuid.UUID] = _pk()
    url: Mapped[str] = mapped_column(sa.Text, nullable=False, unique=True)
    marker_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, nullable=False)
    format_version: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=1,
                                                server_default="1")
    checked_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    available: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=True,
                                            server_default=sa.true())
    problem: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()


class RecoveryJob(Base):
    """A restore: by an operator, by a DR drill, or an emergency recovery."""

    __tablename__ = "recovery_jobs"

    id: Mapped[uuid.UUID] = _pk()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    backup_job_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("backup_jobs.id", ondelete="RESTRICT"), nullable=False)
    recovery_type: Mapped[RecoveryType] = mapped_column(RECOVERY_TYPE, nullable=False)
    status: Mapped[RecoveryStatus] = mapped_column(RECOVERY_STATUS, nullable=False,
                                                   default=RecoveryStatus.PENDING,
                                                   server_default=RecoveryStatus.PENDING.value)
    is_emergency_recovery: Mapped[bool] = mapped_column(sa.Boolean, nullable=False,
                                                        default=False, server_default=sa.false())
    requested_by: Mapped[str | None] = mapped_column(sa.String(255))
    requester_role: Mapped[str | None] = mapped_column(sa.String(64))
    target_kind: Mapped[str | None] = mapped_column(sa.String(32))
    target_description: Mapped[str | None] = mapped_column(sa.Text)
    started_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    completed_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    duration_seconds: Mapped[Decimal | None] = mapped_column(sa.Numeric(12, 3))
    rto_seconds: Mapped[Decimal | None] = mapped_column(sa.Numeric(12, 3))
    rto_target_seconds: Mapped[int | None] = mapped_column(sa.Integer)
    rpo_seconds: Mapped[Decimal | None] = mapped_column(sa.Numeric(14, 3))
    bytes_restored: Mapped[int | None] = mapped_column(sa.BigInteger)
    storage_used: Mapped[str | None] = mapped_column(sa.Text)
    validation: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    erasures_applied: Mapped[list[Any] | None] = mapped_column(JSONDoc)
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    flow_run_id: Mapped[str | None] = mapped_column(sa.String(64))
    worker_host: Mapped[str | None] = mapped_column(sa.String(255))
    worker_pid: Mapped[int | None] = mapped_column(sa.Integer)
    owner_token: Mapped[str | None] = mapped_column(sa.String(64))
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()

    __table_args__ = (
        sa.CheckConstraint("NOT is_emergency_recovery OR recovery_type = 'EMERGENCY'",
                           name="emergency_type_matches"),
        sa.Index("idx_recovery_jobs_backup", "backup_job_id"),
        sa.Index("idx_recovery_jobs_org_created", "organization_id", sa.text("created_at DESC")),
        sa.Index("idx_recovery_jobs_emergency", "organization_id",
                 postgresql_where=sa.text("is_emergency_recovery"),
                 sqlite_where=sa.text("is_emergency_recovery")),
        sa.Index("idx_recovery_jobs_type_created", "recovery_type", sa.text("created_at DESC")),
    )


class EncryptionKey(Base):
    """A version of an organization's key-encryption key. Only references and metadata:
    the key material lives with the key provider, never here."""

    __tablename__ = "encryption_keys"

    id: Mapped[uuid.UUID] = _pk()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    version: Mapped[int] = mapped_column(sa.Integer, nullable=False)
    provider: Mapped[str] = mapped_column(sa.String(32), nullable=False)
    key_ref: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    algorithm: Mapped[str] = mapped_column(sa.String(32), nullable=False,
                                           default="AES-256-GCM", server_default="AES-256-GCM")
    status: Mapped[KeyStatus] = mapped_column(check_enum(KeyStatus, "key_status"),
                                              nullable=False, default=KeyStatus.ACTIVE)
    rotation_due_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    retired_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    destroyed_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()

    __table_args__ = (
        sa.CheckConstraint("version >= 1", name="version_positive"),
        sa.UniqueConstraint("organization_id", "version"),
        sa.Index("idx_encryption_keys_one_active", "organization_id", unique=True,
                 postgresql_where=sa.text("status = 'ACTIVE'"),
                 sqlite_where=sa.text("status = 'ACTIVE'")),
        sa.Index("idx_encryption_keys_rotation_due", "rotation_due_at",
                 postgresql_where=sa.text("status = 'ACTIVE'"),
                 sqlite_where=sa.text("status = 'ACTIVE'")),
    )


class BackupAnalytics(Base):
    """Daily numbers per policy, written by the analytics flow (or generate_backup_analytics)."""

    __tablename__ = "backup_analytics"

    id: Mapped[uuid.UUID] = _pk()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    policy_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("backup_policies.id", ondelete="RESTRICT"), nullable=False)
    analytics_date: Mapped[dt.date] = mapped_column(sa.Date, nullable=False)
    total_jobs: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    successful_jobs: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    failed_jobs: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    corrupted_jobs: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    success_rate_percent: Mapped[Decimal | None] = mapped_column(sa.Numeric(5, 2))
    expected_runs: Mapped[int | None] = mapped_column(sa.Integer)
    compliance_percentage: Mapped[Decimal | None] = mapped_column(sa.Numeric(5, 2))
    source_bytes: Mapped[int] = mapped_column(sa.BigInteger, nullable=False, default=0)
    stored_bytes: Mapped[int] = mapped_column(sa.BigInteger, nullable=False, default=0)
    bytes_by_tier: Mapped[dict[str, int] | None] = mapped_column(JSONDoc)
    bytes_by_provider: Mapped[dict[str, int] | None] = mapped_column(JSONDoc)
    avg_compression_ratio: Mapped[Decimal | None] = mapped_column(sa.Numeric(5, 4))
    duration_p50_seconds: Mapped[Decimal | None] = mapped_column(sa.Numeric(12, 3))
    duration_p95_seconds: Mapped[Decimal | None] = mapped_column(sa.Numeric(12, 3))
    throughput_p50_mib_s: Mapped[Decimal | None] = mapped_column(sa.Numeric(12, 3))
    throughput_p95_mib_s: Mapped[Decimal | None] = mapped_column(sa.Numeric(12, 3))
    drills_run: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    drills_passed: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0)
    rto_avg_seconds: Mapped[Decimal | None] = mapped_column(sa.Numeric(12, 3))
    key_age_days: Mapped[int | None] = mapped_column(sa.Integer)
    forecast: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    created_at: Mapped[dt.datetime] = _created()

    __table_args__ = (
        sa.UniqueConstraint("policy_id", "analytics_date"),
        sa.Index("idx_backup_analytics_org_date", "organization_id",
                 sa.text("analytics_date DESC")),
    )


class AuditEntry(Base):
    """Append-only, hash-chained record of every change vowvault makes.

    ``row_hash`` = SHA-256 over ``prev_hash`` and the row's canonical JSON; editing,
    deleting or reordering a row breaks the chain (see ``vowvault.catalog.audit``).
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="RESTRICT"))
    occurred_at: Mapped[dt.datetime] = mapped_column(TZDateTime, nullable=False,
                                                     default=utcnow,
                                                     server_default=sa.func.now())
    actor: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    actor_role: Mapped[str | None] = mapped_column(sa.String(64))
    action: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    target_type: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    target_id: Mapped[str | None] = mapped_column(sa.String(255))
    summary: Mapped[str | None] = mapped_column(sa.Text)
    before: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    # UNIQUE prev_hash keeps the chain linear: two writers racing for the same head cannot
    # both append, the loser retries on the new head.
    prev_hash: Mapped[str] = mapped_column(sa.String(64), nullable=False, unique=True)
    row_hash: Mapped[str] = mapped_column(sa.String(64), nullable=False, unique=True)

    __table_args__ = (
        sa.Index("idx_audit_log_org_time", "organization_id", sa.text("occurred_at DESC")),
        sa.Index("idx_audit_log_target", "target_type", "target_id"),
    )


class ErasureRequest(Base):
    """A right-to-be-forgotten request, replayed on every restore until backups age out."""

    __tablename__ = "erasure_requests"

    id: Mapped[uuid.UUID] = _pk()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    subject_type: Mapped[ErasureSubject] = mapped_column(
        check_enum(ErasureSubject, "erasure_subject"), nullable=False)
    subject_ref: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    scope: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False)
    status: Mapped[ErasureStatus] = mapped_column(check_enum(ErasureStatus, "erasure_status"),
                                                  nullable=False, default=ErasureStatus.PENDING)
    requested_by: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    requested_at: Mapped[dt.datetime] = mapped_column(TZDateTime, nullable=False,
                                                      default=utcnow,
                                                      server_default=sa.func.now())
    completed_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()

    __table_args__ = (
        sa.Index("idx_erasure_requests_org_status", "organization_id", "status"),
        sa.Index("idx_erasure_requests_subject", "subject_ref"),
    )


class WebhookEndpoint(Base):
    """Where an organization wants events sent. The signing secret is named, not stored."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = _pk()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    url: Mapped[str] = mapped_column(sa.Text, nullable=False)
    secret_ref: Mapped[str] = mapped_column(sa.String(255), nullable=False)
    events: Mapped[list[str]] = mapped_column(JSONDoc, nullable=False)
    is_active: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=True,
                                            server_default=sa.true())
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()

    __table_args__ = (sa.Index("idx_webhook_endpoints_org", "organization_id"),
                      sa.UniqueConstraint("organization_id", "url"))


class WebhookDelivery(Base):
    """One event for one endpoint, with every attempt counted."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = _pk()
    organization_id: Mapped[uuid.UUID] = _org_fk()
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("webhook_endpoints.id", ondelete="RESTRICT"), nullable=False)
    event_type: Mapped[str] = mapped_column(sa.String(64), nullable=False)
    message_id: Mapped[str] = mapped_column(sa.String(64), nullable=False, unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDoc, nullable=False)
    status: Mapped[DeliveryStatus] = mapped_column(check_enum(DeliveryStatus, "delivery_status"),
                                                   nullable=False,
                                                   default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(sa.Integer, nullable=False, default=0,
                                          server_default="0")
    response_status: Mapped[int | None] = mapped_column(sa.Integer)
    error_message: Mapped[str | None] = mapped_column(sa.Text)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(TZDateTime)
    attempt_log: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONDoc)
    """Every attempt: time, HTTP status or error, duration."""
    escalation: Mapped[bool] = mapped_column(sa.Boolean, nullable=False, default=False,
                                             server_default=sa.false())
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _updated()

    __table_args__ = (
        sa.Index("idx_webhook_deliveries_pending", "next_attempt_at",
                 postgresql_where=sa.text("status = 'PENDING'"),
                 sqlite_where=sa.text("status = 'PENDING'")),
        sa.Index("idx_webhook_deliveries_endpoint", "endpoint_id", sa.text("created_at DESC")),
    )


TENANT_TABLES = (
    "wedding_calendar", "backup_policies", "backup_jobs", "backup_storage", "recovery_jobs",
    "encryption_keys", "backup_analytics", "audit_log", "erasure_requests",
    "webhook_endpoints", "webhook_deliveries",
)
"""Tables isolated per organization by row-level security (plus ``organizations`` itself)."""
