"""Organizations' key-encryption keys as the catalog knows them (references, versions),
and the operations on them: first use, wrapping, unwrapping, rotation, shredding.

A KEK version is read from the catalog as a ``KeyRecord`` (plain values) in a short
transaction; wrapping, unwrapping, creating and destroying keys talk to the key provider
(a file, a Prefect server, KMS) outside any transaction.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vowvault.catalog import audit
from vowvault.catalog.models import BackupJob, EncryptionKey, Organization
from vowvault.domain import KeyStatus
from vowvault.engine.context import Context, log
from vowvault.errors import ConfigError, KeyUnavailableError, NotFound
from vowvault.keys import KeyContext
from vowvault.repository import Copy
from vowvault.repository.keyobject import KeyObject
from vowvault.repository.layout import KEY

ROTATION_PERIOD = dt.timedelta(days=90)


@dataclass(frozen=True)
class KeyRecord:
    """One version of an organization's KEK, as the catalog records it."""

    id: uuid.UUID
    organization_id: uuid.UUID
    org_slug: str
    version: int
    provider: str
    key_ref: str
    status: KeyStatus
    destroyed_at: dt.datetime | None = None

    @classmethod
    def of(cls, row: EncryptionKey, slug: str) -> KeyRecord:
        return cls(row.id, row.organization_id, slug, row.version, row.provider, row.key_ref,
                   row.status, row.destroyed_at)

    def context(self, backup_id: uuid.UUID) -> KeyContext:
        return KeyContext(self.organization_id, self.org_slug, backup_id, self.version)

    def key_object(self, backup_id: uuid.UUID, wrapped: bytes) -> KeyObject:
        return KeyObject(backup_id, self.organization_id, self.provider, self.key_ref,
                         self.version, wrapped)


def wrap(ctx: Context, key: KeyRecord, dek: bytes, backup_id: uuid.UUID) -> bytes:
    return ctx.keys(key.provider).wrap(key.key_ref, dek, key.context(backup_id))


def unwrap(ctx: Context, key: KeyRecord, wrapped: bytes, backup_id: uuid.UUID) -> bytes:
    if key.status == KeyStatus.DESTROYED:
        raise KeyUnavailableError(f"key version {key.version} of {key.org_slug} was destroyed "
                                  f"on {key.destroyed_at:%Y-%m-%d}" if key.destroyed_at else
                                  f"key version {key.version} of {key.org_slug} was destroyed")
    return ctx.keys(key.provider).unwrap(key.key_ref, wrapped, key.context(backup_id))


def read_key(session: Session, key_id: uuid.UUID | None) -> KeyRecord | None:
    row = session.get(EncryptionKey, key_id) if key_id is not None else None
    if row is None:
        return None
    org = session.get(Organization, row.organization_id)
    return KeyRecord.of(row, org.slug if org else "?")


def org_keys(session: Session, org_id: uuid.UUID) -> dict[int, KeyRecord]:
    """Every version of an organization's KEK, by version."""
    org = session.get(Organization, org_id)
    slug = org.slug if org else "?"
    return {r.version: KeyRecord.of(r, slug) for r in session.execute(
        sa.select(EncryptionKey).where(EncryptionKey.organization_id == org_id)).scalars()}


def ensure_active_key(ctx: Context, org_id: uuid.UUID, provider_name: str) -> KeyRecord:
    """The organization's active KEK version; version 1 is created on first use."""
    with ctx.catalog.read() as s:
        org = s.get(Organization, org_id)
        assert org is not None
        if org.shredded_at is not None:
            raise KeyUnavailableError(f"organization {org.slug} was crypto-shredded on "
                                      f"{org.shredded_at:%Y-%m-%d}: it can have no new backups")
        row = _active(s, org_id)
        if row is not None:
            return KeyRecord.of(row, org.slug)
        slug = org.slug
    return create_version(ctx, org_id, slug, provider_name, 1)


def _active(session: Session, org_id: uuid.UUID) -> EncryptionKey | None:
    return session.execute(sa.select(EncryptionKey).where(
        EncryptionKey.organization_id == org_id, EncryptionKey.status == KeyStatus.ACTIVE)
    ).scalar_one_or_none()


