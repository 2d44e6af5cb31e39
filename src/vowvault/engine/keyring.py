"""Organizations' key-encryption keys as the catalog knows them (references, versions),
and the operations on them: first use, wrapping, unwrapping, rotation, shredding."""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vowvault.catalog import audit
from vowvault.catalog.enums import KeyStatus
from vowvault.catalog.models import EncryptionKey, Organization
from vowvault.engine.context import Context
from vowvault.errors import KeyUnavailableError
from vowvault.keys import KeyContext

ROTATION_PERIOD = dt.timedelta(days=90)


def active_key(ctx: Context, session: Session, org: Organization,
               provider_name: str) -> EncryptionKey:
    """The organization's active KEK version (version 1 is created on first use)."""
    if org.shredded_at is not None:
        raise KeyUnavailableError(f"organization {org.slug} was crypto-shredded on "
                                  f"{org.shredded_at:%Y-%m-%d}: it can have no new backups")
    row = session.execute(sa.select(EncryptionKey).where(
        EncryptionKey.organization_id == org.id, EncryptionKey.status == KeyStatus.ACTIVE)
    ).scalar_one_or_none()
    if row is None:
        row = create_version(ctx, session, org, provider_name, 1)
    return row


def create_version(ctx: Context, session: Session, org: Organization, provider_name: str,
                   version: int) -> EncryptionKey:
    keys = ctx.keys(provider_name)
    ref = keys.create(org.id, org.slug, version)
    now = ctx.clock()
    row = EncryptionKey(id=uuid.uuid4(), organization_id=org.id, version=version,
                        provider=keys.name, key_ref=ref, status=KeyStatus.ACTIVE,
                        rotation_due_at=now + ROTATION_PERIOD, created_at=now)
    session.add(row)
    session.flush()
    audit.record(session, actor=ctx.settings.actor, action="key.create",
                 target_type="encryption_key", target_id=row.id, organization_id=org.id,
                 summary=f"key-encryption key v{version} of {org.slug} created ({keys.name})",
                 after={"version": version, "provider": keys.name})
    return row


def wrap(ctx: Context, org: Organization, key: EncryptionKey, dek: bytes,
         backup_id: uuid.UUID) -> bytes:
    return ctx.keys(key.provider).wrap(
        key.key_ref, dek, KeyContext(org.id, org.slug, backup_id, key.version))


def unwrap(ctx: Context, org: Organization, key: EncryptionKey, wrapped: bytes,
           backup_id: uuid.UUID) -> bytes:
    if key.status == KeyStatus.DESTROYED:
        raise KeyUnavailableError(f"key version {key.version} of {org.slug} was destroyed on "
                                  f"{key.destroyed_at:%Y-%m-%d}" if key.destroyed_at else
                                  f"key version {key.version} of {org.slug} was destroyed")
    return ctx.keys(key.provider).unwrap(
        key.key_ref, wrapped, KeyContext(org.id, org.slug, backup_id, key.version))


def data_key(ctx: Context, session: Session, org: Organization, key_id: uuid.UUID | None,
             wrapped: bytes | None, backup_id: uuid.UUID) -> bytes:
    """Unwrap a backup's data key with the KEK version that wrapped it."""
    if org.shredded_at is not None:
        raise KeyUnavailableError(
            f"backup {backup_id} is unrecoverable: organization {org.slug} was crypto-shredded "
            f"on {org.shredded_at:%Y-%m-%d} and its keys destroyed")
    if key_id is None or wrapped is None:
        raise KeyUnavailableError(f"backup {backup_id} records no data key")
    row = session.get(EncryptionKey, key_id)
    if row is None:
        raise KeyUnavailableError(f"the key that sealed backup {backup_id} is not in the "
                                  f"catalog")
    return unwrap(ctx, org, row, wrapped, backup_id)


# -- rotation -------------------------------------------------------------------------------

def _org(session: Session, slug: str) -> Organization:
    from vowvault.errors import NotFound

    org = session.execute(sa.select(Organization).where(Organization.slug == slug)
                          ).scalar_one_or_none()
    if org is None:
        raise NotFound(f"no organization {slug!r}; see `vowvault orgs list`")
    return org


