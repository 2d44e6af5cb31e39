"""Maintenance work as the maintenance flows see it, for now: the never-on-a-wedding-day
gate and read-only previews (lifecycle and retention plans, pending erasures, daily
counts). The acting parts come with the lifecycle, retention and GDPR work."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from vowvault.catalog.enums import BackupStatus, CopyStatus, ErasureStatus, ObjectKind, Tier
from vowvault.catalog.models import (
    BackupJob,
    BackupPolicy,
    BackupStorage,
    ErasureRequest,
    WeddingDate,
)
from vowvault.engine.context import Context
from vowvault.plan import maintenance_allowed


def gate(ctx: Context, force: bool = False) -> tuple[bool, str]:
    """May heavy maintenance start now? Not on a Saturday nor on any wedding date."""
    today = ctx.clock().date()
    with ctx.catalog.session() as s:
        dates = set(s.execute(sa.select(WeddingDate.wedding_date).where(
            WeddingDate.wedding_date == today)).scalars())
    return maintenance_allowed(today, dates, force)


def lifecycle_preview(ctx: Context) -> list[dict[str, Any]]:
    """Data objects whose policy's lifecycle rules want them in a colder tier now."""
    now = ctx.clock()
    out = []
    with ctx.catalog.session() as s:
        rows = s.execute(sa.select(BackupStorage, BackupPolicy.name,
                                   BackupPolicy.lifecycle_rules)
                         .join(BackupJob, BackupJob.id == BackupStorage.backup_job_id)
                         .join(BackupPolicy, BackupPolicy.id == BackupJob.policy_id)
                         .where(BackupStorage.object_kind == ObjectKind.DATA,
                                BackupStorage.status.in_([CopyStatus.STORED,
                                                          CopyStatus.VERIFIED]),
                                BackupJob.status == BackupStatus.COMPLETED))
        for obj, policy, rules in rows:
            age = (now - obj.created_at).days
            due = [r for r in rules if age >= r["after_days"]
                   and Tier(r["tier"]).rank > obj.storage_tier.rank]
            if due:
                target = max(due, key=lambda r: r["after_days"])["tier"]
                out.append({"policy": policy, "object": obj.file_path, "age_days": age,
                            "from": obj.storage_tier.value, "to": target})
    return out


def retention_preview(ctx: Context) -> list[dict[str, Any]]:
    """Backups past their policy's retention days and not held (a first filter)."""
    now = ctx.clock()
    out = []
    with ctx.catalog.session() as s:
        rows = s.execute(sa.select(BackupJob, BackupPolicy).join(BackupPolicy).where(
            BackupJob.deletion_date.is_(None), BackupJob.legal_hold.is_(False)))
        for job, policy in rows:
            when = job.completed_at or job.created_at
            age = (now - when).days
            if age > policy.retention_days and age > 365 * policy.legal_hold_years:
                out.append({"policy": policy.name, "backup": str(job.id), "age_days": age,
                            "status": job.status.value})
    return out


def pending_erasures(ctx: Context) -> list[dict[str, Any]]:
    with ctx.catalog.session() as s:
        return [{"subject": r.subject_type.value, "ref": r.subject_ref,
                 "requested": r.requested_at.isoformat()}
                for r in s.execute(sa.select(ErasureRequest).where(
                    ErasureRequest.status != ErasureStatus.COMPLETED)).scalars()]


def daily_counts(ctx: Context, day: dt.date) -> list[dict[str, Any]]:
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    end = start + dt.timedelta(days=1)
    with ctx.catalog.session() as s:
        rows = s.execute(sa.select(BackupPolicy.name, BackupJob.status, sa.func.count())
                         .join(BackupPolicy).where(BackupJob.created_at >= start,
                                                   BackupJob.created_at < end)
                         .group_by(BackupPolicy.name, BackupJob.status))
        out: dict[str, dict[str, Any]] = {}
        for name, status, n in rows:
            out.setdefault(name, {"policy": name})[status.value.lower()] = n
    return list(out.values())