def create_version(ctx: Context, org_id: uuid.UUID, slug: str, provider_name: str,
                   version: int, *, retire: uuid.UUID | None = None) -> KeyRecord:
    """Make version ``version`` with the provider (which adopts one that exists), then
    record it active (retiring ``retire`` in the same transaction). Two processes doing this
    at once end with one row: the loser adopts the winner's."""
    keys = ctx.keys(provider_name)
    ref = keys.create(org_id, slug, version)
    now = ctx.clock()
    try:
        with ctx.catalog.session() as s:
            if retire is not None:
                old = s.get(EncryptionKey, retire)
                if old is not None and old.status == KeyStatus.ACTIVE:
                    old.status, old.retired_at = KeyStatus.RETIRED, now
                    s.flush()
            row = EncryptionKey(id=uuid.uuid4(), organization_id=org_id, version=version,
                                provider=keys.name, key_ref=ref, status=KeyStatus.ACTIVE,
                                rotation_due_at=now + ROTATION_PERIOD, created_at=now)
            s.add(row)
            s.flush()
            audit.record(s, actor=ctx.settings.actor, action="key.create",
                         target_type="encryption_key", target_id=row.id,
                         organization_id=org_id,
                         summary=f"key-encryption key v{version} of {slug} created "
                                 f"({keys.name})",
                         after={"version": version, "provider": keys.name})
            return KeyRecord.of(row, slug)
    except sa.exc.IntegrityError:
        with ctx.catalog.read() as s:
            row = _active(s, org_id)
            if row is None:
                raise
            return KeyRecord.of(row, slug)


# -- rotation -------------------------------------------------------------------------------

def _org(session: Session, slug: str) -> Organization:
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
    t0 = time.perf_counter()
    with ctx.catalog.read() as s:
        org = _org(s, slug)
        if org.shredded_at is not None:
            raise KeyUnavailableError(f"organization {slug} was crypto-shredded")
        org_id = org.id
        current = _active(s, org_id)
        current_id = current.id if current else None
        current_provider = current.provider if current else None
        pending = _pending(s, org_id, current_id)
        latest = s.execute(sa.select(sa.func.max(EncryptionKey.version)).where(
            EncryptionKey.organization_id == org_id)).scalar() or 0
    resumed = current_id is not None and bool(pending)
    if resumed:
        with ctx.catalog.read() as s:
            active = read_key(s, current_id)
        assert active is not None
    else:
        active = create_version(ctx, org_id, slug, provider_name or current_provider or "local",
                                latest + 1, retire=current_id)
    with ctx.catalog.read() as s:
        todo = _pending(s, org_id, active.id)
    done = 0
    for job_id in todo:
        _rewrap_one(ctx, job_id, active.id)
        done += 1
    with ctx.catalog.session() as s:
        audit.record(s, actor=ctx.settings.actor, action="key.rotate",
                     target_type="organization", target_id=org_id, organization_id=org_id,
                     summary=f"key-encryption key of {slug} rotated to v{active.version}: "
                             f"{done} data keys re-wrapped" + (" (resumed)" if resumed else ""),
                     after={"version": active.version, "rewrapped": done})
    return {"organization": slug, "version": active.version, "rewrapped": done,
            "resumed": resumed, "seconds": round(time.perf_counter() - t0, 3)}


def _pending(session: Session, org_id: uuid.UUID, active_id: uuid.UUID | None) -> list[uuid.UUID]:
    query = sa.select(BackupJob.id).where(
        BackupJob.organization_id == org_id, BackupJob.wrapped_dek.is_not(None),
        BackupJob.deletion_date.is_(None))
    if active_id is not None:
        query = query.where(BackupJob.encryption_key_id != active_id)
    return list(session.execute(query.order_by(BackupJob.created_at)).scalars())


def _rewrap_one(ctx: Context, job_id: uuid.UUID, active_id: uuid.UUID) -> None:
    """One backup's data key under the active version: every copy's key object first (a
    crash after it leaves the catalog on the old version, which still opens the data; the
    key object's new wrapping opens it too), then the catalog."""
    from vowvault.engine import objects

    with ctx.catalog.read() as s:
        stored = objects.read_stored(s, job_id)
        new = read_key(s, active_id)
    assert new is not None
    dek = objects.data_key(ctx, stored)
    wrapped = wrap(ctx, new, dek, job_id)
    doc = new.key_object(job_id, wrapped).to_bytes()
    copies: list[Copy] = objects.copies(ctx, stored)
    for copy in copies:
        copy.backend.save(stored.location.name(KEY), [doc])
    with ctx.catalog.session() as s:
        job = s.get(BackupJob, job_id)
        assert job is not None
        job.encryption_key_id, job.wrapped_dek = new.id, wrapped


