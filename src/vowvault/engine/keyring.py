"""Operations on organizations' key-encryption keys: rotation, destroying retired versions,
status and rotation reminders, crypto-shredding (the primitives are in ``kek``).

Each step reads the catalog in a short transaction and talks to the key provider and the
storage targets outside it.
"""

from __future__ import annotations

import time
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vowvault.catalog import audit
from vowvault.catalog.models import BackupJob, EncryptionKey, Organization
from vowvault.domain import KeyStatus
from vowvault.engine import objects
from vowvault.engine.context import Context, log
from vowvault.engine.kek import KeyRecord, active, create_version, org_keys, read_key, wrap
from vowvault.errors import ConfigError, KeyUnavailableError, NotFound
from vowvault.repository import Copy
from vowvault.repository.layout import KEY

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
        current = active(s, org_id)
        current_id = current.id if current else None
        current_provider = current.provider if current else None
        pending = _pending(s, org_id, current_id)
        latest = s.execute(sa.select(sa.func.max(EncryptionKey.version)).where(
            EncryptionKey.organization_id == org_id)).scalar() or 0
    resumed = current_id is not None and bool(pending)
    if resumed:
        with ctx.catalog.read() as s:
            new = read_key(s, current_id)
        assert new is not None
    else:
        new = create_version(ctx, org_id, slug, provider_name or current_provider or "local",
                                latest + 1, retire=current_id)
    with ctx.catalog.read() as s:
        todo = _pending(s, org_id, new.id)
    done = 0
    for job_id in todo:
        _rewrap_one(ctx, job_id, new.id)
        done += 1
    with ctx.catalog.session() as s:
        audit.record(s, actor=ctx.settings.actor, action="key.rotate",
                     target_type="organization", target_id=org_id, organization_id=org_id,
                     summary=f"key-encryption key of {slug} rotated to v{new.version}: "
                             f"{done} data keys re-wrapped" + (" (resumed)" if resumed else ""),
                     after={"version": new.version, "rewrapped": done})
    return {"organization": slug, "version": new.version, "rewrapped": done,
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


def export_keys(ctx: Context, slug: str, passphrase: str) -> tuple[bytes, list[int]]:
    """An escrow bundle of every live KEK version of the organization (``keys.escrow``);
    with the versions it holds. Audited. A KMS key cannot be exported: its material never
    leaves the service (protect it there: key policies, multi-region replicas)."""
    from vowvault.keys import KeyContext, MaterialProvider
    from vowvault.keys.escrow import EscrowedKey, seal

    with ctx.catalog.read() as s:
        org = _org(s, slug)
        org_id = org.id
        records = sorted((k for k in org_keys(s, org_id).values()
                          if k.status != KeyStatus.DESTROYED), key=lambda k: k.version)
    if not records:
        raise NotFound(f"organization {slug} has no key yet: its first backup makes one")
    escrowed = []
    for key in records:
        provider = ctx.keys(key.provider)
        if not isinstance(provider, MaterialProvider):
            raise ConfigError(f"key version {key.version} of {slug} is held by "
                              f"{key.provider}, whose key material never leaves it: there is "
                              f"nothing to export (docs/SECURITY.md says what protects it)")
        material = provider.material(key.key_ref, KeyContext(org_id, slug, org_id,
                                                             key.version))
        escrowed.append(EscrowedKey(key.version, key.key_ref, material))
    bundle = seal(org_id, slug, escrowed, passphrase)
    with ctx.catalog.session() as s:
        audit.record(s, actor=ctx.settings.actor, action="keys.export",
                     target_type="organization", target_id=org_id, organization_id=org_id,
                     summary=f"key versions {[k.version for k in records]} of {slug} exported "
                             f"to an escrow bundle")
    return bundle, [k.version for k in records]


def import_keys(ctx: Context, bundle: bytes, passphrase: str) -> tuple[str, list[int]]:
    """Put an escrow bundle's key versions back into the local key store; the versions
    written (those already there with the same bytes are left). Audited when the catalog
    knows the organization."""
    from vowvault.keys import LocalKeyFile
    from vowvault.keys.escrow import open_bundle

    org_id, slug, keys = open_bundle(bundle, passphrase)
    store = ctx.keys("local")
    assert isinstance(store, LocalKeyFile)
    with ctx.catalog.read() as s:
        org = s.get(Organization, org_id)
        if org is not None and org.slug != slug:
            raise ConfigError(f"the bundle is of organization {slug} ({org_id}), which this "
                              f"catalog knows as {org.slug}")
        known = org is not None
    written = [k.version for k in keys if store.adopt(org_id, k.version, k.material)]
    if known:
        with ctx.catalog.session() as s:
            audit.record(s, actor=ctx.settings.actor, action="keys.import",
                         target_type="organization", target_id=org_id,
                         organization_id=org_id,
                         summary=f"key versions {written} of {slug} imported from escrow")
    return slug, written
