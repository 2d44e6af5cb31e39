"""Organizations' key-encryption keys as the catalog records them (references and versions,
never key material), and the primitives on them: first use, wrapping, unwrapping.

A KEK version is read from the catalog as a ``KeyRecord`` (plain values) in a short
transaction; wrapping, unwrapping and creating keys talk to the key provider (a file, a
Prefect server, KMS) outside any transaction.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vowvault.catalog import audit
from vowvault.catalog.models import EncryptionKey, Organization
from vowvault.domain import KeyStatus
from vowvault.engine.context import Context
from vowvault.errors import KeyUnavailableError
from vowvault.keys import KeyContext
from vowvault.repository.keyobject import KeyObject

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
        row = active(s, org_id)
        if row is not None:
            return KeyRecord.of(row, org.slug)
        slug = org.slug
    return create_version(ctx, org_id, slug, provider_name, 1)


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
            row = active(s, org_id)
            if row is None:
                raise
            return KeyRecord.of(row, slug)


def active(session: Session, org_id: uuid.UUID) -> EncryptionKey | None:
    return session.execute(sa.select(EncryptionKey).where(
        EncryptionKey.organization_id == org_id, EncryptionKey.status == KeyStatus.ACTIVE)
    ).scalar_one_or_none()
