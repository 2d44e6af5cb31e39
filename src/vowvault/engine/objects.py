"""Reading a backup's objects back: names, manifests, whole streams and byte ranges."""

from __future__ import annotations

import base64
import json
import uuid
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
import zstandard
from sqlalchemy.orm import Session

from vowvault.catalog.enums import CopyStatus, ObjectKind
from vowvault.catalog.models import BackupJob, BackupStorage, Organization
from vowvault.codec.frames import HEADER, RECORD_LEN, Opener, decompress
from vowvault.engine.context import Context, log
from vowvault.engine.keyring import data_key
from vowvault.errors import ArchivedObjectError, IntegrityError, StorageError, VowvaultError
from vowvault.storage import StorageBackend

KEY_OBJECT_FORMAT = 1


def prefix(org_id: uuid.UUID, policy_id: uuid.UUID | None, backup_id: uuid.UUID) -> str:
    """``<org>/<policy>/<backup>/``: identifiers only, nothing that names a customer."""
    return f"{org_id}/{policy_id or 'adhoc'}/{backup_id}/"


def object_name(job: BackupJob, kind: str) -> str:
    return prefix(job.organization_id, job.policy_id, job.id) + kind


def pack_lengths(lengths: array[int]) -> str:
    return base64.b64encode(zstandard.ZstdCompressor().compress(lengths.tobytes())).decode()


def unpack_lengths(text: str) -> array[int]:
    out = array("I")
    out.frombytes(zstandard.ZstdDecompressor().decompress(base64.b64decode(text)))
    return out


def read_object(backend: StorageBackend, name: str, dek: bytes, backup_id: uuid.UUID,
                kind: str) -> Iterator[bytes]:
    """The plaintext of a whole object, checked frame by frame as it streams."""
    return Opener(dek, backup_id, kind).frames(backend.open(name))


@dataclass
class Copy:
    """One readable copy of a backup: where it is and which backend reads it."""

    url: str
    backend: StorageBackend


def copies(ctx: Context, session: Session, job: BackupJob) -> list[Copy]:
    """The targets holding this backup's manifest, primary first."""
    rows = session.execute(sa.select(BackupStorage).where(
        BackupStorage.backup_job_id == job.id,
        BackupStorage.object_kind == ObjectKind.MANIFEST,
        BackupStorage.status.in_([CopyStatus.STORED, CopyStatus.VERIFIED]))
        .order_by(BackupStorage.copy_role.desc(), BackupStorage.created_at)).scalars()
    secrets = target_secrets(job)
    return [Copy(r.storage_url, ctx.backend(r.storage_url, secrets.get(r.storage_url)))
            for r in rows]


def target_secrets(job: BackupJob) -> dict[str, str]:
    """Target URL -> the credentials secret its policy names (none: the SDK's chain)."""
    targets = job.policy.storage_targets if job.policy is not None else []
    return {t["url"]: t["credentials_secret"] for t in targets
            if t.get("credentials_secret")}


@dataclass
class OpenBackup:
    job: BackupJob
    dek: bytes
    manifest: dict[str, Any]
    copy: Copy
    skipped: list[str] = field(default_factory=list)
    """Copies tried first that could not be read, with why."""

    def name(self, kind: str) -> str:
        return object_name(self.job, kind)

    def stream(self, kind: str) -> Iterator[bytes]:
        return read_object(self.copy.backend, self.name(kind), self.dek, self.job.id, kind)


def open_backup(ctx: Context, session: Session, job: BackupJob) -> OpenBackup:
    """Unwrap the data key and read the manifest from the first copy that answers; say so
    when falling back to another copy."""
    org = session.get(Organization, job.organization_id)
    assert org is not None
    dek = data_key(ctx, session, org, job.encryption_key_id, job.wrapped_dek, job.id)
    available = copies(ctx, session, job)
    if not available:
        raise StorageError(f"backup {job.id} has no stored copy to read")
    errors: list[str] = []
    for copy in available:
        try:
            manifest = load_manifest(copy.backend, object_name(job, "manifest"), dek, job.id)
        except ArchivedObjectError:
            raise
        except IntegrityError:
            raise
        except (StorageError, OSError) as exc:
            errors.append(f"{copy.url}: {exc}")
            log.warning("copy %s of backup %s is unreachable (%s); trying the next copy",
                        copy.url, job.id, exc)
            continue
        if errors:
            log.warning("reading backup %s from %s", job.id, copy.url)
        return OpenBackup(job, dek, manifest, copy, errors)
    raise StorageError(f"no copy of backup {job.id} can be read: " + "; ".join(errors))


