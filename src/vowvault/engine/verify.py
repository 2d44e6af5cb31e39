"""Proving a stored backup again: read every object of every copy back and check everything
(``repository.verify``), then record the verdict.

The catalog is read in one short transaction and written in another; the copies are read
in between. A copy that cannot be reached is reported as such, never as corrupted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from vowvault import sources
from vowvault.catalog import audit
from vowvault.catalog.models import BackupJob, BackupStorage
from vowvault.domain import BackupStatus, CopyStatus, VerificationStatus
from vowvault.engine import objects
from vowvault.engine.context import Context
from vowvault.engine.kek import KeyRecord, org_keys, unwrap
from vowvault.errors import IntegrityError, StorageError, VowvaultError
from vowvault.repository.keyobject import KeyObject
from vowvault.repository.reader import BackupReader
from vowvault.repository.verify import CopyVerdict, verify_copy


@dataclass
class VerifyReport:
    backup_id: str
    copies: list[CopyVerdict] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return bool(self.copies) and all(c.ok for c in self.copies)

    @property
    def corrupted(self) -> list[CopyVerdict]:
        return [c for c in self.copies if not c.ok and not c.unreachable]


def verify_stored(ctx: Context, stored: objects.StoredBackup, keys: dict[int, KeyRecord], *,
                  check_archive: bool = True) -> VerifyReport:
    """Verify every copy of a backup (no catalog transaction is open meanwhile)."""
    dek = objects.data_key(ctx, stored)

    def key_opens(key: KeyObject) -> bool:
        """The key object holds this backup's data key: the catalog's bytes, or (after an
        interrupted rotation) another wrapping of the same key."""
        if key.wrapped_dek == stored.wrapped_dek:
            return True
        record = keys.get(key.version)
        try:
            return record is not None and unwrap(ctx, record, key.wrapped_dek,
                                                  stored.id) == dek
        except VowvaultError:
            return False

    def deep(first: bool) -> Any:
        def check(reader: BackupReader) -> set[str]:
            return sources.driver(reader.manifest.source_kind).check(reader, deep=first)
        return check

    report = VerifyReport(str(stored.id))
    for i, copy in enumerate(objects.copies(ctx, stored)):
        report.copies.append(verify_copy(
            copy, stored.location, dek, expected_manifest_sha=stored.manifest_sha256,
            key_opens=key_opens, deep_check=deep(check_archive and i == 0)))
    if not report.copies:
        raise StorageError(f"backup {stored.id} has no stored copy to verify")
    return report


def verify_backup(ctx: Context, backup_ref: str) -> VerifyReport:
    """``vowvault verify BACKUP``: re-verify a stored backup now, and record the verdict."""
    from vowvault.engine.lookup import find_backup

    with ctx.catalog.read() as s:
        job = find_backup(s, backup_ref)
        if job.status not in (BackupStatus.COMPLETED, BackupStatus.CORRUPTED):
            raise VowvaultError(f"backup {job.id} is {job.status.value}: only completed "
                                f"backups can be verified")
        stored = objects.read_stored(s, job)
        keys = org_keys(s, job.organization_id)
    report = verify_stored(ctx, stored, keys)
    event = _record(ctx, report, stored.id)
    if event is not None:
        from vowvault.engine import webhooks

        org_id, name, payload, escalation = event
        webhooks.emit(ctx, org_id, name, payload, escalation=escalation)
    return _raise_on_problem(report, stored.id)


def _record(ctx: Context, report: VerifyReport, job_id: Any) -> tuple[Any, ...] | None:
    """The verdict in the catalog and the audit log; the webhook event to send, if any."""
    from vowvault.engine import webhooks

    now = ctx.clock()
    with ctx.catalog.session() as session:
        job = session.get(BackupJob, job_id)
        assert job is not None
        for c in report.copies:
            if c.unreachable:
                continue
            session.execute(sa.update(BackupStorage).where(
                BackupStorage.backup_job_id == job.id, BackupStorage.storage_url == c.url,
                BackupStorage.status.in_([CopyStatus.STORED, CopyStatus.VERIFIED,
                                          CopyStatus.FAILED]))
                .values(status=CopyStatus.VERIFIED if c.ok else CopyStatus.FAILED,
                        verified_at=now))
        event = None
        if report.corrupted:
            job.verification_status = VerificationStatus.FAILED
            job.status = BackupStatus.CORRUPTED
            job.error_message = f"verification failed on {report.corrupted[0].url}: " \
                                f"{report.corrupted[0].problem}"
            action, summary = "backup.verify_failed", job.error_message
            event = (job.organization_id, "verification_failed",
                     webhooks.backup_payload(session, job, "verification_failed"),
                     job.is_wedding_day_backup)
        elif any(c.ok for c in report.copies):
            job.verification_status = VerificationStatus.VERIFIED
            job.verified_at = now
            if job.status == BackupStatus.CORRUPTED:
                job.status = BackupStatus.COMPLETED  # every copy reads back intact again
            action = "backup.verified"
            summary = f"verified intact on {sum(c.ok for c in report.copies)} of " \
                      f"{len(report.copies)} copies"
        else:
            return None
        audit.record(session, actor=ctx.settings.actor, action=action, target_type="backup",
                     target_id=job.id, organization_id=job.organization_id, summary=summary)
    return event


def _raise_on_problem(report: VerifyReport, job_id: Any) -> VerifyReport:
    if report.corrupted:
        bad = report.corrupted[0]
        raise IntegrityError(f"backup {job_id} is corrupted on {bad.url}: {bad.problem}")
    if not any(c.ok for c in report.copies):
        raise StorageError(f"no copy of backup {job_id} could be read: "
                           + "; ".join(f"{c.url}: {c.problem}" for c in report.copies))
    return report
