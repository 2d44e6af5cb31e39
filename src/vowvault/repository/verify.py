"""Proving a stored backup: each copy on its own, all copies together, and what it refers to.

``verify_copy`` checks one copy strictly, no other copy helping: the key object holds this
backup's data key (``key_opens`` decides, since only the caller knows the keys); the
manifest decrypts, belongs to this backup and is the one recorded when the backup was made
(its SHA-256); every frame's tag, position and length; every object's size and SHA-256
against the manifest; and whatever the source's own check proves (``deep_check``: every
file's SHA-256 of a tree, ``pg_restore`` reading a dump). Its verdict is the copy's health:
INTACT, DAMAGED, MISSING (the target answered and an object is not there), or UNREACHABLE
(it did not answer, or its repository marker is missing: never taken for damage).

``verify_together`` reads the backup with every copy helping frame by frame, as a restore
would: a backup whose copies are each damaged in different places is still restorable (and
repairable). ``verify_references`` reads every byte a tree takes from earlier backups.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from vowvault.domain import CopyHealth
from vowvault.errors import IntegrityError, StorageError
from vowvault.repository.copies import Copy
from vowvault.repository.keyobject import KeyObject
from vowvault.repository.layout import KEY, BackupLocation
from vowvault.repository.marker import check_marker
from vowvault.repository.reader import BackupReader, Problem, classify
from vowvault.repository.tree import TreeReader

log = logging.getLogger("vowvault")

DeepCheck = Callable[[BackupReader], set[str]]
"""Reads what a source can prove about its objects; returns the kinds it read whole."""


@dataclass
class CopyVerdict:
    url: str
    health: CopyHealth
    problem: str | None = None
    bytes_read: int = 0

    @property
    def ok(self) -> bool:
        return self.health == CopyHealth.INTACT

    @property
    def unreachable(self) -> bool:
        return self.health == CopyHealth.UNREACHABLE


def verify_copy(copy: Copy, location: BackupLocation, dek: bytes, *,
                expected_manifest_sha: str | None, key_opens: Callable[[KeyObject], bool],
                deep_check: DeepCheck | None = None, decode: bool = True) -> CopyVerdict:
    """Without ``decode`` (the read-back right after a write whose frames went through a
    round trip, of a source that proved its plaintext as it streamed), every record is
    authenticated but not decompressed, and ``deep_check`` is not run."""
    try:
        if copy.marker is not None:
            check_marker(copy.backend, copy.marker)
        read = _verify(copy, location, dek, expected_manifest_sha, key_opens,
                       deep_check if decode else None, decode)
        verdict = CopyVerdict(copy.url, CopyHealth.INTACT, bytes_read=read)
    except (IntegrityError, StorageError, OSError) as exc:
        verdict = CopyVerdict(copy.url, classify(copy, exc), str(exc))
    log.info("verify %s on %s: %s", location.backup_id, copy.url,
             "intact" if verdict.ok else f"{verdict.health.value.lower()}: {verdict.problem}")
    return verdict


def _verify(copy: Copy, location: BackupLocation, dek: bytes, expected_sha: str | None,
            key_opens: Callable[[KeyObject], bool], deep_check: DeepCheck | None,
            decode: bool = True) -> int:
    key = KeyObject.from_bytes(copy.backend.load(location.name(KEY)), location.backup_id)
    if not key_opens(key):
        raise IntegrityError("key object does not hold the data key the catalog records")
    reader = BackupReader(location, dek, [copy])
    try:
        manifest = reader.open()
    except (IntegrityError, StorageError):
        if reader.problems:  # the one copy's own error, unwrapped
            raise _error_of(reader.problems[-1]) from None
        raise
    if expected_sha and hashlib.sha256(reader.manifest_bytes).hexdigest() != expected_sha:
        raise IntegrityError("manifest differs from the one recorded when the backup was made")
    try:
        read = deep_check(reader) if deep_check is not None else set()
        for kind in manifest.objects:
            if kind in read:
                continue
            if not decode:
                reader.frames(kind).authenticate()
                continue
            for _ in reader.stream(kind):
                pass
    except (IntegrityError, StorageError):
        if reader.problems:
            raise _error_of(reader.problems[-1]) from None
        raise
    return sum(e.stored_size for e in manifest.objects.values())


def _error_of(problem: Problem) -> Exception:
    if problem.health == CopyHealth.UNREACHABLE:
        return StorageError(problem.message)
    from vowvault.errors import ObjectNotFound

    if problem.health == CopyHealth.MISSING:
        return ObjectNotFound(problem.message)
    return IntegrityError(problem.message)


@dataclass
class Together:
    """What reading a backup with all its copies helping found."""

    restorable: bool
    problem: str | None = None
    problems: list[Problem] = field(default_factory=list)
    served: dict[str, dict[str, int]] = field(default_factory=dict)


def verify_together(copies: list[Copy], location: BackupLocation, dek: bytes, *,
                    expected_manifest_sha: str | None,
                    deep_check: DeepCheck | None = None) -> Together:
    reader = BackupReader(location, dek, copies, expected_manifest_sha=expected_manifest_sha)
    try:
        manifest = reader.open()
        read = deep_check(reader) if deep_check is not None else set()
        for kind in manifest.objects:
            if kind not in read:
                for _ in reader.stream(kind):
                    pass
    except (IntegrityError, StorageError, OSError) as exc:
        return Together(False, str(exc), reader.problems, reader.served)
    return Together(True, None, reader.problems, reader.served)


def verify_references(reader: BackupReader, references: dict[str, BackupReader]) -> str | None:
    """Read every file a tree takes from the backups it refers to (each of them read with
    all its copies helping); the first problem, or None when every byte is there."""
    try:
        TreeReader(reader, references).check_referenced()
    except (IntegrityError, StorageError, OSError) as exc:
        return str(exc)
    return None
