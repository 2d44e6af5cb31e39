"""Restores: stream a backup back into a database or a directory, checking as it goes,
then prove the result against what was recorded at backup time."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from vowvault.catalog import audit
from vowvault.catalog.enums import BackupStatus, RecoveryStatus, RecoveryType
from vowvault.catalog.models import BackupJob, RecoveryJob
from vowvault.engine import erasure
from vowvault.engine.context import Context, log
from vowvault.engine.lookup import find_backup
from vowvault.engine.objects import (
    OpenBackup,
    RangeReader,
    ensure_readable,
    object_name,
    open_backup,
)
from vowvault.errors import ConfigError, IntegrityError, RestoreError
from vowvault.sources.directory import Entry, parse_index


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

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def restore_backup(ctx: Context, backup_ref: str, *, to_dir: Path | None = None,
                   to_database: str | None = None, force: bool = False,
                   password: str | None = None, recovery_type: RecoveryType =
                   RecoveryType.FULL_RESTORE, archive_wait: float = 0.0,
                   emergency_role: str | None = None) -> RestoreResult:
    """Restore one backup. Data in an archive tier is restored (rehydrated) first: the
    restore waits ``archive_wait`` seconds for it, or fails saying it was started.

    ``emergency_role`` makes it an emergency recovery into production: only the roles
    admin, owner and emergency_contact may (the same rule as the catalog's
    emergency_recovery_access policy); it replaces what the target holds, is recorded as an
    emergency recovery, and raises a CRITICAL event (an escalated webhook and log line)."""
    if (to_dir is None) == (to_database is None):
        raise ConfigError("give exactly one of --to-dir PATH or --to-database DSN")
    if emergency_role is not None:
        if emergency_role not in EMERGENCY_ROLES:
            raise ConfigError(f"emergency recovery needs the role admin, owner or "
                              f"emergency_contact, not {emergency_role!r}")
        recovery_type, force = RecoveryType.EMERGENCY, True
    started = time.perf_counter()
    with ctx.catalog.session() as s:
        job = find_backup(s, backup_ref)
        if job.status != BackupStatus.COMPLETED:
            raise RestoreError(f"backup {job.id} is {job.status.value}"
                               + (f" ({job.error_message})" if job.error_message else "")
                               + ": only COMPLETED backups can be restored")
        recovery = RecoveryJob(id=uuid.uuid4(), organization_id=job.organization_id,
                               backup_job_id=job.id, recovery_type=recovery_type,
                               is_emergency_recovery=emergency_role is not None,
                               requester_role=emergency_role,
                               status=RecoveryStatus.IN_PROGRESS, requested_by=ctx.settings.actor,
                               target_kind="DATABASE" if to_database else "DIRECTORY",
                               target_description=_describe_target(to_dir, to_database),
                               started_at=ctx.clock())
        s.add(recovery)
        audit.record(s, actor=ctx.settings.actor, action="restore.start", target_type="backup",
                     target_id=job.id, organization_id=job.organization_id,
                     summary=f"restore to {recovery.target_description}")
        recovery_id, job_id = recovery.id, job.id
    if emergency_role is not None:
        _emergency_event(ctx, job_id, "started", recovery_id, emergency_role)
    try:
        with ctx.catalog.session() as s:
            job = s.get(BackupJob, job_id)
            assert job is not None
            backup = open_backup(ctx, s, job)
            for kind in backup.manifest["objects"]:
                ensure_readable(backup.copy.backend, backup.name(kind), wait=archive_wait)
            erasures = erasure.applicable(s, job)
            if to_database is not None:
                restored, validation = _to_database(ctx, backup, to_database, force, password)
                applied = erasure.erase_rows(to_database, erasures, password) \
                    if any((r.scope or {}).get("rows") for r in erasures) else []
            else:
                assert to_dir is not None
                restored, validation = _to_directory(ctx, s, backup, to_dir, force,
                                                     erasure.erased_paths(erasures))
                applied = [{"request": str(r.id), "subject": r.subject_ref,
                            "files_withheld": validation.get("withheld", 0)}
                           for r in erasures if (r.scope or {}).get("paths")]
            validation["erasures_applied"] = len(applied)
    except BaseException as exc:
        _finish(ctx, recovery_id, started, error=exc)
        if emergency_role is not None:
            _emergency_event(ctx, job_id, f"failed: {exc}", recovery_id, emergency_role)
        raise
    result = RestoreResult(str(recovery_id), str(job_id),
                           _describe_target(to_dir, to_database), restored,
                           round(time.perf_counter() - started, 3), validation,
                           backup.copy.url, backup.skipped, applied)
    _finish(ctx, recovery_id, started, result=result)
    if emergency_role is not None:
        _emergency_event(ctx, job_id, "completed", recovery_id, emergency_role)
    if recovery_type == RecoveryType.FULL_RESTORE:
        from vowvault.engine import webhooks

        with ctx.catalog.session() as s:
            job = s.get(BackupJob, job_id)
            assert job is not None
            payload = {**webhooks.backup_payload(s, job, "restore_completed"),
                       "recovery_id": str(recovery_id), "target": result.target,
                       "duration_seconds": result.duration_seconds}
            org_id = job.organization_id
        webhooks.emit(ctx, org_id, "restore_completed", payload)
    return result


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


def _describe_target(to_dir: Path | None, to_database: str | None) -> str:
    if to_database is not None:
        from vowvault.sources.postgres import redact

        return redact(to_database)
    return str(to_dir)


def _finish(ctx: Context, recovery_id: uuid.UUID, started: float, *,
            result: RestoreResult | None = None, error: BaseException | None = None) -> None:
    duration = Decimal(time.perf_counter() - started).quantize(Decimal("0.001"))
    with ctx.catalog.session() as s:
        rec = s.get(RecoveryJob, recovery_id)
        assert rec is not None
        rec.completed_at = ctx.clock()
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


def _to_database(ctx: Context, backup: OpenBackup, dsn: str, force: bool,
                 password: str | None) -> tuple[int, dict[str, Any]]:
    from vowvault.sources import postgres

    if backup.manifest["source"].get("kind") != "postgres":
        raise ConfigError(f"backup {backup.job.id} is a file tree: restore it with --to-dir")
    exists, objects = postgres.target_state(dsn, password)
    created = False
    if not exists:
        postgres.create_database(dsn, password)
        created = True
        log.info("created database %s", postgres.redact(dsn))
    elif objects and not force:
        raise RestoreError(f"{postgres.redact(dsn)} is not empty ({objects} tables, views or "
                           f"sequences): restore into an empty database, or add --force to "
                           f"replace what is there")
    total = backup.manifest["objects"]["data"]["plaintext_size"]
    done = 0

    def stream() -> Iterator[bytes]:
        nonlocal done
        for chunk in backup.stream("data"):
            done += len(chunk)
            ctx.progress("restore", done, total)
            yield chunk

    try:
        postgres.restore(dsn, stream(), password=password, clean=bool(objects) and force)
        validation = _validate_database(backup, dsn, password)
    except BaseException:
        if created:
            _drop_quietly(dsn, password)
        raise
    return done, validation


def _validate_database(backup: OpenBackup, dsn: str, password: str | None) -> dict[str, Any]:
    from vowvault.sources.pgarchive import ArchiveSummary, database_digests

    database = backup.manifest.get("database") or {}
    summary = ArchiveSummary.from_json(database.get("summary") or {})
    if summary.error or not summary.tables:
        return {"tables": 0, "checked": False, "reason": summary.error or "no table data"}
    if password:
        from psycopg.conninfo import make_conninfo

        dsn = make_conninfo(dsn, password=password)
    found = database_digests(dsn, summary, settings=database.get("settings") or {})
    problems = []
    for t in summary.tables:
        got = found.get((t.schema, t.name))
        if got is None:
            problems.append(f"{t.schema}.{t.name}: missing")
        elif got != (t.rows, t.sha256):
            problems.append(f"{t.schema}.{t.name}: {got[0]} rows (expected {t.rows})"
                            + ("" if got[0] != t.rows else ", content differs"))
    if problems:
        raise RestoreError(f"restored database does not match the backup: {problems[0]}"
                           + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    return {"tables": len(summary.tables), "rows": sum(t.rows for t in summary.tables),
            "checked": True}


def _drop_quietly(dsn: str, password: str | None) -> None:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    name = conninfo_to_dict(dsn).get("dbname")
    try:
        with psycopg.connect(make_conninfo(dsn, dbname="postgres"), password=password,
                             autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                         .format(sql.Identifier(str(name))))
    except psycopg.Error as exc:
        log.warning("could not drop the half-restored database %s: %s", name, exc)


def _to_directory(ctx: Context, s: Session, backup: OpenBackup, target: Path,
                  force: bool, erased: list[str]) -> tuple[int, dict[str, Any]]:
    if backup.manifest["source"].get("kind") != "directory":
        raise ConfigError(f"backup {backup.job.id} is a database dump: restore it with "
                          f"--to-database")
    if target.exists() and not target.is_dir():
        raise RestoreError(f"{target} exists and is not a directory")
    was_empty = not target.exists() or not any(target.iterdir())
    if not was_empty and not force:
        raise RestoreError(f"{target} is not empty: restore into an empty directory, or add "
                           f"--force to overwrite files in it")
    target.mkdir(parents=True, exist_ok=True)
    try:
        return _write_tree(ctx, s, backup, target, erased)
    except BaseException:
        if was_empty:  # leave nothing that looks like a finished restore
            for child in target.iterdir():
                _clear(child)
        raise


def _write_tree(ctx: Context, s: Session, backup: OpenBackup, target: Path,
                erased: list[str]) -> tuple[int, dict[str, Any]]:
    entries = parse_index(backup.stream("index"))
    data = _Sequential(backup.stream("data"))
    readers: dict[str, RangeReader] = {}
    total = backup.manifest["objects"]["data"]["plaintext_size"] + \
        int(backup.manifest["source"].get("bytes_referenced") or 0)
    done = files = 0
    dirs: list[Entry] = []
    as_root = os.geteuid() == 0
    withheld = 0
    for entry in entries:
        if erased and entry.path and erasure.path_matches(entry.path, erased):
            withheld += 1  # erased after this backup was taken: never handed over
            if entry.type == "file" and entry.backup is None:
                for _ in data.take(entry.size):
                    pass
            continue
        path = _safe_join(target, entry.path)
        if entry.type == "dir":
            path.mkdir(parents=True, exist_ok=True)
            dirs.append(entry)
            continue
        _clear(path)
        if entry.type == "symlink":
            os.symlink(entry.target or "", path)
        elif entry.type == "fifo":
            os.mkfifo(path, entry.mode)
        elif entry.type == "file":
            if entry.backup is None:
                chunks = data.take(entry.size)
            else:
                reader = readers.get(entry.backup)
                if reader is None:
                    reader = readers[entry.backup] = _reader_for(ctx, s, entry.backup)
                chunks = reader.read(int(entry.offset or 0), entry.size)
            digest = hashlib.sha256()
            with open(path, "wb") as f:
                for chunk in chunks:
                    f.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    ctx.progress("restore", done, total)
            if digest.hexdigest() != entry.sha256:
                raise IntegrityError(f"restored {entry.path} does not match its recorded "
                                     f"SHA-256")
            files += 1
        _apply_metadata(path, entry, as_root)
    data.finish()
    for entry in reversed(dirs):  # children first, so their writes do not touch mtimes
        _apply_metadata(_safe_join(target, entry.path), entry, as_root)
    return done, {"files": files, "directories": len(dirs), "checked": True,
                  "sha256_per_file": True, "withheld": withheld}


def _reader_for(ctx: Context, s: Session, backup_id: str) -> RangeReader:
    job = s.get(BackupJob, uuid.UUID(backup_id))
    if job is None or job.deletion_date is not None:
        raise RestoreError(f"backup {backup_id}, which holds unchanged files of this one, is "
                           f"gone from the catalog")
    other = open_backup(ctx, s, job)
    ensure_readable(other.copy.backend, object_name(job, "data"))
    return RangeReader(other.copy.backend, object_name(job, "data"), other.dek, job.id,
                       other.manifest["objects"]["data"])


class _Sequential:
    """Takes exact byte counts off a stream of chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buf = b""

    def take(self, n: int) -> Iterator[bytes]:
        while n:
            if not self._buf:
                nxt = next(self._chunks, None)
                if nxt is None:
                    raise IntegrityError("data ends before the last file of the index")
                self._buf = nxt
            piece, self._buf = self._buf[:n], self._buf[n:]
            n -= len(piece)
            yield piece

    def finish(self) -> None:
        rest = len(self._buf) + sum(len(c) for c in self._chunks)
        if rest:
            raise IntegrityError(f"data holds {rest} bytes no file of the index accounts for")


def _safe_join(root: Path, rel: str) -> Path:
    if rel == "":
        return root
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise IntegrityError(f"index holds an unsafe path {rel!r}")
    return root.joinpath(*parts)


def _clear(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _apply_metadata(path: Path, entry: Entry, as_root: bool) -> None:
    if as_root:
        try:
            os.lchown(path, entry.uid, entry.gid)
        except OSError as exc:
            log.warning("could not restore the owner of %s: %s", path, exc)
    if entry.type != "symlink":
        os.chmod(path, stat.S_IMODE(entry.mode))
    os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)



