"""Proving a stored backup again and recording what each copy holds.

Every copy on an available target is read back on its own (``repository.verify``) and
gets its health: INTACT, DAMAGED, MISSING or UNREACHABLE; a target whose repository marker
is missing is UNREACHABLE, never damage. Whatever the earlier verdicts, every copy is
re-read, so a verify can bring a backup back. The backup's status follows from its copies
and from the backups it takes files from:

- restorable (COMPLETED, verified now) when a copy is intact, or when the copies together
  hold every frame intact (a restore fails over frame by frame; ``vowvault backup repair`` makes
  each copy whole again), and every byte it refers to in earlier backups reads back;
- CORRUPTED when what was checked cannot give it back; the backups that take files from it
  are marked too (and come back with it);
- unchanged when no copy could be reached: an outage proves nothing.

The catalog is read in one short transaction and written in another; the copies are read
in between.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vowvault import sources
from vowvault.catalog import audit
from vowvault.catalog.models import BackupJob, BackupStorage
from vowvault.domain import BackupStatus, CopyHealth, CopyStatus, VerificationStatus
from vowvault.engine import objects
from vowvault.engine.context import Context, log
from vowvault.engine.kek import KeyRecord, org_keys, unwrap
from vowvault.errors import IntegrityError, RestoreError, StorageError, VowvaultError
from vowvault.repository.keyobject import KeyObject
from vowvault.repository.reader import BackupReader
from vowvault.repository.verify import (
    CopyVerdict,
    verify_copy,
    verify_references,
    verify_together,
)


@dataclass
class VerifyReport:
    backup_id: str
    copies: list[CopyVerdict] = field(default_factory=list)
    restorable: bool | None = None
    """None: nothing could be read, so nothing is known."""
    problem: str | None = None
    """Why it is not restorable."""
    together: bool = False
    """Restorable only with the copies helping each other (no single copy is intact)."""
    references_checked: bool = True
    """False: only the backup's own objects were read (scrub, repair), not what it takes
    from earlier backups (their files, their index chunks)."""

    @property
    def intact(self) -> bool:
        return bool(self.copies) and all(c.ok for c in self.copies) and \
            self.restorable is True

    @property
    def corrupted(self) -> list[CopyVerdict]:
        return [c for c in self.copies if c.health in (CopyHealth.DAMAGED, CopyHealth.MISSING)]


class VerifyFailed(IntegrityError):
    """A copy reads back wrong or the backup is not restorable (with the whole report)."""

    def __init__(self, message: str, report: VerifyReport) -> None:
        super().__init__(message)
        self.report = report


class VerifyIncomplete(StorageError):
    """No copy could be read, so nothing was proven (with the whole report)."""

    def __init__(self, message: str, report: VerifyReport) -> None:
        super().__init__(message)
        self.report = report


def verify_stored(ctx: Context, stored: objects.StoredBackup, keys: dict[int, KeyRecord], *,
                  check_archive: bool = True, references: bool = True,
                  only: list[str] | None = None) -> VerifyReport:
    """Verify the copies of a backup (``only``: just these targets) and, with
    ``references``, every byte it takes from earlier backups. No catalog transaction is
    open meanwhile."""
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

    report = VerifyReport(str(stored.id), references_checked=references or not stored.references)
    available, unavailable = objects.readable_copies(ctx, stored)
    if only is not None:
        available = [c for c in available if c.url in only]
        unavailable = [s for s in unavailable if s.url in only]
    for i, copy in enumerate(available):
        report.copies.append(verify_copy(
            copy, stored.location, dek, expected_manifest_sha=stored.manifest_sha256,
            key_opens=key_opens, deep_check=deep(check_archive and i == 0)))
    report.copies += [CopyVerdict(s.url, CopyHealth.UNREACHABLE, s.problem)
                      for s in unavailable]
    if not report.copies:
        raise StorageError(f"backup {stored.id} has no stored copy to verify")
    wanting = [c for c in available if not next(v for v in report.copies
                                                if v.url == c.url).unreachable]
    if any(v.ok for v in report.copies):
        report.restorable = True
    elif len(report.corrupted) >= 2:
        together = verify_together(wanting, stored.location, dek,
                                   expected_manifest_sha=stored.manifest_sha256,
                                   deep_check=deep(check_archive))
        report.restorable, report.together = together.restorable, together.restorable
        report.problem = together.problem
    if not report.restorable:
        if any(v.unreachable for v in report.copies):
            report.restorable = None  # the copy out of reach may be the good one
            report.problem = report.problem or "no copy could be read"
        elif report.corrupted:
            report.restorable = False
            report.problem = report.problem or report.corrupted[0].problem
    if report.restorable and references and stored.references:
        report.restorable, report.problem = _check_references(ctx, stored, wanting, dek)
    return report


def _check_references(ctx: Context, stored: objects.StoredBackup, copies: list[Any],
                      dek: bytes) -> tuple[bool | None, str | None]:
    """Every file the tree takes from earlier backups, read from them (with their copies
    helping each other): (restorable, why not). A referenced backup found wanting is
    verified and recorded; an outage there leaves the question open."""
    try:
        refs = objects.open_references(ctx, stored.references,
                                       data_ids=stored.data_references)
    except (RestoreError, VowvaultError) as exc:
        return False, str(exc)
    reader = BackupReader(stored.location, dek, copies,
                          expected_manifest_sha=stored.manifest_sha256)
    problem = verify_references(reader, refs)
    if problem is None:
        return True, None
    damaged = False
    for ref, ref_reader in refs.items():
        if ref_reader.problems:  # the earlier backup itself is wanting: find out how
            log.warning("backup %s, which %s takes files from, reads back wrong: verifying "
                        "it", ref, stored.id)
            damaged |= any(p.health != CopyHealth.UNREACHABLE for p in ref_reader.problems)
            verify_backup(ctx, ref, raise_on_problem=False)
    why = f"files it takes from earlier backups cannot be read: {problem}"
    return (False if damaged or not any(r.problems for r in refs.values()) else None), why


def verify_backup(ctx: Context, backup_ref: str, *, raise_on_problem: bool = True,
                  only: list[str] | None = None) -> VerifyReport:
    """``vowvault backup verify BACKUP``: re-verify a stored backup now, whatever its earlier
    verdict, and record what was found."""
    from vowvault.engine.lookup import find_backup

    with ctx.catalog.read() as s:
        job = find_backup(s, backup_ref)
        if job.status not in (BackupStatus.COMPLETED, BackupStatus.CORRUPTED):
            raise VowvaultError(f"backup {job.id} is {job.status.value}: only completed "
                                f"backups can be verified")
        stored = objects.read_stored(s, job)
        keys = org_keys(s, job.organization_id)
    report = verify_stored(ctx, stored, keys, only=only)
    record(ctx, report, stored.id)
    return _raise_on_problem(report, stored.id) if raise_on_problem else report


def record(ctx: Context, report: VerifyReport, job_id: uuid.UUID) -> None:
    """Each copy's health, the backup's status derived from it (and its dependants'), in
    one transaction; then the webhook event, if any."""
    from vowvault.engine import webhooks

    now = ctx.clock()
    event = None
    with ctx.catalog.session() as s:
        job = s.get(BackupJob, job_id)
        assert job is not None
        for c in report.copies:
            values: dict[str, Any] = {"health": c.health, "checked_at": now,
                                      "problem": c.problem}
            if c.ok:
                values.update(status=CopyStatus.VERIFIED, verified_at=now)
            s.execute(sa.update(BackupStorage).where(
                BackupStorage.backup_job_id == job.id, BackupStorage.storage_url == c.url,
                BackupStorage.status.in_([CopyStatus.STORED, CopyStatus.VERIFIED]))
                .values(**values))
        good = sum(c.ok for c in report.copies)
        broken_ref = None if report.references_checked else _corrupted_reference(s, job)
        if report.restorable and broken_ref is not None:
            # Its own objects read back intact, but it was not read with what it takes from
            # a backup known damaged: it stays as it is until that one is restorable again.
            action = "backup.verified_own_objects"
            summary = (f"own objects intact on {good} of {len(report.copies)} copies; still "
                       f"depends on backup {broken_ref}, which is damaged")
        elif report.restorable is None:
            action = "backup.verify_unreachable"
            summary = "no copy could be reached: " + "; ".join(
                f"{c.url}: {c.problem}" for c in report.copies)
        elif report.restorable:
            was = job.status
            job.status = BackupStatus.COMPLETED
            job.verification_status = VerificationStatus.VERIFIED
            job.verified_at = now
            if report.corrupted:
                bad = report.corrupted[0]
                job.error_message = (f"copy {bad.url} {bad.health.value.lower()}: {bad.problem}"
                                     f"; restorable from the other copies (`vowvault backup repair "
                                     f"{job.id}`)")
            elif was == BackupStatus.CORRUPTED:
                job.error_message = None
            action = "backup.verified"
            summary = f"verified restorable: intact on {good} of {len(report.copies)} copies" \
                + (" (only with the copies together)" if report.together else "")
            if was == BackupStatus.CORRUPTED:
                _dependants(s, job, now, restored=True)
        else:
            job.verification_status = VerificationStatus.FAILED
            job.status = BackupStatus.CORRUPTED
            job.error_message = f"not restorable: {report.problem}"
            action, summary = "backup.verify_failed", job.error_message
            event = (job.organization_id, webhooks.backup_payload(s, job, "verification_failed"),
                     job.is_wedding_day_backup)
            _dependants(s, job, now, restored=False)
        audit.record(s, actor=ctx.settings.actor, action=action, target_type="backup",
                     target_id=job.id, organization_id=job.organization_id,
                     summary=summary[:1000])
    if event is not None:
        org_id, payload, escalation = event
        webhooks.emit(ctx, org_id, "verification_failed", payload, escalation=escalation)


def _corrupted_reference(s: Session, job: BackupJob) -> str | None:
    """A backup ``job`` takes files or index entries from that is CORRUPTED, if any."""
    refs = [uuid.UUID(r) for r in (job.source_info or {}).get("references", [])]
    if not refs:
        return None
    found = s.execute(sa.select(BackupJob.id).where(
        BackupJob.id.in_(refs), BackupJob.status == BackupStatus.CORRUPTED).limit(1)
    ).scalar_one_or_none()
    return str(found) if found is not None else None


def _dependants(s: Session, job: BackupJob, now: Any, *, restored: bool) -> None:
    """Backups that take files from ``job`` share its fate: marked CORRUPTED with it, and
    back (to be verified again) when it is restorable again."""
    marker = f"depends on backup {job.id}"
    candidates = s.execute(sa.select(BackupJob).where(
        BackupJob.policy_id == job.policy_id, BackupJob.id != job.id,
        BackupJob.status.in_([BackupStatus.COMPLETED, BackupStatus.CORRUPTED]),
        BackupJob.deletion_date.is_(None))).scalars()
    for other in candidates:
        if str(job.id) not in (other.source_info or {}).get("references", []):
            continue
        if not restored and other.status == BackupStatus.COMPLETED:
            other.status = BackupStatus.CORRUPTED
            other.verification_status = VerificationStatus.FAILED
            other.error_message = f"not restorable: {marker}, which is damaged"
            _dependants(s, other, now, restored=False)
        elif restored and other.status == BackupStatus.CORRUPTED and \
                marker in (other.error_message or ""):
            other.status = BackupStatus.COMPLETED
            other.verification_status = VerificationStatus.PENDING
            other.error_message = None


def _raise_on_problem(report: VerifyReport, job_id: Any) -> VerifyReport:
    if report.restorable is False:
        bad = report.corrupted[0] if report.corrupted else None
        where = f" on {bad.url}" if bad else ""
        raise VerifyFailed(f"backup {job_id} is corrupted{where}: {report.problem}", report)
    if report.corrupted:
        bad = report.corrupted[0]
        raise VerifyFailed(f"backup {job_id}: copy {bad.url} is {bad.health.value.lower()}: "
                           f"{bad.problem}; the backup is restorable from the other copies: "
                           f"run `vowvault backup repair {job_id}`", report)
    if report.restorable is None:
        raise VerifyIncomplete(f"no copy of backup {job_id} could be read: "
                               + "; ".join(f"{c.url}: {c.problem}" for c in report.copies),
                               report)
    return report