def retire_unused(ctx: Context, slug: str) -> list[int]:
    """Versions no backup uses any more are destroyed (after a completed rotation)."""
    with ctx.catalog.read() as s:
        org = _org(s, slug)
        org_id = org.id
        unused = []
        for key in s.execute(sa.select(EncryptionKey).where(
                EncryptionKey.organization_id == org_id,
                EncryptionKey.status == KeyStatus.RETIRED)).scalars():
            used = s.execute(sa.select(sa.func.count()).where(
                BackupJob.encryption_key_id == key.id,
                BackupJob.deletion_date.is_(None))).scalar()
            if not used:
                unused.append(KeyRecord.of(key, slug))
    destroyed = []
    for key in unused:
        ctx.keys(key.provider).destroy(org_id, slug, key.version, key.key_ref)
        with ctx.catalog.session() as s:
            row = s.get(EncryptionKey, key.id)
            assert row is not None
            row.status, row.destroyed_at = KeyStatus.DESTROYED, ctx.clock()
        destroyed.append(key.version)
    if destroyed:
        with ctx.catalog.session() as s:
            audit.record(s, actor=ctx.settings.actor, action="key.destroy_retired",
                         target_type="organization", target_id=org_id,
                         organization_id=org_id,
                         summary=f"retired key versions {destroyed} of {slug} destroyed")
    return destroyed


def key_status(ctx: Context) -> list[dict[str, object]]:
    """Every organization's key versions, with age and whether rotation is overdue."""
    now = ctx.clock()
    out = []
    with ctx.catalog.read() as s:
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
        with ctx.catalog.read() as s:
            org_id = _org(s, str(k["organization"])).id
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
    objects for deletion; the act is audited. Idempotent (run again after an interruption,
    it finishes)."""
    from vowvault.catalog.models import BackupPolicy, BackupStorage
    from vowvault.domain import BackupStatus, CopyStatus

    if confirm != slug:
        raise ConfigError(f"crypto-shredding {slug} destroys every backup of it for ever: "
                          f"confirm with --confirm {slug}")
    with ctx.catalog.read() as s:
        org_id = _org(s, slug).id
        keys = list(org_keys(s, org_id).values())
    for key in keys:  # the keys first: from here on, nothing of the organization opens
        if key.status != KeyStatus.DESTROYED:
            ctx.keys(key.provider).destroy(org_id, slug, key.version, key.key_ref)
            log.warning("key version %d of %s destroyed (crypto-shredding)", key.version, slug)
    now = ctx.clock()
    with ctx.catalog.session() as s:
        org = _org(s, slug)
        for key in s.execute(sa.select(EncryptionKey).where(
                EncryptionKey.organization_id == org_id)).scalars():
            if key.status != KeyStatus.DESTROYED:
                key.status, key.destroyed_at = KeyStatus.DESTROYED, now
        org.shredded_at = org.shredded_at or now
        org.is_active = False
        s.execute(sa.update(BackupPolicy).where(BackupPolicy.organization_id == org_id)
                  .values(is_active=False))
        jobs = s.execute(sa.update(BackupJob).where(
            BackupJob.organization_id == org_id, BackupJob.deletion_date.is_(None))
            .values(status=BackupStatus.EXPIRED, deletion_date=now,
                    error_message="unrecoverable: the organization's keys were destroyed "
                                  "(crypto-shredded)"))
        s.execute(sa.update(BackupStorage).where(
            BackupStorage.organization_id == org_id,
            BackupStorage.status.not_in([CopyStatus.DELETED]))
            .values(status=CopyStatus.DELETING, deletion_date=now))
        audit.record(s, actor=ctx.settings.actor, action="organization.shred",
                     target_type="organization", target_id=org_id, organization_id=org_id,
                     summary=f"{slug} crypto-shredded: {len(keys)} key versions destroyed, "
                             f"{jobs.rowcount} backups unrecoverable, objects scheduled for "
                             f"deletion")
        return {"organization": slug, "keys_destroyed": len(keys), "backups": jobs.rowcount}
