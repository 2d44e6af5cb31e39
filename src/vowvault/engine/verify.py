"""Proving a stored backup: read every object of every copy back and check everything.

Checked: the key object unwraps to the data key; every frame's tag (with its position and
the final-frame flag); frame sizes; plaintext sizes and SHA-256 against the manifest; the
manifest against the catalog; for file trees every file's SHA-256; for database dumps that
``pg_restore`` reads the whole archive. A copy that cannot be reached is reported as such,
never as corrupted.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vowvault.catalog import audit
from vowvault.catalog.enums import BackupStatus, CopyStatus, VerificationStatus
from vowvault.catalog.models import BackupJob, BackupStorage, EncryptionKey, Organization
from vowvault.engine.context import Context, log
from vowvault.engine.keyring import data_key, unwrap
from vowvault.engine.objects import Copy, copies, load_manifest, object_name, read_object
from vowvault.errors import IntegrityError, ObjectNotFound, StorageError, VowvaultError
from vowvault.sources.directory import parse_index


@dataclass
class CopyReport:
    url: str
    ok: bool
    problem: str | None = None
    unreachable: bool = False
    bytes_read: int = 0


@dataclass
class VerifyReport:
    backup_id: str
    copies: list[CopyReport] = field(default_factory=list)
    events: list[tuple[Any, str, dict[str, Any], bool]] = field(default_factory=list)
    """Webhook events to send once the verdict is committed."""

    @property
    def intact(self) -> bool:
        return bool(self.copies) and all(c.ok for c in self.copies)

    @property
    def corrupted(self) -> list[CopyReport]:
        return [c for c in self.copies if not c.ok and not c.unreachable]


def verify_job(ctx: Context, session: Session, job: BackupJob, *, dek: bytes | None = None,
               expected_manifest_sha: str | None = None, record: bool = True,
               check_archive: bool = True, raise_on_problem: bool = True) -> VerifyReport:
    """Verify every copy. With ``record``, the catalog and audit log get the verdict; unless
    ``raise_on_problem`` is false, raises IntegrityError when any copy is corrupted and
    StorageError when none could be read."""
    org = session.get(Organization, job.organization_id)
    assert org is not None
    if dek is None:
        dek = data_key(ctx, session, org, job.encryption_key_id, job.wrapped_dek, job.id)
    expected_sha = expected_manifest_sha or job.manifest_sha256
    report = VerifyReport(str(job.id))

    def key_opens(doc: dict[str, Any]) -> bool:
        """The key object holds this backup's data key: the catalog's bytes, or (after an
        interrupted rotation) another wrapping of the same key."""
        wrapped = base64.b64decode(doc["wrapped_dek"])
        if wrapped == job.wrapped_dek:
            return True
        version = int(doc.get("kek", {}).get("version", 0))
        row = session.execute(sa.select(EncryptionKey).where(
            EncryptionKey.organization_id == job.organization_id,
            EncryptionKey.version == version)).scalar_one_or_none()
        try:
            return row is not None and unwrap(ctx, org, row, wrapped, job.id) == dek
        except VowvaultError:
            return False

    for i, copy in enumerate(copies(ctx, session, job)):
        result = CopyReport(copy.url, ok=False)
        try:
            result.bytes_read = _verify_copy(copy, job, dek, expected_sha, key_opens,
                                             check_archive=check_archive and i == 0)
            result.ok = True
        except IntegrityError as exc:
            result.problem = str(exc)
        except (StorageError, OSError) as exc:
            result.problem, result.unreachable = str(exc), True
        report.copies.append(result)
        log.info("verify %s on %s: %s", job.id, copy.url,
                 "intact" if result.ok else result.problem)
    if not report.copies:
        raise StorageError(f"backup {job.id} has no stored copy to verify")
    if record:
        _record(ctx, session, job, report)
    return _raise_on_problem(report, job.id) if raise_on_problem else report


def _verify_copy(copy: Copy, job: BackupJob, dek: bytes, expected_sha: str | None,
                 key_opens: Any, *, check_archive: bool) -> int:
    try:
        return _verify_objects(copy, job, dek, expected_sha, key_opens,
                               check_archive=check_archive)
    except ObjectNotFound as exc:
        # The target answered: an object it should hold is gone. That is damage, not an
        # outage.
        kind = str(exc).split(": ")[0].rsplit("/", 1)[-1]
        raise IntegrityError(f"{kind} is missing from {copy.url}") from None


def _verify_objects(copy: Copy, job: BackupJob, dek: bytes, expected_sha: str | None,
                    key_opens: Any, *, check_archive: bool) -> int:
    backend = copy.backend
    key_doc = json.loads(backend.load(object_name(job, "key")))
    if not key_opens(key_doc):
        raise IntegrityError("key object does not hold the data key the catalog records")
    manifest_name = object_name(job, "manifest")
    raw = b"".join(read_object(backend, manifest_name, dek, job.id, "manifest"))
    if expected_sha and hashlib.sha256(raw).hexdigest() != expected_sha:
        raise IntegrityError("manifest differs from the one recorded when the backup was made")
    manifest = load_manifest(backend, manifest_name, dek, job.id)
    total = 0
    for kind, info in manifest["objects"].items():
        stream = read_object(backend, object_name(job, kind), dek, job.id, kind)
        digest = hashlib.sha256()
        size = 0

        def counted(stream: Iterator[bytes] = stream, digest: Any = digest) -> Iterator[bytes]:
            nonlocal size
            for chunk in stream:
                digest.update(chunk)
                size += len(chunk)
                yield chunk

        if kind == "data" and manifest["source"].get("kind") == "postgres" and check_archive:
            from vowvault.sources.postgres import check_archive as pg_check

            pg_check(counted())
        elif kind == "data" and manifest["source"].get("kind") == "directory":
            _check_files(counted(), backend, job, dek)
        else:
            for _ in counted():
                pass
        if size != info["plaintext_size"] or digest.hexdigest() != info["sha256"]:
            raise IntegrityError(f"{kind} object holds {size} bytes with another checksum "
                                 f"than the manifest records")
        total += info["stored_size"]
    return total


def _check_files(data: Iterator[bytes], backend: Any, job: BackupJob, dek: bytes) -> None:
    """Hash every file this backup stores, in data order, against the index. The index is
    read in a second stream alongside (both are in walk order)."""
    entries = (e for e in parse_index(read_object(backend, object_name(job, "index"), dek,
                                                  job.id, "index"))
               if e.type == "file" and e.backup is None)
    buf = bytearray()
    source = iter(data)
    offset = 0
    for entry in entries:
        if entry.offset != offset:
            raise IntegrityError(f"index places {entry.path} at {entry.offset}, data has it at "
                                 f"{offset}")
        digest = hashlib.sha256()
        need = entry.size
        while need:
            if not buf:
                chunk = next(source, None)
                if chunk is None:
                    raise IntegrityError(f"data ends inside {entry.path}")
                buf += chunk
            take = min(need, len(buf))
            digest.update(buf[:take])
            del buf[:take]
            need -= take
        offset += entry.size
        if digest.hexdigest() != entry.sha256:
            raise IntegrityError(f"content of {entry.path} does not match its recorded SHA-256")
    for chunk in source:  # drain, so sizes and digest of the whole object are checked
        buf += chunk
    if buf:
        raise IntegrityError(f"data holds {len(buf)} bytes no file of the index accounts for")


def _record(ctx: Context, session: Session, job: BackupJob, report: VerifyReport) -> None:
    now = ctx.clock()
    for c in report.copies:
        if c.unreachable:
            continue
        session.execute(sa.update(BackupStorage).where(
            BackupStorage.backup_job_id == job.id, BackupStorage.storage_url == c.url,
            BackupStorage.status.in_([CopyStatus.STORED, CopyStatus.VERIFIED, CopyStatus.FAILED]))
            .values(status=CopyStatus.VERIFIED if c.ok else CopyStatus.FAILED,
                    verified_at=now))
    if report.corrupted:
        from vowvault.engine import webhooks

        job.verification_status = VerificationStatus.FAILED
        job.status = BackupStatus.CORRUPTED
        job.error_message = f"verification failed on {report.corrupted[0].url}: " \
                            f"{report.corrupted[0].problem}"
        action, summary = "backup.verify_failed", job.error_message
    elif any(c.ok for c in report.copies):
        job.verification_status = VerificationStatus.VERIFIED
        job.verified_at = now
        if job.status == BackupStatus.CORRUPTED:
            job.status = BackupStatus.COMPLETED  # every copy reads back intact again
        action = "backup.verified"
        summary = f"verified intact on {sum(c.ok for c in report.copies)} of " \
                  f"{len(report.copies)} copies"
    else:
        return
    audit.record(session, actor=ctx.settings.actor, action=action, target_type="backup",
                 target_id=job.id, organization_id=job.organization_id, summary=summary)
    if report.corrupted:
        report.events.append((job.organization_id, "verification_failed",
                              webhooks.backup_payload(session, job, "verification_failed"),
                              job.is_wedding_day_backup))


def verify_backup(ctx: Context, backup_ref: str) -> VerifyReport:
    """``vowvault verify BACKUP``: re-verify a stored backup now."""
    from vowvault.engine import webhooks
    from vowvault.engine.lookup import find_backup

    report = None
    try:
        with ctx.catalog.session() as session:
            job = find_backup(session, backup_ref)
            if job.status not in (BackupStatus.COMPLETED, BackupStatus.CORRUPTED):
                raise VowvaultError(f"backup {job.id} is {job.status.value}: only completed "
                                    f"backups can be verified")
            report = verify_job(ctx, session, job, raise_on_problem=False)
        return _raise_on_problem(report, job.id)
    finally:
        for org_id, event, payload, escalation in (report.events if report else []):
            webhooks.emit(ctx, org_id, event, payload, escalation=escalation)


def _raise_on_problem(report: VerifyReport, job_id: Any) -> VerifyReport:
    if report.corrupted:
        bad = report.corrupted[0]
        raise IntegrityError(f"backup {job_id} is corrupted on {bad.url}: {bad.problem}")
    if not any(c.ok for c in report.copies):
        raise StorageError(f"no copy of backup {job_id} could be read: "
                           + "; ".join(f"{c.url}: {c.problem}" for c in report.copies))
    return report

