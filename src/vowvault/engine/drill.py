"""Disaster-recovery drills: really restore a recent backup into a scratch target, check
it against what the backup recorded, measure the recovery time, and clean up."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from vowvault import sources
from vowvault.catalog.models import BackupJob, BackupPolicy, RecoveryJob
from vowvault.domain import BackupStatus, RecoveryType, SourceKind, VerificationStatus
from vowvault.engine.context import Context, log
from vowvault.engine.restore import restore_backup
from vowvault.errors import ConfigError, NotFound, RestoreError


@dataclass
class DrillResult:
    recovery_id: str
    backup_id: str
    policy: str
    rto_seconds: float
    rto_target_seconds: int
    rpo_seconds: float
    passed: bool
    validation: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def pick_backup(ctx: Context, policy: str, backup: str = "latest") -> BackupJob:
    """``latest`` (the newest verified backup), ``random:N`` (a random verified backup of
    the last N days) or a backup id."""
    import secrets

    with ctx.catalog.read() as s:
        if s.execute(sa.select(BackupPolicy.id).where(BackupPolicy.name == policy)
                     ).scalar_one_or_none() is None:
            raise NotFound(f"no policy named {policy!r}; see `vowvault policies list`")
        if backup != "latest" and not backup.startswith("random:"):
            from vowvault.engine.lookup import find_backup

            return find_backup(s, backup)
        query = sa.select(BackupJob).join(BackupPolicy).where(
            BackupPolicy.name == policy, BackupJob.status == BackupStatus.COMPLETED,
            BackupJob.verification_status == VerificationStatus.VERIFIED,
            BackupJob.deletion_date.is_(None))
        if backup.startswith("random:"):
            try:
                days = int(backup.split(":", 1)[1])
            except ValueError:
                days = 0
            if not 1 <= days <= 36600:
                raise ConfigError(f"{backup!r}: write random:N with N a number of days (1 or "
                                  f"more)")
            query = query.where(BackupJob.completed_at >= ctx.clock() - timedelta(days=days))
            jobs = list(s.execute(query).scalars())
            if not jobs:
                raise NotFound(f"policy {policy} has no verified backup in the last {days} "
                               f"days to drill")
            return jobs[secrets.randbelow(len(jobs))]
        job = s.execute(query.order_by(BackupJob.completed_at.desc()).limit(1)
                        ).scalar_one_or_none()
        if job is None:
            raise NotFound(f"policy {policy} has no verified backup to drill")
        return job


def run_drill(ctx: Context, policy: str, backup: str = "latest",
              drill_server: str | None = None, archive_wait: float = 0.0) -> DrillResult:
    """Restore into a temporary directory, or a throw-away database on ``drill_server``
    (default: the source's server), validate, time it, remove it."""
    with ctx.catalog.read() as s:
        kind = s.execute(sa.select(BackupPolicy.source_kind).where(
            BackupPolicy.name == policy)).scalar_one_or_none()
    if kind == SourceKind.POSTGRES_PHYSICAL and backup == "latest":
        return run_pitr_drill(ctx, policy)
    job = pick_backup(ctx, policy, backup)
    with ctx.catalog.read() as s:
        p = s.get(BackupPolicy, job.policy_id)
        assert p is not None
        source, rto_target = dict(p.source_config), p.rto_target_minutes * 60
        kind = p.source_kind
        completed = job.completed_at
    started = time.perf_counter()
    try:
        result = _restore(ctx, job, kind, source, drill_server, archive_wait)
    except Exception as exc:
        _event(ctx, job.id, "drill_failed", {"error": str(exc).splitlines()[0][:500]})
        raise
    rto = time.perf_counter() - started
    rpo = (ctx.clock() - completed).total_seconds() if completed else 0.0
    _record_times(ctx, result.recovery_id, rto, rto_target, rpo)
    log.info("drill of %s: restored backup %s in %.1f s (target %d s), backup age %.0f s",
             policy, job.id, rto, rto_target, rpo)
    passed = rto <= rto_target
    _event(ctx, job.id, "drill_completed" if passed else "drill_failed",
           {"rto_seconds": round(rto, 3), "rto_target_seconds": rto_target,
            "rpo_seconds": round(rpo, 3), "passed": passed})
    return DrillResult(result.recovery_id, str(job.id), policy, round(rto, 3), rto_target,
                       round(rpo, 3), passed, result.validation)


def _record_times(ctx: Context, recovery_id: str, rto: float, rto_target: int, rpo: float,
                  validation: dict[str, Any] | None = None) -> None:
    """A drill's RTO (and its target) and RPO on its recovery row."""
    with ctx.catalog.session() as s:
        rec = s.get(RecoveryJob, uuid.UUID(recovery_id))
        assert rec is not None
        rec.rto_seconds = Decimal(rto).quantize(Decimal("0.001"))
        rec.rto_target_seconds = rto_target
        rec.rpo_seconds = Decimal(rpo).quantize(Decimal("0.001"))
        if validation:
            rec.validation = {**(rec.validation or {}), **validation}


def _event(ctx: Context, job_id: uuid.UUID, event: str, extra: dict[str, Any]) -> None:
    from vowvault.engine import webhooks

    with ctx.catalog.read() as s:
        job = s.get(BackupJob, job_id)
        assert job is not None
        payload = {**webhooks.backup_payload(s, job, event), **extra}
        org_id = job.organization_id
    webhooks.emit(ctx, org_id, event, payload)


def _restore(ctx: Context, job: BackupJob, kind: SourceKind, source: dict[str, Any],
             drill_server: str | None, wait: float) -> Any:
    """Restore into the source driver's scratch target (a throw-away database or
    directory), which is removed whatever happens."""
    with sources.driver(kind).scratch(source, drill_server) as target:
        return restore_backup(ctx, str(job.id), to_dir=target.directory,
                              to_database=target.database,
                              recovery_type=RecoveryType.DR_DRILL, archive_wait=wait)


def random_instant(w: Any) -> dt.datetime:
    """A uniformly random instant of the recoverable window (the union of every base
    backup's span from its end to its last unbroken WAL)."""
    import secrets

    spans = [(b["completed_at"], b["restorable_until"]) for b in w.bases]
    total = sum((e - a).total_seconds() for a, e in spans)
    if total <= 0:
        return max(e for _, e in spans)
    at = secrets.randbelow(max(1, int(total * 1000))) / 1000
    for a, e in spans:
        length = (e - a).total_seconds()
        if at <= length:
            return a + timedelta(seconds=at)
        at -= length
    return spans[-1][1]


def run_pitr_drill(ctx: Context, policy: str, timeout: float = 600.0) -> DrillResult:
    """A point-in-time drill of a physical policy: a throw-away cluster (its own directory
    and port, run as the postgres user) recovered to a random instant of the window, which
    must start, reach the target and pass the policy's ``validation_query``; RTO is the
    time all that took, RPO the archive's lag when the drill started (now minus the end of
    the window: what losing the primary then would have lost). Always cleaned up."""
    import shutil
    import tempfile
    from pathlib import Path

    from vowvault.engine import pitr, wal
    from vowvault.sources.physical import server_owner

    view = wal.physical_policy(ctx, policy)
    began = ctx.clock()
    w = wal.window(ctx, policy)
    if not w.bases or w.latest is None:
        raise NotFound(f"policy {policy} has no base backup to drill: run `vowvault backup "
                       f"run {policy}` first")
    rpo = max(0.0, (began - w.latest).total_seconds())
    instant = random_instant(w)
    with ctx.catalog.read() as s:
        rto_target = int(s.execute(sa.select(BackupPolicy.rto_target_minutes).where(
            BackupPolicy.id == view.id)).scalar_one()) * 60
    tmp = Path(tempfile.mkdtemp(prefix="vowvault-pitr-drill-"))
    owner = server_owner()
    if owner:
        import os

        os.chown(tmp, *owner)
    datadir = tmp / "pgdata"
    started = time.perf_counter()
    try:
        result = pitr.restore_to(ctx, policy, datadir, pitr.Target(time=instant), start=True,
                                 port=pitr.free_port(), timeout=timeout,
                                 validation_query=view.source.get("validation_query"),
                                 recovery_type=RecoveryType.DR_DRILL)
        rows = result.validation.get("rows")
        if view.source.get("validation_query") and not rows:
            raise RestoreError("the policy's validation_query returned no row on the "
                               "recovered cluster")
    except Exception as exc:
        _policy_event(ctx, view, "drill_failed", {
            "error": str(exc).splitlines()[0][:500], "target": instant.isoformat(),
            "rpo_seconds": round(rpo, 3)})
        raise
    finally:
        pitr.stop(datadir)
        shutil.rmtree(tmp, ignore_errors=True)
    rto = time.perf_counter() - started
    assert result.recovery_id is not None
    _record_times(ctx, result.recovery_id, rto, rto_target, rpo,
                  {"point_in_time": instant.isoformat(), "reached": result.reached,
                   **result.validation})
    passed = rto <= rto_target
    log.info("PITR drill of %s: recovered to %s from base backup %s in %.1f s (target %d s), "
             "RPO %.0f s", policy, instant.isoformat(), result.base_backup, rto, rto_target, rpo)
    _policy_event(ctx, view, "drill_completed" if passed else "drill_failed", {
        "rto_seconds": round(rto, 3), "rto_target_seconds": rto_target,
        "rpo_seconds": round(rpo, 3), "target": instant.isoformat(), "passed": passed})
    validation = {"target": instant.isoformat(), "reached": result.reached,
                  "wal_fetched": result.wal_fetched, **result.validation,
                  "erasures_applied": len(result.erasures_applied)}
    return DrillResult(result.recovery_id, result.base_backup, policy, round(rto, 3),
                       rto_target, round(rpo, 3), passed, validation)


def _policy_event(ctx: Context, view: Any, event: str, extra: dict[str, Any]) -> None:
    from vowvault.engine import webhooks

    webhooks.emit(ctx, view.organization_id, event,
                  {"event": event, "policy": view.name, **extra})
