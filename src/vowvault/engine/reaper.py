"""Finding backups and restores whose process died: backups are marked FAILED with their
objects removed, restores FAILED (their target keeps its ``.vowvault-incomplete`` marker).

Who is dead is decided by the owner and the lease (``leases``), never by comparing clocks:
an owner on this host whose pid is gone is dead now; one on this host whose pid lives is
alive, whatever its heartbeat says; an owner elsewhere is dead only once its lease, kept in
the catalog server's clock, has run out.
"""

from __future__ import annotations

import os
import socket
import uuid

import sqlalchemy as sa

from vowvault.catalog import audit
from vowvault.catalog.models import BackupJob, BackupPolicy, BackupStorage, RecoveryJob
from vowvault.domain import BackupStatus, CopyStatus, RecoveryStatus
from vowvault.engine import objects, runs
from vowvault.engine.context import Context, log
from vowvault.engine.leases import expired


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _verdict(host: str | None, pid: int | None, lease_over: bool) -> str | None:
    """Why a job's owner is taken for dead, or None while it may live."""
    if host == socket.gethostname() and pid is not None:
        if pid != os.getpid() and _alive(pid):
            return None  # never while its process lives on this host
        if pid != os.getpid():
            return "its worker process is gone"
    if lease_over:
        return "its lease ran out (no heartbeat)"
    return None


def reap(ctx: Context, *, policy_name: str | None = None) -> list[str]:
    """Mark dead IN_PROGRESS backups FAILED (objects removed first) and dead restores
    FAILED. Returns the ids reaped."""
    mine = runs.running()
    found: list[tuple[objects.StoredBackup, str, str | None]] = []
    with ctx.catalog.read() as s:
        query = sa.select(BackupJob, expired(s, ctx, BackupJob).label("over")).where(
            BackupJob.status == BackupStatus.IN_PROGRESS)
        if policy_name:
            query = query.join(BackupPolicy).where(BackupPolicy.name == policy_name)
        for job, over in s.execute(query):
            if str(job.id) in mine:
                continue  # running in this very process
            why = _verdict(job.worker_host, job.worker_pid, bool(over))
            if why is not None:
                found.append((objects.read_stored(s, job), why, job.owner_token))
        restores = [(r.id, why) for r, over in s.execute(
            sa.select(RecoveryJob, expired(s, ctx, RecoveryJob).label("over")).where(
                RecoveryJob.status == RecoveryStatus.IN_PROGRESS))
            if (why := _verdict(r.worker_host, r.worker_pid, bool(over))) is not None
            and str(r.id) not in mine]
    reaped: list[str] = []
    for stored, why, token in found:
        failed = objects.remove_objects(ctx, stored, reason="reaped")
        if _mark_failed(ctx, stored.id, why, token, failed):
            log.warning("backup %s marked FAILED: %s", stored.id, why)
            reaped.append(str(stored.id))
    for recovery_id, why in restores:
        if _mark_restore_failed(ctx, recovery_id, why):
            log.warning("restore %s marked FAILED: %s", recovery_id, why)
            reaped.append(str(recovery_id))
    return reaped


def _mark_failed(ctx: Context, job_id: uuid.UUID, why: str, token: str | None,
                 failed: list[str]) -> bool:
    with ctx.catalog.session() as s:
        job = s.get(BackupJob, job_id)
        # Taken over (a flow retry) or finished meanwhile: not ours to fail.
        if job is None or job.status != BackupStatus.IN_PROGRESS or job.owner_token != token:
            return False
        now = ctx.clock()
        s.execute(sa.update(BackupStorage).where(
            BackupStorage.backup_job_id == job_id, BackupStorage.status != CopyStatus.DELETED,
            BackupStorage.storage_url.not_in(failed))
            .values(status=CopyStatus.DELETED, deletion_date=now))
        job.status = BackupStatus.FAILED
        job.completed_at = now
        job.owner_token = None
        job.error_message = f"abandoned: {why}; its partial objects were removed"
        audit.record(s, actor=ctx.settings.actor, action="backup.reaped",
                     target_type="backup", target_id=job.id,
                     organization_id=job.organization_id, summary=job.error_message)
        return True


def _mark_restore_failed(ctx: Context, recovery_id: uuid.UUID, why: str) -> bool:
    with ctx.catalog.session() as s:
        rec = s.get(RecoveryJob, recovery_id)
        if rec is None or rec.status != RecoveryStatus.IN_PROGRESS:
            return False
        rec.status = RecoveryStatus.FAILED
        rec.completed_at = ctx.clock()
        rec.owner_token = None
        rec.error_message = f"abandoned: {why}; the target holds what was written so far " \
                            f"(marked .vowvault-incomplete)"
        audit.record(s, actor=ctx.settings.actor, action="restore.reaped",
                     target_type="recovery", target_id=rec.id,
                     organization_id=rec.organization_id, summary=rec.error_message)
        return True
