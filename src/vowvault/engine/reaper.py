"""Finding backups whose process died, marking them FAILED and removing their objects."""

from __future__ import annotations

import os
import socket

import sqlalchemy as sa

from vowvault.catalog import audit
from vowvault.catalog.enums import BackupStatus
from vowvault.catalog.models import BackupJob, BackupPolicy
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
    worker process on this host is gone. Returns the ids reaped."""
    from vowvault.engine.backup import _RUNS, _cleanup

    now = ctx.clock()
    host = socket.gethostname()
    reaped: list[str] = []
    with ctx.catalog.session() as s:
        query = sa.select(BackupJob).where(BackupJob.status == BackupStatus.IN_PROGRESS)
        if policy_name:
            query = query.join(BackupPolicy).where(BackupPolicy.name == policy_name)
        for job in s.execute(query).scalars():
            if str(job.id) in _RUNS:
                continue  # running in this very process
            beat = job.heartbeat_at or job.started_at or job.created_at
            stale = beat is not None and now - beat > ctx.stale_after
            gone = (job.worker_host == host and job.worker_pid is not None
                    and job.worker_pid != os.getpid() and not _alive(job.worker_pid))
            if not (stale or gone):
                continue
            why = ("its worker process is gone" if gone else
                   f"no heartbeat since {beat:%Y-%m-%d %H:%M:%S} UTC")
            _cleanup(ctx, s, job, reason="reaped")
            job.status = BackupStatus.FAILED
            job.completed_at = now
            job.error_message = f"abandoned: {why}; its partial objects were removed"
            audit.record(s, actor=ctx.settings.actor, action="backup.reaped",
                         target_type="backup", target_id=job.id,
                         organization_id=job.organization_id, summary=job.error_message)
            log.warning("backup %s marked FAILED: %s", job.id, why)
            reaped.append(str(job.id))
    return reaped