def rotate(ctx: Context, slug: str, provider_name: str | None = None) -> dict[str, object]:
    """Rotate an organization's KEK: a new version becomes active (new backups use it), every
    data key of the organization is re-wrapped under it (key objects on every copy first,
    then the catalog, one backup at a time), and the old versions are retired. Backup data
    is never rewritten. Interrupted, it resumes where it stopped when run again (it does not
    start yet another version while backups still wait to be re-wrapped)."""
    import time

    t0 = time.perf_counter()
    with ctx.catalog.session() as s:
        org = _org(s, slug)
        if org.shredded_at is not None:
            raise KeyUnavailableError(f"organization {slug} was crypto-shredded")
        current = s.execute(sa.select(EncryptionKey).where(
            EncryptionKey.organization_id == org.id,
            EncryptionKey.status == KeyStatus.ACTIVE)).scalar_one_or_none()
        pending = _pending(s, org.id, current.id if current else None)
        if current is None or not pending:
            latest = s.execute(sa.select(sa.func.max(EncryptionKey.version)).where(
                EncryptionKey.organization_id == org.id)).scalar() or 0
            name = provider_name or (current.provider if current else "local")
            if current is not None:
                current.status = KeyStatus.RETIRED
                current.retired_at = ctx.clock()
                s.flush()
            current = create_version(ctx, s, org, name, latest + 1)
            resumed = False
        else:
            resumed = True
        active_id, version = current.id, current.version
        todo = _pending(s, org.id, active_id)
    done = 0
    for job_id in todo:
        _rewrap_one(ctx, job_id, active_id)
        done += 1
    with ctx.catalog.session() as s:
        org = _org(s, slug)
        audit.record(s, actor=ctx.settings.actor, action="key.rotate",
                     target_type="organization", target_id=org.id, organization_id=org.id,
                     summary=f"key-encryption key of {slug} rotated to v{version}: {done} data "
                             f"keys re-wrapped" + (" (resumed)" if resumed else ""),
                     after={"version": version, "rewrapped": done})
    return {"organization": slug, "version": version, "rewrapped": done, "resumed": resumed,
            "seconds": round(time.perf_counter() - t0, 3)}


def _pending(session: Session, org_id: uuid.UUID, active_id: uuid.UUID | None) -> list[uuid.UUID]:
    from vowvault.catalog.models import BackupJob

    query = sa.select(BackupJob.id).where(
        BackupJob.organization_id == org_id, BackupJob.wrapped_dek.is_not(None),
        BackupJob.deletion_date.is_(None))
    if active_id is not None:
        query = query.where(BackupJob.encryption_key_id != active_id)
    return list(session.execute(query.order_by(BackupJob.created_at)).scalars())


def _rewrap_one(ctx: Context, job_id: uuid.UUID, active_id: uuid.UUID) -> None:
    import base64
    import json

    from vowvault.catalog.models import BackupJob
    from vowvault.engine.objects import copies, object_name

    with ctx.catalog.session() as s:
        job = s.get(BackupJob, job_id)
        org = s.get(Organization, job.organization_id) if job else None
        new = s.get(EncryptionKey, active_id)
        assert job is not None and org is not None and new is not None
        dek = data_key(ctx, s, org, job.encryption_key_id, job.wrapped_dek, job.id)
        wrapped = wrap(ctx, org, new, dek, job.id)
        doc = json.dumps({
            "format": 1, "backup_id": str(job.id), "organization_id": str(org.id),
            "kek": {"provider": new.provider, "key_ref": new.key_ref, "version": new.version},
            "algorithm": "AES-256-GCM", "wrapped_dek": base64.b64encode(wrapped).decode(),
        }, sort_keys=True).encode()
        for copy in copies(ctx, s, job):
            # Storage first: a crash here leaves the catalog on the old version, which
            # still opens the data; the key object's new wrapping opens it too.
            copy.backend.save(object_name(job, "key"), [doc])
        job.encryption_key_id, job.wrapped_dek = new.id, wrapped


def retire_unused(ctx: Context, slug: str) -> list[int]:
    """Versions no backup uses any more are destroyed (after a completed rotation)."""
    from vowvault.catalog.models import BackupJob

    destroyed = []
    with ctx.catalog.session() as s:
        org = _org(s, slug)
        for key in s.execute(sa.select(EncryptionKey).where(
                EncryptionKey.organization_id == org.id,
                EncryptionKey.status == KeyStatus.RETIRED)).scalars():
            used = s.execute(sa.select(sa.func.count()).where(
                BackupJob.encryption_key_id == key.id,
                BackupJob.deletion_date.is_(None))).scalar()
            if used:
                continue
            ctx.keys(key.provider).destroy(org.id, org.slug, key.version, key.key_ref)
            key.status, key.destroyed_at = KeyStatus.DESTROYED, ctx.clock()
            destroyed.append(key.version)
        if destroyed:
            audit.record(s, actor=ctx.settings.actor, action="key.destroy_retired",
                         target_type="organization", target_id=org.id, organization_id=org.id,
                         summary=f"retired key versions {destroyed} of {slug} destroyed")
    return destroyed


