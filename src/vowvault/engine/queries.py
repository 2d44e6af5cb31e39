"""What the faces (CLI, deployments) show about the catalog, as plain values: policies,
organizations, backups, the audit log, webhook deliveries, deployment plans.

Each function reads in one short read-only transaction and returns rows the caller formats;
nothing here writes.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vowvault.catalog.models import (
    AuditEntry,
    BackupJob,
    BackupPolicy,
    BackupStorage,
    Organization,
    WebhookDelivery,
    WebhookEndpoint,
    WeddingDate,
)
from vowvault.domain import BackupStatus, CopyStatus, ObjectKind, Priority
from vowvault.engine.context import Context
from vowvault.engine.lookup import find_backup
from vowvault.errors import NotFound, VowvaultError
from vowvault.plan import DeploymentPlan, backup_deployments
from vowvault.scheduling import explain_priority, local_date, next_run, zone


def _weddings(session: Session) -> dict[uuid.UUID, set[dt.date]]:
    found: dict[uuid.UUID, set[dt.date]] = {}
    for org_id, day in session.execute(sa.select(WeddingDate.organization_id,
                                                 WeddingDate.wedding_date)):
        found.setdefault(org_id, set()).add(day)
    return found


def _policy(session: Session, name: str) -> BackupPolicy:
    p = session.execute(sa.select(BackupPolicy).where(BackupPolicy.name == name)
                        ).scalar_one_or_none()
    if p is None:
        raise NotFound(f"no policy named {name!r}; see `vowvault policies list --all`")
    return p


# -- policies -------------------------------------------------------------------------------

@dataclass
class PolicyRow:
    name: str
    organization: str
    source_kind: str
    backup_type: str
    schedule: str
    timezone: str
    peak_schedules: int
    next_run: dt.datetime | None
    priority: Priority
    base_priority: Priority
    targets: int
    active: bool
    priority_reason: str


At = dt.datetime | dt.date | None
"""When to look from: an instant, a day (from its first second in each policy's timezone),
or None for now."""


def _after(at: At, tz: str, now: dt.datetime) -> dt.datetime:
    if at is None:
        return now
    if isinstance(at, dt.datetime):
        return at if at.tzinfo else at.replace(tzinfo=zone(tz))
    return dt.datetime.combine(at, dt.time(0), zone(tz)) - dt.timedelta(seconds=1)


def _next_and_priority(p: BackupPolicy, weddings: set[dt.date], after: dt.datetime
                       ) -> tuple[dt.datetime | None, Priority, str]:
    nxt = next_run(p.effective_schedules, p.timezone, after) if p.is_active else None
    if nxt is None:
        why = "inactive: no run planned" if not p.is_active else "no run planned"
        return None, p.priority, why
    prio, why = explain_priority(p.priority, p.wedding_day_priority,
                                 local_date(nxt, p.timezone), weddings)
    return nxt, prio, f"next run on {why}"


def list_policies(ctx: Context, *, include_inactive: bool = False,
                  now: dt.datetime | None = None, at: At = None) -> list[PolicyRow]:
    now = now or ctx.clock()
    out = []
    with ctx.catalog.read() as s:
        query = sa.select(BackupPolicy).order_by(BackupPolicy.name)
        if not include_inactive:
            query = query.where(BackupPolicy.is_active.is_(True))
        weddings = _weddings(s)
        for p in s.execute(query).scalars():
            nxt, prio, why = _next_and_priority(p, weddings.get(p.organization_id, set()),
                                                _after(at, p.timezone, now))
            out.append(PolicyRow(p.name, p.organization.slug, p.source_kind.value.lower(),
                                 p.backup_type.value, p.schedule_cron, p.timezone,
                                 len(p.effective_schedules) - 1, nxt, prio, p.priority,
                                 len(p.storage_targets), p.is_active, why))
    return out


@dataclass
class PolicyDetails:
    values: dict[str, Any]
    wedding_dates: list[dt.date]
    next_run: dt.datetime | None
    priority: Priority
    priority_reason: str


def policy_details(ctx: Context, name: str, now: dt.datetime | None = None,
                   at: At = None) -> PolicyDetails:
    now = now or ctx.clock()
    with ctx.catalog.read() as s:
        p = _policy(s, name)
        weddings = sorted(_weddings(s).get(p.organization_id, set()))
        values = {c.key: getattr(p, c.key) for c in sa.inspect(BackupPolicy).column_attrs}
        values["organization"] = p.organization.slug
        nxt, prio, why = _next_and_priority(p, set(weddings), _after(at, p.timezone, now))
        return PolicyDetails(values, weddings, nxt, prio, why)


def policy_retries(ctx: Context, name: str) -> int:
    """How often the orchestrator retries a backup of this policy; ``NotFound`` for a name
    that is none (said before an orchestrator is started for it)."""
    with ctx.catalog.read() as s:
        return int(_policy(s, name).max_retries or 0)


def deployment_plans(ctx: Context, today: dt.date | None = None) -> list[DeploymentPlan]:
    """Every policy's deployments (``plan.backup_deployments``); deactivated policies' come
    back paused."""
    today = today or ctx.clock().date()
    with ctx.catalog.read() as s:
        weddings = _weddings(s)
        plans: list[DeploymentPlan] = []
        for policy in s.execute(sa.select(BackupPolicy).order_by(BackupPolicy.name)).scalars():
            plans += backup_deployments(policy, policy.organization.slug,
                                        sorted(weddings.get(policy.organization_id, set())),
                                        today)
    return plans


# -- organizations and the audit log ---------------------------------------------------------

def list_organizations(ctx: Context) -> list[dict[str, Any]]:
    with ctx.catalog.read() as s:
        return [{"slug": o.slug, "name": o.name, "vendor_type": o.vendor_type.value,
                 "active": "shredded" if o.shredded_at else str(o.is_active), "id": str(o.id)}
                for o in s.execute(sa.select(Organization).order_by(Organization.slug))
                .scalars()]


def audit_entries(ctx: Context, limit: int) -> list[dict[str, Any]]:
    with ctx.catalog.read() as s:
        return [{"id": r.id, "occurred_at": r.occurred_at, "actor": r.actor,
                 "action": r.action, "summary": r.summary or ""}
                for r in s.execute(sa.select(AuditEntry).order_by(AuditEntry.id.desc())
                                   .limit(limit)).scalars()]


def webhook_log(ctx: Context, limit: int) -> list[dict[str, Any]]:
    with ctx.catalog.read() as s:
        rows = s.execute(sa.select(WebhookDelivery, WebhookEndpoint.url).join(
            WebhookEndpoint).order_by(WebhookDelivery.created_at.desc()).limit(limit)).all()
        out = []
        for d, url in rows:
            last = (d.attempt_log or [{}])[-1]
            out.append({"created_at": d.created_at, "event": d.event_type,
                        "escalation": d.escalation, "url": url, "status": d.status.value,
                        "attempts": d.attempts,
                        "last": str(last.get("status") or last.get("error") or "-")})
        return out


# -- backups --------------------------------------------------------------------------------

@dataclass
class BackupRow:
    id: str
    policy: str
    backup_type: str
    status: str
    """COMPLETED* when it completed with warnings."""
    source_bytes: int | None
    stored_bytes: int | None
    time: dt.datetime
    tiers: str
    copies: int


def list_backups(ctx: Context, *, policy: str | None = None, limit: int = 50
                 ) -> list[BackupRow]:
    """Newest first."""
    with ctx.catalog.read() as s:
        query = sa.select(BackupJob, BackupPolicy.name).join(BackupPolicy, isouter=True)
        if policy:
            _policy(s, policy)
            query = query.where(BackupPolicy.name == policy)
        rows = s.execute(query.order_by(BackupJob.created_at.desc()).limit(limit)).all()
        tiers = _tiers(s, [j.id for j, _ in rows])
    out = []
    for job, name in rows:
        tier, n = tiers.get(job.id, ("-", 0))
        status = "COMPLETED*" if job.status == BackupStatus.COMPLETED and job.error_message \
            else job.status.value
        out.append(BackupRow(str(job.id), name or "-", job.backup_type.value, status,
                             job.source_bytes, job.stored_bytes,
                             job.completed_at or job.started_at or job.created_at, tier, n))
    return out


def _tiers(s: Session, ids: list[Any]) -> dict[Any, tuple[str, int]]:
    if not ids:
        return {}
    seen: dict[Any, list[str]] = {}
    for job_id, tier in s.execute(sa.select(BackupStorage.backup_job_id,
                                            BackupStorage.storage_tier).where(
            BackupStorage.backup_job_id.in_(ids), BackupStorage.object_kind == ObjectKind.DATA,
            BackupStorage.status.in_([CopyStatus.STORED, CopyStatus.VERIFIED]))):
        seen.setdefault(job_id, []).append(tier.value)
    return {job_id: ("/".join(sorted(set(t))), len(t)) for job_id, t in seen.items()}


@dataclass
class BackupDetails:
    job: dict[str, Any]
    policy: str
    objects: list[dict[str, Any]]


def backup_details(ctx: Context, ref: str) -> BackupDetails:
    with ctx.catalog.read() as s:
        job = find_backup(s, ref)
        values = {c.key: getattr(job, c.key) for c in sa.inspect(BackupJob).column_attrs}
        objects = [{"kind": o.object_kind.value.lower(), "url": o.storage_url,
                    "path": o.file_path, "size": o.file_size_bytes, "tier": o.storage_tier.value,
                    "status": o.status.value, "health": o.health.value,
                    "checked_at": o.checked_at, "problem": o.problem}
                   for o in s.execute(sa.select(BackupStorage).where(
                       BackupStorage.backup_job_id == job.id).order_by(
                       BackupStorage.storage_url, BackupStorage.file_path)).scalars()]
        return BackupDetails(values, job.policy.name if job.policy else "-", objects)


def backup_of_flow_run(ctx: Context, flow_run_id: str, state: str | None) -> dict[str, Any]:
    """What the catalog recorded for the backup one flow run made (as ``Result.as_dict``)."""
    with ctx.catalog.read() as s:
        job = s.execute(sa.select(BackupJob).where(BackupJob.flow_run_id == flow_run_id)
                        ).scalar_one_or_none()
        if job is None:
            raise VowvaultError(f"flow run {flow_run_id} ended {state or '?'} without a backup "
                                f"job: see its logs in the Prefect UI")
        if job.status != BackupStatus.COMPLETED:
            raise VowvaultError(f"backup {job.id} {job.status.value}: {job.error_message}")
        urls = sorted({r.storage_url for r in s.execute(sa.select(BackupStorage).where(
            BackupStorage.backup_job_id == job.id)).scalars()})
        return {"job_id": str(job.id), "policy": job.policy.name if job.policy else "-",
                "status": job.status.value, "backup_type": job.backup_type.value,
                "source_bytes": job.source_bytes or 0, "stored_bytes": job.stored_bytes or 0,
                "duration_seconds": (job.stage_durations or {}).get("wall", 0.0),
                "targets": urls, "files": job.file_count,
                "tables": (job.source_info or {}).get("tables"),
                "warnings": (job.source_info or {}).get("warnings") or []}
