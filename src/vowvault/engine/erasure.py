"""GDPR erasure ("right to be forgotten") in backups.

An erasure request names a subject (a couple, a wedding, a vendor, a person) and what
belongs to it: file paths (globs, relative to the policy's directory) and database rows
(``schema.table`` and a column value). Requests are the erasure log.

- Every restore and every DR drill of a backup taken before a request replays it before
  handing data over: matching files are not written, matching rows are deleted after the
  restore; the recovery record lists what was applied.
- File-tree backups can be purged: each one holding the subject's paths is rewritten into a
  new, self-contained backup without them (verified like any backup; backups depending on
  it are rewritten too), then the originals are deleted.
- Database backups cannot be edited in place: they are put beyond use (every restore
  replays the erasure) and age out under retention, as the UK regulator's guidance on
  backups allows. ``status`` says when each will be gone.
- A whole tenant is erased by crypto-shredding (``keyring.shred``).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vowvault.catalog import audit
from vowvault.catalog.enums import (
    BackupStatus,
    BackupType,
    CopyRole,
    ErasureStatus,
    ErasureSubject,
    ObjectKind,
    SourceKind,
)
from vowvault.catalog.models import (
    BackupJob,
    BackupPolicy,
    BackupStorage,
    ErasureRequest,
    Organization,
)
from vowvault.engine.backup import BackupRun
from vowvault.engine.context import Context, log
from vowvault.errors import ConfigError, NotFound
from vowvault.sources.directory import Entry, parse_index


@dataclass(frozen=True)
class RowSpec:
    table: str  # schema.table
    column: str
    value: str

    @classmethod
    def parse(cls, text: str) -> RowSpec:
        """``schema.table:column=value``."""
        table, _, rest = text.partition(":")
        column, _, value = rest.partition("=")
        if not table or not column or not _:
            raise ConfigError(f"row {text!r}: write it as schema.table:column=value")
        if "." not in table:
            table = f"public.{table}"
        return cls(table, column, value)


def request(ctx: Context, org_slug: str, subject_type: str, subject_ref: str, *,
            paths: list[str], rows: list[str], requested_by: str | None = None) -> str:
    """Record an erasure request (the erasure log); returns its id."""
    if not paths and not rows:
        raise ConfigError("an erasure request needs --path or --row (what belongs to the "
                          "subject)")
    specs = [RowSpec.parse(r) for r in rows]
    try:
        kind = ErasureSubject(subject_type.upper())
    except ValueError:
        raise ConfigError(f"subject type {subject_type!r} is not one of "
                          + ", ".join(s.value.lower() for s in ErasureSubject)) from None
    with ctx.catalog.session() as s:
        org = s.execute(sa.select(Organization).where(Organization.slug == org_slug)
                        ).scalar_one_or_none()
        if org is None:
            raise NotFound(f"no organization {org_slug!r}")
        req = ErasureRequest(
            id=uuid.uuid4(), organization_id=org.id, subject_type=kind,
            subject_ref=subject_ref, requested_by=requested_by or ctx.settings.actor,
            requested_at=ctx.clock(), status=ErasureStatus.PENDING,
            scope={"paths": paths, "rows": [r.__dict__ for r in specs]})
        s.add(req)
        s.flush()
        audit.record(s, actor=ctx.settings.actor, action="erasure.request",
                     target_type="erasure", target_id=req.id, organization_id=org.id,
                     summary=f"erasure of {kind.value.lower()} {subject_ref} requested: "
                             f"{len(paths)} path patterns, {len(specs)} row patterns")
        return str(req.id)


def applicable(session: Session, job: BackupJob) -> list[ErasureRequest]:
    """Requests made after this backup was taken: its data may hold their subjects."""
    return list(session.execute(sa.select(ErasureRequest).where(
        ErasureRequest.organization_id == job.organization_id,
        ErasureRequest.requested_at > job.created_at).order_by(ErasureRequest.requested_at))
        .scalars())


def path_matches(path: str, patterns: list[str]) -> bool:
    """A glob on the relative path, or a directory and everything under it."""
    for p in patterns:
        p = p.strip("/")
        if fnmatch.fnmatchcase(path, p) or path == p or path.startswith(p + "/"):
            return True
        if p.endswith("/**") and (path == p[:-3] or path.startswith(p[:-2])):
            return True
    return False


def erased_paths(requests: list[ErasureRequest]) -> list[str]:
    return [p for r in requests for p in (r.scope or {}).get("paths", [])]


def erase_rows(dsn: str, requests: list[ErasureRequest], password: str | None = None
               ) -> list[dict[str, Any]]:
    """Delete the subjects' rows from a restored database; one parameterised DELETE per
    row pattern."""
    import psycopg
    from psycopg import sql

    applied = []
    with psycopg.connect(dsn, password=password, autocommit=False) as conn:
        for r in requests:
            for spec in (r.scope or {}).get("rows", []):
                schema, _, table = spec["table"].partition(".")
                query = sql.SQL("DELETE FROM {}.{} WHERE {} = %s").format(
                    sql.Identifier(schema), sql.Identifier(table),
                    sql.Identifier(spec["column"]))
                try:
                    n = conn.execute(query, (spec["value"],)).rowcount
                except psycopg.errors.UndefinedTable:
                    conn.rollback()
                    n = 0
                applied.append({"request": str(r.id), "subject": r.subject_ref,
                                "table": spec["table"], "rows_deleted": n})
        conn.commit()
    return applied


# -- status ---------------------------------------------------------------------------------

def status(ctx: Context, subject_ref: str) -> list[dict[str, Any]]:
    """Backups that still hold the subject, and when each will be gone."""
    from vowvault.engine.objects import open_backup

    out = []
    with ctx.catalog.session() as s:
        requests = list(s.execute(sa.select(ErasureRequest).where(
            ErasureRequest.subject_ref == subject_ref)).scalars())
        if not requests:
            raise NotFound(f"no erasure request for subject {subject_ref!r}")
        for req in requests:
            jobs = s.execute(sa.select(BackupJob, BackupPolicy).join(BackupPolicy).where(
                BackupJob.organization_id == req.organization_id,
                BackupJob.status == BackupStatus.COMPLETED,
                BackupJob.created_at < req.requested_at)).all()
            for job, policy in jobs:
                row: dict[str, Any] = {
                    "request": str(req.id), "backup": str(job.id), "policy": policy.name,
                    "taken": job.created_at.isoformat(timespec="minutes"),
                    "expires": job.expires_at.date().isoformat() if job.expires_at else "-"}
                if policy.source_kind == SourceKind.DIRECTORY:
                    patterns = (req.scope or {}).get("paths", [])
                    if not patterns:
                        continue
                    backup = open_backup(ctx, s, job)
                    hits = sum(1 for e in parse_index(backup.stream("index"))
                               if path_matches(e.path, patterns))
                    if not hits:
                        continue
                    row.update(holds=f"{hits} paths", action="`vowvault gdpr purge` rewrites "
                                                             "it without them")
                else:
                    if not (req.scope or {}).get("rows"):
                        continue
                    row.update(holds="rows (database dump)",
                               action="beyond use: every restore deletes them; gone at expiry")
                out.append(row)
    return out


# -- purge ----------------------------------------------------------------------------------

def purge(ctx: Context, subject_ref: str, *, dry_run: bool = False) -> list[dict[str, Any]]:
    """Rewrite every file-tree backup that holds the subject's paths (and every backup that
    depends on one of those) without them; verify; then delete the originals."""
    from vowvault.engine import retention

    holders = [r for r in status(ctx, subject_ref) if r["holds"].endswith("paths")]
    with ctx.catalog.session() as s:
        requests = list(s.execute(sa.select(ErasureRequest).where(
            ErasureRequest.subject_ref == subject_ref)).scalars())
        patterns = erased_paths(requests)
        todo = {uuid.UUID(r["backup"]) for r in holders}
        # Backups that take unchanged files from one being rewritten must be rewritten too.
        changed = True
        while changed:
            changed = False
            for job in s.execute(sa.select(BackupJob).where(
                    BackupJob.status == BackupStatus.COMPLETED)).scalars():
                refs = {uuid.UUID(x) for x in (job.source_info or {}).get("references", [])}
                if job.id not in todo and refs & todo:
                    todo.add(job.id)
                    changed = True
        ordered = [j.id for j in s.execute(sa.select(BackupJob).where(
            BackupJob.id.in_(todo)).order_by(BackupJob.created_at)).scalars()]
    plan = [{"backup": str(j), "action": "rewrite without the subject, then delete"}
            for j in ordered]
    if dry_run or not ordered:
        return plan
    replaced = []
    for job_id in ordered:
        new_id = rewrite_without(ctx, job_id, patterns)
        replaced.append((job_id, new_id))
    for old, _new in replaced:
        retention._delete(ctx, old, "erasure purge", f"rewritten without {subject_ref}")
    with ctx.catalog.session() as s:
        for req in s.execute(sa.select(ErasureRequest).where(
                ErasureRequest.subject_ref == subject_ref)).scalars():
            db_left = bool((req.scope or {}).get("rows"))
            req.status = ErasureStatus.IN_PROGRESS if db_left else ErasureStatus.COMPLETED
            req.completed_at = None if db_left else ctx.clock()
            audit.record(s, actor=ctx.settings.actor, action="erasure.purge",
                         target_type="erasure", target_id=req.id,
                         organization_id=req.organization_id,
                         summary=f"{len(replaced)} file-tree backups rewritten without "
                                 f"{subject_ref}, originals deleted")
    return [{"backup": str(o), "replaced_by": str(n)} for o, n in replaced]


def rewrite_without(ctx: Context, job_id: uuid.UUID, patterns: list[str]) -> uuid.UUID:
    """A new, self-contained backup with the original's content minus ``patterns``, sealed
    under a new data key, verified; it takes the original's place in time."""
    from vowvault.engine import backup as engine
    from vowvault.engine import keyring
    from vowvault.keys import new_dek

    with ctx.catalog.session() as s:
        old = s.get(BackupJob, job_id)
        assert old is not None
        policy = s.get(BackupPolicy, old.policy_id)
        org = s.get(Organization, old.organization_id)
        assert policy is not None and org is not None
        view = engine.PolicyView.of(policy)
        rows = s.execute(sa.select(BackupStorage).where(
            BackupStorage.backup_job_id == old.id,
            BackupStorage.object_kind == ObjectKind.DATA)).scalars()
        targets = [engine.Target(url=r.storage_url, tier=r.storage_tier, required=True,
                                 role=r.copy_role,
                                 credentials_secret=next((t.get("credentials_secret") for t in
                                                          view.targets
                                                          if t["url"] == r.storage_url), None))
                   for r in rows]
        targets.sort(key=lambda t: t.role != CopyRole.PRIMARY)
        key = keyring.active_key(ctx, s, org, view.key_provider)
        new = BackupJob(id=uuid.uuid4(), organization_id=org.id, policy_id=policy.id,
                        job_name=f"{old.job_name}-erased", backup_type=BackupType.FULL,
                        status=BackupStatus.IN_PROGRESS, priority=old.priority,
                        scheduled_at=old.scheduled_at, created_at=old.created_at,
                        started_at=ctx.clock(), heartbeat_at=ctx.clock(),
                        worker_host=socket.gethostname(), worker_pid=os.getpid(),
                        is_wedding_day_backup=old.is_wedding_day_backup,
                        related_wedding_ids=old.related_wedding_ids, legal_hold=old.legal_hold,
                        encryption_key_id=key.id, format_version=old.format_version)
        dek = new_dek()
        new.wrapped_dek = keyring.wrap(ctx, org, key, dek, new.id)
        s.add(new)
        s.flush()
        new_id, wrapped = new.id, new.wrapped_dek
        key_info = (key.id, key.provider, key.version, key.key_ref)
        original_times = (old.created_at, old.completed_at, old.expires_at)
    run = RewriteRun(ctx, new_id, view, dek, wrapped, key_info, targets, None,
                     BackupType.FULL, None)
    run.original, run.patterns = job_id, patterns
    with engine._RUNS_LOCK:
        engine._RUNS[str(new_id)] = run
    engine.run_in_process(str(new_id))
    engine.finish(str(new_id))  # raises if anything failed (the new objects are removed)
    with ctx.catalog.session() as s:
        job = s.get(BackupJob, new_id)
        assert job is not None
        job.created_at, job.completed_at, job.expires_at = original_times
        job.source_info = {**(job.source_info or {}), "rewritten_from": str(job_id),
                           "erased_patterns": len(patterns)}
    log.info("backup %s rewritten as %s without %d path patterns", job_id, new_id,
             len(patterns))
    return new_id


