"""The repository marker: one small object at the root of every storage target, written once
when the target is first used (like restic's ``config`` or pgBackRest's ``backup.info``).

It tells a target that holds vowvault's backups from one that merely answers: an empty
mount point where a NAS should be, a bucket swapped for another. Its id is recorded in the
catalog; a target whose marker is missing or different is *unavailable*: reads skip it
(``TargetUnavailableError``, a storage error like an outage), nothing there is taken for
damaged or deleted, and no new marker is ever written over the absence of the old one.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass

from vowvault.errors import ObjectNotFound, TargetUnavailableError
from vowvault.storage import StorageBackend

NAME = "vowvault-repository.json"
FORMAT = 1


@dataclass(frozen=True)
class Marker:
    repository_id: uuid.UUID
    format: int = FORMAT
    created_at: str = ""

    def to_bytes(self) -> bytes:
        return json.dumps({"vowvault": "repository", "repository_id": str(self.repository_id),
                           "format": self.format, "created_at": self.created_at},
                          sort_keys=True).encode()

    @classmethod
    def new(cls) -> Marker:
        return cls(uuid.uuid4(), FORMAT, dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))


def read_marker(backend: StorageBackend) -> Marker | None:
    """The target's marker; None when it has none. A target that does not answer raises
    its storage error; one whose marker is unreadable is unavailable."""
    try:
        raw = backend.load(NAME)
    except ObjectNotFound:
        return None
    try:
        doc = json.loads(raw)
        marker = Marker(uuid.UUID(doc["repository_id"]), int(doc["format"]),
                        str(doc.get("created_at", "")))
    except (ValueError, KeyError, TypeError):
        raise TargetUnavailableError(f"{backend.url}: its repository marker {NAME} is "
                                     f"unreadable") from None
    if marker.format != FORMAT:
        raise TargetUnavailableError(f"{backend.url}: repository format {marker.format}; this "
                                     f"vowvault reads format {FORMAT}")
    return marker


def write_marker(backend: StorageBackend, marker: Marker) -> None:
    backend.save(NAME, [marker.to_bytes()])


def check_marker(backend: StorageBackend, expected: uuid.UUID) -> None:
    """Raise ``TargetUnavailableError`` unless the target holds the marker ``expected``."""
    found = read_marker(backend)
    if found is None:
        raise TargetUnavailableError(
            f"{backend.url} is unavailable: its repository marker is missing (not mounted, "
            f"or emptied?); its backups are not touched until it is back")
    if found.repository_id != expected:
        raise TargetUnavailableError(
            f"{backend.url} is unavailable: it holds repository {found.repository_id}, not "
            f"{expected} (another target mounted or configured here?)")