def load_manifest(backend: StorageBackend, name: str, dek: bytes,
                  backup_id: uuid.UUID) -> dict[str, Any]:
    try:
        text = b"".join(read_object(backend, name, dek, backup_id, "manifest"))
    except VowvaultError as exc:
        if exc.__class__.__name__ == "ObjectNotFound":
            raise IntegrityError(f"backup {backup_id}: manifest is missing from "
                                 f"{backend.url}") from None
        raise
    try:
        manifest = json.loads(text)
    except ValueError:
        raise IntegrityError(f"backup {backup_id}: manifest is not valid JSON") from None
    if manifest.get("backup_id") != str(backup_id):
        raise IntegrityError(f"manifest names backup {manifest.get('backup_id')}, "
                             f"not {backup_id}")
    return manifest


class RangeReader:
    """Random access to the plaintext of a ``data`` object through its frame table: reads
    only the frames a range needs (used for content an incremental backup refers to)."""

    def __init__(self, backend: StorageBackend, name: str, dek: bytes, backup_id: uuid.UUID,
                 info: dict[str, Any]) -> None:
        self.backend, self.name = backend, name
        self.frame_size = int(info["frame_size"])
        self.opener = Opener(dek, backup_id, "data", self.frame_size)
        self.lengths = unpack_lengths(info["frame_lengths"])
        self.offsets = array("Q", [HEADER.size])
        for length in self.lengths:
            self.offsets.append(self.offsets[-1] + RECORD_LEN.size + length)
        self._cache: tuple[int, bytes] | None = None

    def _frame(self, i: int) -> bytes:
        if self._cache and self._cache[0] == i:
            return self._cache[1]
        start = self.offsets[i] + RECORD_LEN.size
        sealed = self.backend.load(self.name, start, self.lengths[i])
        if len(sealed) != self.lengths[i]:
            raise IntegrityError(f"{self.name}: frame {i} is truncated")
        final = i == len(self.lengths) - 1
        plain = decompress(self.opener.open(i, sealed, final), self.frame_size)
        self._cache = (i, plain)
        return plain

    def read(self, offset: int, length: int) -> Iterator[bytes]:
        end = offset + length
        while offset < end:
            i, within = divmod(offset, self.frame_size)
            if i >= len(self.lengths):
                raise IntegrityError(f"{self.name}: range beyond the end of the data")
            piece = self._frame(i)[within:within + (end - offset)]
            if not piece:
                raise IntegrityError(f"{self.name}: range beyond the end of the data")
            yield piece
            offset += len(piece)


def ensure_readable(backend: StorageBackend, name: str, *, wait: float = 0.0,
                    poll: float = 5.0, days: int = 7) -> None:
    """Make an archived object readable: start its restore (rehydration) and wait up to
    ``wait`` seconds for it; if it is not readable by then, say so clearly."""
    import time

    info = backend.stat(name)
    if not info.archived or info.restore_state == "restored":
        return
    backend.start_restore(name, days=days)
    deadline = time.monotonic() + wait
    while True:
        info = backend.stat(name)
        if info.restore_state == "restored" or not info.archived:
            log.info("%s/%s restored from %s", backend.url, name, info.tier.value)
            return
        if time.monotonic() >= deadline:
            raise ArchivedObjectError(
                f"{backend.url}/{name} is in {info.tier.value}: a restore was started "
                f"(hours on the real service); run again later, or give --wait-archive")
        time.sleep(poll)
