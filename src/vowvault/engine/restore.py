"""Restores: stream a backup back into a database or a directory, checking as it goes,
then prove the result against what was recorded at backup time.

The catalog is touched in short transactions only: one records the recovery (and reads
what the data plane needs: the backup's copies, its key, the erasures to replay), one
records how it ended. The bytes move in between: the source's driver (``sources``) writes
the backup back through the data plane's readers.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from vowvault import sources
from vowvault.catalog import audit
from vowvault.catalog.models import BackupJob, BackupStorage, RecoveryJob
from vowvault.domain import BackupStatus, CopyHealth, CopyStatus, RecoveryStatus, RecoveryType
from vowvault.engine import erasure, objects
from vowvault.engine.context import Context, log
from vowvault.engine.leases import Lease, new_token, owner_fields
from vowvault.engine.lookup import find_backup
from vowvault.errors import ConfigError, RestoreError
from vowvault.repository.reader import BackupReader
from vowvault.sources.base import RestoreTarget


@dataclass
class RestoreResult:
    recovery_id: str
    backup_id: str
    target: str
    bytes_restored: int
    duration_seconds: float
    validation: dict[str, Any] = field(default_factory=dict)
    copy_used: str = ""
    skipped_copies: list[str] = field(default_factory=list)
    """Copies that could not be read, so another one was used."""
    erasures_applied: list[dict[str, Any]] = field(default_factory=list)
    """Erasure requests replayed before the data was handed over."""
    served: dict[str, dict[str, int]] = field(default_factory=dict)
    """Copy URL -> object kind -> frames it served (several copies when one was wanting)."""

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def restore_backup(ctx: Context, backup_ref: str, *, to_dir: Path | None = None,
                   to_database: str | None = None, force: bool = False,
                   password: str | None = None, recovery_type: RecoveryType =
                   RecoveryType.FULL_RESTORE, archive_wait: float = 0.0,
                   emergency_role: str | None = None,
                   preserve_owners: bool = False,
                   erasures_replayed_by_caller: bool = False) -> RestoreResult:
    """Restore one backup. Data in an archive tier is restored (rehydrated) first: the
    restore waits ``archive_wait`` seconds for it, or fails saying it was started.

    ``emergency_role`` makes it an emergency recovery into production: only the roles
    admin, owner and emergency_contact may (the same rule as the catalog's
    emergency_recovery_access policy); it replaces what the target holds, is recorded as an
    emergency recovery, and raises a CRITICAL event (an escalated webhook and log line).

    The recovery carries its owner and a lease (``leases``): a restore whose process dies is
    reaped FAILED, and its target keeps the marker that says it is incomplete.

    ``erasures_replayed_by_caller``: the caller replays the erasure requests once what it
    restores is running (a point-in-time restore, after recovery: ``engine.pitr``); the
    source is not given them."""
    if (to_dir is None) == (to_database is None):
        raise ConfigError("give exactly one of --to-dir PATH or --to-database DSN")
    if emergency_role is not None:
        if emergency_role not in EMERGENCY_ROLES:
            raise ConfigError(f"emergency recovery needs the role admin, owner or "
                              f"emergency_contact, not {emergency_role!r}")
        recovery_type, force = RecoveryType.EMERGENCY, True
    target = RestoreTarget(directory=to_dir, database=to_database, password=password,
                           force=force, preserve_owners=preserve_owners
                           and recovery_type != RecoveryType.DR_DRILL)
    token = new_token()
    started = time.perf_counter()
    with ctx.catalog.session() as s:
        job = find_backup(s, backup_ref)
        if to_dir is not None and recovery_type != RecoveryType.DR_DRILL:
            _refuse_inside_source(to_dir, (job.source_info or {}).get("path"))
        if job.status != BackupStatus.COMPLETED:
            raise RestoreError(f"backup {job.id} is {job.status.value}"
                               + (f" ({job.error_message})" if job.error_message else "")
                               + ": only COMPLETED backups can be restored (`vowvault backup "
                                 f"verify {job.id}` checks every copy again)")
        recovery = RecoveryJob(id=uuid.uuid4(), organization_id=job.organization_id,
                               backup_job_id=job.id, recovery_type=recovery_type,
                               is_emergency_recovery=emergency_role is not None,
                               requester_role=emergency_role,
                               status=RecoveryStatus.IN_PROGRESS, requested_by=ctx.settings.actor,
                               target_kind="DATABASE" if to_database else "DIRECTORY",
                               target_description=target.describe(),
                               started_at=ctx.clock(), **owner_fields(s, ctx, token))
        s.add(recovery)
        audit.record(s, actor=ctx.settings.actor, action="restore.start", target_type="backup",
                     target_id=job.id, organization_id=job.organization_id,
                     summary=f"restore to {recovery.target_description}")
        recovery_id, job_id = recovery.id, job.id
        stored = objects.read_stored(s, job)
        erasures = erasure.replay_specs(s, job)
    if emergency_role is not None:
        _emergency_event(ctx, job_id, "started", recovery_id, emergency_role)
    reader: BackupReader | None = None
    references: dict[str, BackupReader] = {}
    lease = Lease(ctx, RecoveryJob, recovery_id, token).start()
    try:
        reader = objects.open_reader(ctx, stored)
        reader.ensure_readable(wait=archive_wait)
        driver = sources.driver(reader.manifest.source_kind)
        references = objects.open_references(ctx, stored.references,
                                             archive_wait=archive_wait,
                                             data_ids=stored.data_references)
        outcome = driver.restore(reader, references, target,
                                 [] if erasures_replayed_by_caller else erasures, ctx.progress)
        validation = {**outcome.validation, "erasures_applied": len(outcome.erasures_applied)}
    except BaseException as exc:
        lease.stop()
        if reader is not None:
            record_problems(ctx, {stored.id: reader, **_ids(references)})
        _finish(ctx, recovery_id, started, error=exc)
        if emergency_role is not None:
            _emergency_event(ctx, job_id, f"failed: {exc}", recovery_id, emergency_role)
        raise
    lease.stop()
    assert reader.copy is not None
    record_problems(ctx, {stored.id: reader, **_ids(references)})
    result = RestoreResult(str(recovery_id), str(job_id), target.describe(),
                           outcome.bytes_restored, round(time.perf_counter() - started, 3),
                           validation, reader.copy.url, reader.skipped,
                           outcome.erasures_applied, reader.served)
    _finish(ctx, recovery_id, started, result=result)
    if emergency_role is not None:
        _emergency_event(ctx, job_id, "completed", recovery_id, emergency_role)
    if recovery_type in (RecoveryType.FULL_RESTORE, RecoveryType.POINT_IN_TIME):
        from vowvault.engine import webhooks

        with ctx.catalog.read() as s:
            job = s.get(BackupJob, job_id)
            assert job is not None
            payload = {**webhooks.backup_payload(s, job, "restore_completed"),
                       "recovery_id": str(recovery_id), "target": result.target,
                       "duration_seconds": result.duration_seconds}
            org_id = job.organization_id
        webhooks.emit(ctx, org_id, "restore_completed", payload)
    return result


def _ids(references: dict[str, BackupReader]) -> dict[uuid.UUID, BackupReader]:
    return {uuid.UUID(k): v for k, v in references.items()}


def record_problems(ctx: Context, readers: dict[uuid.UUID, BackupReader]) -> None:
    """What a read found wrong with a copy becomes that copy's health (a damaged frame, a
    missing object); the next verify or scrub looks again."""
    found = [(job_id, p) for job_id, r in readers.items() for p in r.problems
             if p.health in (CopyHealth.DAMAGED, CopyHealth.MISSING)]
    if not found:
        return
    now = ctx.clock()
    with ctx.catalog.session() as s:
        for job_id, p in found:
            s.execute(sa.update(BackupStorage).where(
                BackupStorage.backup_job_id == job_id, BackupStorage.storage_url == p.url,
                BackupStorage.status.in_([CopyStatus.STORED, CopyStatus.VERIFIED]))
                .values(health=p.health, checked_at=now, problem=p.message[:1000]))
    log.warning("restore found %d problems on copies; recorded (see `vowvault backup show`)",
                len(found))


def _refuse_inside_source(directory: Path, source: object) -> None:
    """A restore into the tree the backup was taken of (not the tree itself, which is how
    one puts it back) would be backed up with it from then on: refused, before anything is
    recorded."""
    if not isinstance(source, str) or not source:
        return
    root, there = Path(source).resolve(), directory.resolve()
    if there != root and there.is_relative_to(root):
        raise ConfigError(f"{directory} is inside {source}, the directory this backup was "
                          f"taken of: its next backups would hold the restored copy too; "
                          f"restore outside it (or into {source} itself to put it back)")


EMERGENCY_ROLES = ("admin", "owner", "emergency_contact")


def _emergency_event(ctx: Context, job_id: uuid.UUID, outcome: str, recovery_id: uuid.UUID,
                     role: str) -> None:
    from vowvault.engine import webhooks

    with ctx.catalog.session() as s:
        job = s.get(BackupJob, job_id)
        assert job is not None
        payload = {**webhooks.backup_payload(s, job, "emergency_recovery"),
                   "recovery_id": str(recovery_id), "outcome": outcome, "role": role,
                   "requested_by": ctx.settings.actor, "severity": "CRITICAL"}
        org_id = job.organization_id
        audit.record(s, actor=ctx.settings.actor, actor_role=role,
                     action="restore.emergency", target_type="recovery",
                     target_id=recovery_id, organization_id=org_id,
                     summary=f"EMERGENCY recovery of backup {job_id}: {outcome}")
    log.critical("EMERGENCY recovery of backup %s by %s (%s): %s", job_id,
                 ctx.settings.actor, role, outcome)
    webhooks.emit(ctx, org_id, "emergency_recovery", payload, escalation=True)


def _finish(ctx: Context, recovery_id: uuid.UUID, started: float, *,
            result: RestoreResult | None = None, error: BaseException | None = None) -> None:
    duration = Decimal(time.perf_counter() - started).quantize(Decimal("0.001"))
    with ctx.catalog.session() as s:
        rec = s.get(RecoveryJob, recovery_id)
        assert rec is not None
        if rec.status != RecoveryStatus.IN_PROGRESS:  # reaped meanwhile: it says so already
            log.error("restore %s ended after it was taken for dead: %s", recovery_id,
                      rec.error_message)
            return
        rec.completed_at = ctx.clock()
        rec.owner_token = None
        rec.duration_seconds = duration
        if result is not None:
            rec.status = RecoveryStatus.COMPLETED
            rec.bytes_restored = result.bytes_restored
            rec.validation = result.validation
            rec.storage_used = result.copy_used
            if result.skipped_copies:
                rec.validation = {**result.validation,
                                  "copies_unreachable": result.skipped_copies}
            rec.erasures_applied = result.erasures_applied
            action, summary = "restore.completed", (f"restored {result.bytes_restored} bytes "
                                                    f"to {result.target}, validated")
        else:
            rec.status = RecoveryStatus.FAILED
            rec.error_message = str(error).strip().splitlines()[0][:1000] if str(error) \
                else error.__class__.__name__
            action, summary = "restore.failed", rec.error_message
        audit.record(s, actor=ctx.settings.actor, action=action, target_type="recovery",
                     target_id=recovery_id, organization_id=rec.organization_id,
                     summary=summary)
