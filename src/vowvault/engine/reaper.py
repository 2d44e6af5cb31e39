"""Finding backups whose process died, marking them FAILED and removing their objects."""

from __future__ import annotations

import os
import socket
import uuid

import sqlalchemy as sa

from vowvault.catalog import audit
from vowvault.catalog.models import BackupJob, BackupPolicy, BackupStorage
from vowvault.domain import BackupStatus, CopyStatus
from vowvault.engine import objects, runs
from vowvault.engine.context import Context, log


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap(ctx: Context, *, policy_name: str | None = None) -> list[str]:
    """Mark dead IN_PROGRESS jobs FAILED: no heartbeat for ``ctx.stale_after``, or their
    worker process on this host is gone. Their objects are removed first. Returns the ids
    reaped."""
    now = ctx.clock()
    host = socket.gethostname()
    mine = runs.running()
    found: list[tuple[objects.StoredBackup, str]] = []
    with ctx.catalog.read() as s:
        query = sa.select(BackupJob).where(BackupJob.status == BackupStatus.IN_PROGRESS)
        if policy_name:
            query = query.join(BackupPolicy).where(BackupPolicy.name == policy_name)
        for job in s.execute(query).scalars():
            if str(job.id) in mine:
                continue  # running in this very process
            beat = job.heartbeat_at or job.started_at or job.created_at
            stale = beat is not None and now - beat > ctx.stale_after
            gone = (job.worker_host == host and job.worker_pid is not None
                    and job.worker_pid != os.getpid() and not _alive(job.worker_pid))
            if not (stale or gone):
                continue
            why = ("its worker process is gone" if gone else
                   f"no heartbeat since {beat:%Y-%m-%d %H:%M:%S} UTC")
            found.append((objects.read_stored(s, job), why))
    reaped: list[str] = []
    for stored, why in found:
        failed = objects.remove_objects(ctx, stored, reason="reaped")
        if _mark_failed(ctx, stored.id, why, failed):
            log.warning("backup %s marked FAILED: %s", stored.id, why)
            reaped.append(str(stored.id))
    return reaped


def _mark_failed(ctx: Context, job_id: uuid.UUID, why: str, failed: list[str]) -> bool:
    with ctx.catalog.session() as s:
        job = s.get(BackupJob, job_id)
        if job is None or job.status != BackupStatus.IN_PROGRESS:
            return False
        now = ctx.clock()
        s.execute(sa.update(BackupStorage).where(
            BackupStorage.backup_job_id == job_id, BackupStorage.status != CopyStatus.DELETED,
            BackupStorage.storage_url.not_in(failed))
            .values(status=CopyStatus.DELETED, deletion_date=now))
        job.status = BackupStatus.FAILED
        job.completed_at = now
        job.error_message = f"abandoned: {why}; its partial objects were removed"
        audit.record(s, actor=ctx.settings.actor, action="backup.reaped",
                     target_type="backup", target_id=job.id,
                     organization_id=job.organization_id, summary=job.error_message)
        return True
