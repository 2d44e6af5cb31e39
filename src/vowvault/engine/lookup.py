"""Finding what people name: backups by the ids they type (a full id or a unique prefix of
8+ characters), policies by name."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vowvault.catalog.models import BackupJob, BackupPolicy
from vowvault.errors import ConfigError, NotFound


def find_backup(session: Session, ref: str) -> BackupJob:
    ref = ref.strip().lower()
    try:
        exact = uuid.UUID(ref)
    except ValueError:
        exact = None
    if exact is not None:
        job = session.get(BackupJob, exact)
    else:
        if len(ref) < 8 or not all(c in "0123456789abcdef-" for c in ref):
            raise ConfigError(f"{ref!r} is not a backup id (give the id, or at least its first "
                              f"8 characters, as `vowvault backup list` shows)")
        matches = _by_prefix(session, ref)
        if len(matches) > 1:
            raise ConfigError(f"backup id prefix {ref!r} is ambiguous: "
                              + ", ".join(str(m.id) for m in matches[:5]))
        job = matches[0] if matches else None
    if job is None:
        raise NotFound(f"no backup {ref}; see `vowvault backup list`")
    return job


def _by_prefix(session: Session, ref: str) -> list[BackupJob]:
    # The catalog stores UUIDs natively (PostgreSQL) or as 32 hex digits (SQLite): compare
    # on the text form without dashes, which both can produce.
    bare = ref.replace("-", "")
    column = sa.func.replace(sa.cast(BackupJob.id, sa.String), "-", "")
    return list(session.execute(sa.select(BackupJob).where(column.like(bare + "%")).limit(6))
                .scalars())


def check_policy(session: Session, name: str | None) -> None:
    """``NotFound`` unless ``name`` (when given) is a policy's, active or not."""
    if name is not None and session.execute(
            sa.select(BackupPolicy.id).where(BackupPolicy.name == name)).first() is None:
        raise NotFound(f"no policy named {name!r}; see `vowvault policies list --all`")
