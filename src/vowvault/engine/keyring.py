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