def key_status(ctx: Context) -> list[dict[str, object]]:
    """Every organization's key versions, with age and whether rotation is overdue."""
    now = ctx.clock()
    out = []
    with ctx.catalog.session() as s:
        rows = s.execute(sa.select(EncryptionKey, Organization.slug).join(
            Organization, Organization.id == EncryptionKey.organization_id)
            .order_by(Organization.slug, EncryptionKey.version))
        for key, slug in rows:
            age = (now - key.created_at).days
            out.append({"organization": slug, "version": key.version,
                        "provider": key.provider, "status": key.status.value, "age_days": age,
                        "rotation_due": key.status == KeyStatus.ACTIVE
                        and key.rotation_due_at is not None and key.rotation_due_at <= now})
    return out


def notify_rotation_due(ctx: Context) -> list[dict[str, object]]:
    """Active keys past their rotation date, each announced once to the organization's
    webhooks (event ``key_rotation_due``); returns every key that is due."""
    from vowvault.catalog.models import WebhookDelivery
    from vowvault.engine import webhooks

    due = [k for k in key_status(ctx) if k["rotation_due"]]
    for k in due:
        with ctx.catalog.session() as s:
            org = _org(s, str(k["organization"]))
            org_id = org.id
            sent = s.execute(sa.select(WebhookDelivery.payload).where(
                WebhookDelivery.organization_id == org_id,
                WebhookDelivery.event_type == "key_rotation_due")).scalars()
            if any(p.get("key_version") == k["version"] for p in sent):
                continue
        webhooks.emit(ctx, org_id, "key_rotation_due", {
            "organization": k["organization"], "key_version": k["version"],
            "age_days": k["age_days"], "provider": k["provider"],
            "action": f"vowvault keys rotate {k['organization']}"})
    return due


# -- crypto-shredding -----------------------------------------------------------------------

def shred(ctx: Context, slug: str, confirm: str) -> dict[str, object]:
    """Destroy every version of an organization's KEK: every copy of every backup of it
    becomes unreadable at once. The catalog marks its backups unrecoverable and their
    objects for deletion; the act is audited. Idempotent."""
    from vowvault.catalog.enums import BackupStatus, CopyStatus
    from vowvault.catalog.models import BackupJob, BackupPolicy, BackupStorage
    from vowvault.errors import ConfigError

    if confirm != slug:
        raise ConfigError(f"crypto-shredding {slug} destroys every backup of it for ever: "
                          f"confirm with --confirm {slug}")
    now = ctx.clock()
    with ctx.catalog.session() as s:
        org = _org(s, slug)
        keys = list(s.execute(sa.select(EncryptionKey).where(
            EncryptionKey.organization_id == org.id)).scalars())
        for key in keys:
            if key.status != KeyStatus.DESTROYED:
                ctx.keys(key.provider).destroy(org.id, org.slug, key.version, key.key_ref)
                key.status, key.destroyed_at = KeyStatus.DESTROYED, now
        org.shredded_at = org.shredded_at or now
        org.is_active = False
        s.execute(sa.update(BackupPolicy).where(BackupPolicy.organization_id == org.id)
                  .values(is_active=False))
        jobs = s.execute(sa.update(BackupJob).where(
            BackupJob.organization_id == org.id, BackupJob.deletion_date.is_(None))
            .values(status=BackupStatus.EXPIRED, deletion_date=now,
                    error_message="unrecoverable: the organization's keys were destroyed "
                                  "(crypto-shredded)"))
        s.execute(sa.update(BackupStorage).where(
            BackupStorage.organization_id == org.id,
            BackupStorage.status.not_in([CopyStatus.DELETED]))
            .values(status=CopyStatus.DELETING, deletion_date=now))
        audit.record(s, actor=ctx.settings.actor, action="organization.shred",
                     target_type="organization", target_id=org.id, organization_id=org.id,
                     summary=f"{slug} crypto-shredded: {len(keys)} key versions destroyed, "
                             f"{jobs.rowcount} backups unrecoverable, objects scheduled for "
                             f"deletion")
        return {"organization": slug, "keys_destroyed": len(keys), "backups": jobs.rowcount}
