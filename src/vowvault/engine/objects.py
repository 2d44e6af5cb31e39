"""A stored backup as the data plane needs it, from the catalog.

``read_stored`` (inside a short transaction) turns a backup's catalog rows into plain
values: where its objects live, which targets hold a copy and with which credentials, its
wrapped data key and the KEK version that wrapped it, the backups it references. Outside
the transaction, ``data_key`` unwraps the key (the key provider may be a remote service),
``copies`` opens the targets' backends, and ``open_reader`` / ``open_tree`` hand back the
data plane's readers. ``remove_objects`` is the one way a backup's objects are deleted.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vowvault.catalog.models import BackupJob, BackupStorage, Organization
from vowvault.domain import BackupStatus, CopyHealth, CopyRole, CopyStatus, ObjectKind
from vowvault.engine import targets
from vowvault.engine.context import Context, log
from vowvault.engine.kek import KeyRecord, read_key, unwrap
from vowvault.engine.targets import TargetState
from vowvault.errors import KeyUnavailableError, RestoreError, StorageError, VowvaultError
from vowvault.repository import BackupLocation, Copy
from vowvault.repository.reader import BackupReader
from vowvault.repository.tree import TreeReader
from vowvault.repository.writer import remove_backup


@dataclass(frozen=True)
class CopyRef:
    """A target holding (or meant to hold) a copy of a backup, with its credentials."""

    url: str
    secret: str | None = None
    role: CopyRole = CopyRole.COPY
    health: CopyHealth = CopyHealth.UNCHECKED


@dataclass(frozen=True)
class StoredBackup:
    id: uuid.UUID
    location: BackupLocation
    status: BackupStatus
    policy_id: uuid.UUID | None
    org_slug: str
    shredded_at: dt.datetime | None
    key: KeyRecord | None
    wrapped_dek: bytes | None
    manifest_sha256: str | None
    targets: list[CopyRef] = field(default_factory=list)
    """Targets holding a readable copy (its manifest stored), primary first."""
    all_targets: list[CopyRef] = field(default_factory=list)
    """Every target the backup wrote to (or was to write to), for removal."""
    object_names: dict[str, list[str]] = field(default_factory=dict)
    """Target URL -> object names the catalog records there."""
    references: list[str] = field(default_factory=list)
    data_references: list[str] | None = None
    """Those of ``references`` whose data it takes files from (None: all of them; the
    others hold only index entries it takes)."""
    created_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    error_message: str | None = None


def target_secrets(job: BackupJob) -> dict[str, str]:
    """Target URL -> the credentials secret its policy names (none: the SDK's chain)."""
    targets = job.policy.storage_targets if job.policy is not None else []
    return {t["url"]: t["credentials_secret"] for t in targets
            if t.get("credentials_secret")}


def read_stored(session: Session, job_or_id: BackupJob | uuid.UUID) -> StoredBackup:
    job = job_or_id if isinstance(job_or_id, BackupJob) else session.get(BackupJob, job_or_id)
    if job is None:
        raise RestoreError(f"backup {job_or_id} is not in the catalog")
    org = session.get(Organization, job.organization_id)
    assert org is not None
    secrets = target_secrets(job)
    rows = list(session.execute(sa.select(BackupStorage).where(
        BackupStorage.backup_job_id == job.id)
        .order_by(BackupStorage.copy_role.desc(), BackupStorage.created_at)).scalars())
    readable: list[CopyRef] = []
    every: list[CopyRef] = []
    names: dict[str, list[str]] = {}
    for r in rows:
        target = CopyRef(r.storage_url, secrets.get(r.storage_url), r.copy_role, r.health)
        if r.status != CopyStatus.DELETED:
            names.setdefault(r.storage_url, []).append(r.file_path)
            if target.url not in {t.url for t in every}:
                every.append(target)
        if r.object_kind == ObjectKind.MANIFEST and r.status in (CopyStatus.STORED,
                                                                  CopyStatus.VERIFIED):
            readable.append(target)
    # Copies last found intact first, then unchecked ones, then those found wanting.
    rank = {CopyHealth.INTACT: 0, CopyHealth.UNCHECKED: 1, CopyHealth.UNREACHABLE: 2}
    readable.sort(key=lambda c: rank.get(c.health, 3))
    return StoredBackup(
        id=job.id, location=BackupLocation(job.organization_id, job.policy_id, job.id),
        status=job.status, policy_id=job.policy_id, org_slug=org.slug, shredded_at=org.shredded_at,
        key=read_key(session, job.encryption_key_id), wrapped_dek=job.wrapped_dek,
        manifest_sha256=job.manifest_sha256, targets=readable, all_targets=every,
        object_names=names, references=list((job.source_info or {}).get("references") or []),
        data_references=(job.source_info or {}).get("data_references"),
        created_at=job.created_at, completed_at=job.completed_at,
        error_message=job.error_message)


def data_key(ctx: Context, stored: StoredBackup) -> bytes:
    """Unwrap a backup's data key with the KEK version that wrapped it."""
    if stored.shredded_at is not None:
        raise KeyUnavailableError(
            f"backup {stored.id} is unrecoverable: organization {stored.org_slug} was "
            f"crypto-shredded on {stored.shredded_at:%Y-%m-%d} and its keys destroyed")
    if stored.key is None or stored.wrapped_dek is None:
        raise KeyUnavailableError(f"backup {stored.id} records no data key"
                                  if stored.wrapped_dek is None else
                                  f"the key that sealed backup {stored.id} is not in the "
                                  f"catalog")
    return unwrap(ctx, stored.key, stored.wrapped_dek, stored.id)


def allowed(ctx: Context, stored: StoredBackup, refs: list[CopyRef]) -> list[CopyRef]:
    """The targets among ``refs`` that the service lets the backup's organization use: a
    catalog row naming any other URL (a tenant's forgery, or a rule changed since) is left
    alone, and said so."""
    ok = [t for t in refs if ctx.rules.allows_storage(stored.org_slug, t.url)]
    refused = [t.url for t in refs if t not in ok]
    if refused:
        refusal(ctx, stored, f"copies on {', '.join(refused)}, which is not organization "
                             f"{stored.org_slug}'s storage: not touched")
    return ok


def refusal(ctx: Context, stored: StoredBackup, what: str) -> None:
    """Record that the catalog asked for something outside the backup's own place."""
    from vowvault.catalog import audit

    log.warning("backup %s: the catalog names %s", stored.id, what)
    with ctx.catalog.session() as s:
        audit.record(s, actor=ctx.settings.actor, action="storage.refused",
                     target_type="backup", target_id=stored.id,
                     organization_id=stored.location.organization_id,
                     summary=f"the catalog names {what}"[:1000])


def remove_from(ctx: Context, stored: StoredBackup, target: CopyRef) -> None:
    """Remove the backup's objects from one target (only names under its own prefix)."""
    refused = remove_backup(ctx.backend(target.url, target.secret, org=stored.org_slug),
                            stored.location, stored.object_names.get(target.url, []))
    if refused:
        refusal(ctx, stored, f"objects outside its prefix {stored.location.prefix} on "
                             f"{target.url} ({', '.join(refused[:5])}): not deleted")


def readable_copies(ctx: Context, stored: StoredBackup) -> tuple[list[Copy], list[TargetState]]:
    """The copies on available targets (best first), and the targets that are not."""
    found, unavailable = [], []
    for t in allowed(ctx, stored, stored.targets):
        state = targets.check(ctx, t.url, t.secret, org=stored.org_slug)
        if state.available:
            found.append(Copy(t.url, ctx.backend(t.url, t.secret, org=stored.org_slug),
                              marker=state.marker))
        else:
            unavailable.append(state)
    return found, unavailable


def copies(ctx: Context, stored: StoredBackup) -> list[Copy]:
    """The copies on available targets, best first."""
    return readable_copies(ctx, stored)[0]


def open_reader(ctx: Context, stored: StoredBackup) -> BackupReader:
    """A reader of every available copy (failing over between them), refusing a manifest
    other than the one recorded."""
    found, unavailable = readable_copies(ctx, stored)
    if not found and unavailable:
        raise StorageError(f"backup {stored.id} has no copy on an available target: "
                           + "; ".join(s.problem or s.url for s in unavailable))
    return BackupReader(stored.location, data_key(ctx, stored), found,
                        expected_manifest_sha=stored.manifest_sha256)


def open_references(ctx: Context, ids: list[str], *, archive_wait: float = 0.0,
                    kinds: list[str] | None = None, data_ids: list[str] | None = None
                    ) -> dict[str, BackupReader]:
    """Readers of the backups a file tree refers to (read in one transaction, opened
    outside it), their ``kinds`` of objects (default: data; only the index of those not in
    ``data_ids`` when it is given) made readable; a reference that is gone is an error
    naming it."""
    with ctx.catalog.read() as s:
        found = {}
        for ref in ids:
            job = s.get(BackupJob, uuid.UUID(ref))
            if job is None or job.deletion_date is not None:
                raise RestoreError(f"backup {ref}, which holds unchanged files of this one, "
                                   f"is gone from the catalog")
            found[ref] = read_stored(s, job)
    readers = {}
    for ref, stored in found.items():
        reader = open_reader(ctx, stored)
        wanted = kinds or (["data"] if data_ids is None or ref in data_ids else ["index"])
        reader.ensure_readable(wait=archive_wait, kinds=wanted)
        readers[ref] = reader
    return readers


def open_tree(ctx: Context, stored: StoredBackup, reader: BackupReader | None = None
              ) -> TreeReader:
    """The tree reader of a file-tree backup, its references resolved."""
    return TreeReader(reader or open_reader(ctx, stored),
                      open_references(ctx, stored.references,
                                      data_ids=stored.data_references))


def remove_objects(ctx: Context, stored: StoredBackup, *, reason: str,
                   urls: list[str] | None = None) -> list[str]:
    """Delete a backup's objects from its targets (or only ``urls``): the names its
    location derives from the catalog's ids, under the organization's own storage (see
    ``remove_backup`` and ``allowed``). Returns the targets where that failed (logged; the
    caller keeps their rows so that it is tried again)."""
    failed = []
    for target in allowed(ctx, stored, stored.all_targets):
        if urls is not None and target.url not in urls:
            continue
        try:
            remove_from(ctx, stored, target)
        except VowvaultError as exc:
            log.warning("could not remove the objects of backup %s from %s: %s (tried again "
                        "later)", stored.id, target.url, exc)
            failed.append(target.url)
    log.info("objects of backup %s removed (%s)", stored.id, reason)
    return failed
