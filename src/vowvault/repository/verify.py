"""Proving one copy of a stored backup: read every object back and check everything.

Checked: the key object holds this backup's data key (``key_opens`` decides, since only the
caller knows the keys); the manifest decrypts, belongs to this backup and is the one
recorded when the backup was made (its SHA-256); every frame's tag, position and length;
every object's size and SHA-256 against the manifest; and whatever the source's own check
proves (``deep_check``: every file's SHA-256 of a tree, ``pg_restore`` reading a dump). A
copy that cannot be reached is reported as such, never as damaged.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from vowvault.errors import IntegrityError, ObjectNotFound, StorageError
from vowvault.repository.copies import Copy
from vowvault.repository.keyobject import KeyObject
from vowvault.repository.layout import KEY, BackupLocation
from vowvault.repository.reader import BackupReader

log = logging.getLogger("vowvault")

DeepCheck = Callable[[BackupReader], set[str]]
"""Reads what a source can prove about its objects; returns the kinds it read whole."""


@dataclass
class CopyVerdict:
    url: str
    ok: bool
    problem: str | None = None
    unreachable: bool = False
    bytes_read: int = 0


def verify_copy(copy: Copy, location: BackupLocation, dek: bytes, *,
                expected_manifest_sha: str | None, key_opens: Callable[[KeyObject], bool],
                deep_check: DeepCheck | None = None) -> CopyVerdict:
    verdict = CopyVerdict(copy.url, ok=False)
    try:
        verdict.bytes_read = _verify(copy, location, dek, expected_manifest_sha, key_opens,
                                     deep_check)
        verdict.ok = True
    except ObjectNotFound as exc:
        # The target answered: an object it should hold is gone. Damage, not an outage.
        kind = str(exc).split(": ")[0].rsplit("/", 1)[-1]
        verdict.problem = f"{kind} is missing from {copy.url}"
    except IntegrityError as exc:
        verdict.problem = str(exc)
    except (StorageError, OSError) as exc:
        verdict.problem, verdict.unreachable = str(exc), True
    log.info("verify %s on %s: %s", location.backup_id, copy.url,
             "intact" if verdict.ok else verdict.problem)
    return verdict


def _verify(copy: Copy, location: BackupLocation, dek: bytes, expected_sha: str | None,
            key_opens: Callable[[KeyObject], bool], deep_check: DeepCheck | None) -> int:
    key = KeyObject.from_bytes(copy.backend.load(location.name(KEY)), location.backup_id)
    if not key_opens(key):
        raise IntegrityError("key object does not hold the data key the catalog records")
    reader = BackupReader(location, dek, [copy])
    manifest = reader.open()
    if expected_sha and hashlib.sha256(reader.manifest_bytes).hexdigest() != expected_sha:
        raise IntegrityError("manifest differs from the one recorded when the backup was made")
    read = deep_check(reader) if deep_check is not None else set()
    for kind in manifest.objects:
        if kind not in read:
            for _ in reader.stream(kind):
                pass
    return sum(e.stored_size for e in manifest.objects.values())
