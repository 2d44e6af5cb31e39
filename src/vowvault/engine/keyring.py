"""Organizations' key-encryption keys as the catalog knows them (references, versions)."""

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
from vowvault.keys import unwrap_dek

ROTATION_PERIOD = dt.timedelta(days=90)


def active_key(ctx: Context, session: Session, org: Organization,
               provider_name: str) -> tuple[EncryptionKey, bytes]:
    """The organization's active KEK (created, version 1, on first use) and its bytes."""
    if org.shredded_at is not None:
        raise KeyUnavailableError(f"organization {org.slug} was crypto-shredded on "
                                  f"{org.shredded_at:%Y-%m-%d}: it can have no new backups")
    row = session.execute(sa.select(EncryptionKey).where(
        EncryptionKey.organization_id == org.id, EncryptionKey.status == KeyStatus.ACTIVE)
    ).scalar_one_or_none()
    keys = ctx.keys(provider_name)
    if row is None:
        ref = keys.create(org.id, org.slug, 1)
        now = ctx.clock()
        row = EncryptionKey(id=uuid.uuid4(), organization_id=org.id, version=1,
                            provider=keys.name, key_ref=ref, status=KeyStatus.ACTIVE,
                            rotation_due_at=now + ROTATION_PERIOD)
        session.add(row)
        session.flush()
        audit.record(session, actor=ctx.settings.actor, action="key.create",
                     target_type="encryption_key", target_id=row.id, organization_id=org.id,
                     summary=f"key-encryption key v1 of {org.slug} created ({keys.name})",
                     after={"version": 1, "provider": keys.name})
    return row, ctx.keys(row.provider).load(org.id, org.slug, row.version, row.key_ref)


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
    if row is None or row.status == KeyStatus.DESTROYED:
        raise KeyUnavailableError(f"the key that sealed backup {backup_id} was destroyed")
    kek = ctx.keys(row.provider).load(org.id, org.slug, row.version, row.key_ref)
    return unwrap_dek(kek, wrapped, org_id=org.id, backup_id=backup_id, version=row.version)