class RewriteRun(BackupRun):
    """A backup run whose source is an existing backup minus the erased paths."""

    original: uuid.UUID
    patterns: list[str]

    def _source_streams(self, stack: Any) -> Iterator[tuple[str, Iterator[bytes]]]:
        index: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # noqa: SIM115
        counts = {"files": 0, "withheld": 0}
        yield "data", _rewritten_data(self.ctx, self.original, self.patterns, index, counts)
        self.source_info.update(kind="directory", rewritten=True, files=counts["files"],
                                withheld=counts["withheld"])
        index.seek(0)
        yield "index", iter(lambda: index.read(1 << 20), b"")


def _rewritten_data(ctx: Context, original: uuid.UUID, patterns: list[str], index: IO[bytes],
                    counts: dict[str, int]) -> Iterator[bytes]:
    from vowvault.engine.objects import RangeReader, object_name, open_backup

    with ctx.catalog.session() as s:
        job = s.get(BackupJob, original)
        assert job is not None
        backup = open_backup(ctx, s, job)
        own = RangeReader(backup.copy.backend, object_name(job, "data"), backup.dek, job.id,
                          backup.manifest["objects"]["data"])
        readers: dict[str, RangeReader] = {}
        offset = 0
        for entry in parse_index(backup.stream("index")):
            if entry.path and path_matches(entry.path, patterns):
                counts["withheld"] += 1
                continue
            if entry.type == "file":
                if entry.backup is None:
                    reader = own
                else:
                    reader = readers.get(entry.backup)
                    if reader is None:
                        other = s.get(BackupJob, uuid.UUID(entry.backup))
                        assert other is not None
                        ob = open_backup(ctx, s, other)
                        reader = readers[entry.backup] = RangeReader(
                            ob.copy.backend, object_name(other, "data"), ob.dek, other.id,
                            ob.manifest["objects"]["data"])
                digest = hashlib.sha256()
                for chunk in reader.read(int(entry.offset or 0), entry.size):
                    digest.update(chunk)
                    yield chunk
                if digest.hexdigest() != entry.sha256:
                    from vowvault.errors import IntegrityError

                    raise IntegrityError(f"{entry.path} does not match its recorded SHA-256")
                entry = Entry(**{**entry.__dict__, "backup": None, "offset": offset})
                offset += entry.size
                counts["files"] += 1
            index.write(entry.to_line())

