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

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vowvault.catalog import audit
from vowvault.catalog.models import (
    BackupJob,
    BackupPolicy,
    BackupStorage,
    ErasureRequest,
    Organization,
)
from vowvault.domain import (
    BackupStatus,
    BackupType,
    CopyRole,
    ErasureStatus,
    ErasureSubject,
    ObjectKind,
    SourceKind,
)
from vowvault.engine import objects
from vowvault.engine.context import Context, log
from vowvault.errors import ConfigError, NotFound
from vowvault.sources.base import ErasureSpec
from vowvault.sources.directory import path_matches

__all__ = ["RowSpec", "applicable", "path_matches", "purge", "replay_specs", "request",
           "rewrite_without", "status"]


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


def _check_path(path: str) -> None:
    """A pattern restores can match: relative to the policy's directory (a leading / is
    its root), no empty name, '.' or '..' (a pattern that matches nothing would be an
    erasure that never happens)."""
    segments = path.strip("/").split("/")
    if not path.strip("/") or any(seg in ("", ".", "..") for seg in segments) \
            or any(ord(c) < 32 for c in path):
        raise ConfigError(f"--path {path!r}: give a glob or directory relative to the "
                          f"policy's directory (wedding-2027-06-12/*), without empty, '.' or "
                          f"'..' parts")


def request(ctx: Context, org_slug: str, subject_type: str, subject_ref: str, *,
            paths: list[str], rows: list[str], requested_by: str | None = None) -> str:
    """Record an erasure request (the erasure log); returns its id."""
    if not subject_ref.strip():
        raise ConfigError("an erasure request needs the subject's reference (not empty)")
    if not paths and not rows:
        raise ConfigError("an erasure request needs --path or --row (what belongs to the "
                          "subject)")
    for path in paths:
        _check_path(path)
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


def replay_specs(session: Session, job: BackupJob) -> list[ErasureSpec]:
    """The requests a restore of ``job`` replays, as the sources take them."""
    return [ErasureSpec(str(r.id), r.subject_ref, tuple((r.scope or {}).get("paths", [])),
                        tuple((r.scope or {}).get("rows", [])))
            for r in applicable(session, job)]


def erased_paths(requests: list[ErasureRequest]) -> list[str]:
    return [p for r in requests for p in (r.scope or {}).get("paths", [])]


# -- status ---------------------------------------------------------------------------------

def status(ctx: Context, subject_ref: str) -> list[dict[str, Any]]:
    """Backups that still hold the subject, and when each will be gone."""
    candidates: list[tuple[dict[str, Any], list[str], objects.StoredBackup | None]] = []
    with ctx.catalog.read() as s:
        requests = list(s.execute(sa.select(ErasureRequest).where(
            ErasureRequest.subject_ref == subject_ref)).scalars())
        if not requests:
            raise NotFound(f"no erasure request for subject {subject_ref!r}")
        for req in requests:
            jobs = s.execute(sa.select(BackupJob, BackupPolicy).join(BackupPolicy).where(
                BackupJob.organization_id == req.organization_id,
                BackupJob.status == BackupStatus.COMPLETED,
                BackupJob.backup_type != BackupType.TRANSACTION_LOG,
                BackupJob.created_at < req.requested_at)).all()
            for job, policy in jobs:
                row: dict[str, Any] = {
                    "request": str(req.id), "backup": str(job.id), "policy": policy.name,
                    "taken": job.created_at.isoformat(timespec="minutes"),
                    "expires": job.expires_at.date().isoformat() if job.expires_at else "-"}
                if policy.source_kind == SourceKind.DIRECTORY:
                    patterns = (req.scope or {}).get("paths", [])
                    if patterns:
                        candidates.append((row, patterns, objects.read_stored(s, job)))
                elif (req.scope or {}).get("rows"):
                    row.update(holds="rows (database dump)",
                               action="beyond use: every restore deletes them; gone at expiry")
                    candidates.append((row, [], None))
    out = []
    for row, patterns, stored in candidates:
        if stored is not None:  # a file tree: does its index hold the subject's paths?
            tree = objects.open_tree(ctx, stored)
            hits = sum(1 for e in tree.entries() if path_matches(e.path, patterns))
            if not hits:
                continue
            row.update(holds=f"{hits} paths",
                       action="`vowvault gdpr purge` rewrites it without them")
        out.append(row)
    return out


# -- purge ----------------------------------------------------------------------------------

def purge(ctx: Context, subject_ref: str, *, dry_run: bool = False) -> list[dict[str, Any]]:
    """Rewrite every file-tree backup that holds the subject's paths (and every backup that
    depends on one of those) without them; verify; then delete the originals."""
    from vowvault.engine import retention

    holders = [r for r in status(ctx, subject_ref) if r["holds"].endswith("paths")]
    with ctx.catalog.read() as s:
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
        retention.delete_backup(ctx, old, "erasure purge", f"rewritten without {subject_ref}")
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
    from vowvault import sources
    from vowvault.engine import backup as engine
    from vowvault.engine import kek
    from vowvault.keys import new_dek
    from vowvault.sources.directory import TreeRewrite

    with ctx.catalog.read() as s:
        old = s.get(BackupJob, job_id)
        assert old is not None
        policy = s.get(BackupPolicy, old.policy_id)
        assert policy is not None
        view = engine.PolicyView.of(policy)
        secrets = {t["url"]: t.get("credentials_secret") for t in view.targets}
        rows = s.execute(sa.select(BackupStorage).where(
            BackupStorage.backup_job_id == old.id,
            BackupStorage.object_kind == ObjectKind.DATA)).scalars()
        targets = sorted((engine.Target(url=r.storage_url, tier=r.storage_tier, required=True,
                                        role=r.copy_role,
                                        credentials_secret=secrets.get(r.storage_url))
                          for r in rows), key=lambda t: t.role != CopyRole.PRIMARY)
        stored = objects.read_stored(s, old)
        original = {"job_name": old.job_name, "priority": old.priority,
                    "scheduled_at": old.scheduled_at, "created_at": old.created_at,
                    "is_wedding_day_backup": old.is_wedding_day_backup,
                    "related_wedding_ids": old.related_wedding_ids,
                    "legal_hold": old.legal_hold}
        original_times = (old.created_at, old.completed_at, old.expires_at)
    tree = objects.open_tree(ctx, stored)
    key = kek.ensure_active_key(ctx, view.organization_id, view.key_provider)
    new_id = uuid.uuid4()
    dek = new_dek()
    prepared = engine.Prepared(new_id, view, BackupType.FULL, None, targets, dek, key,
                               kek.wrap(ctx, key, dek, new_id))
    driver = sources.driver(SourceKind.DIRECTORY)
    copies = engine.copies_of(ctx, view.org_slug, targets)
    with ctx.catalog.session() as s:
        job = BackupJob(id=new_id, organization_id=view.organization_id, policy_id=view.id,
                        backup_type=BackupType.FULL, status=BackupStatus.IN_PROGRESS,
                        **{**original, "job_name": f"{original['job_name']}-erased"})
        s.add(job)
        s.flush()
        engine.record_started(ctx, s, job, prepared, driver, copies)
    engine.launch(ctx, prepared, driver, TreeRewrite(tree, patterns), copies)
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
