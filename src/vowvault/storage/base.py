"""The one storage interface every backend implements.

Storage only moves bytes: it knows nothing of codecs, keys or the catalog. Names are
relative, ``/``-separated (``<org>/<policy>/<backup>/data``). Every backend translates its
SDK's errors into ``vowvault.errors`` at its edge: ``ObjectNotFound``,
``StoragePermissionError``, ``StorageFullError``, ``TransientStorageError``,
``ArchivedObjectError``, or ``StorageError`` for anything else.

Retries are not a backend's business: ``vowvault.storage.wrap`` adds them, once, around
any backend.
"""

from __future__ import annotations

import abc
import datetime as dt
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from vowvault.domain import Tier


@dataclass(frozen=True)
class ObjectInfo:
    name: str
    size: int
    tier: Tier = Tier.HOT
    modified: dt.datetime | None = None
    archived: bool = False
    """True when the object must be restored (rehydrated) before it can be read."""
    restore_state: str | None = None
    """None, "in-progress" or "restored" (readable until the restore expires)."""


@dataclass(frozen=True)
class Properties:
    """What callers may rely on, as data rather than isinstance checks."""

    provider: str
    """'local', 's3', 'gcs' or 'azure': recorded in backup_storage.storage_provider."""
    archive_needs_restore: bool
    """Reading ARCHIVE / DEEP_ARCHIVE objects needs ``start_restore`` first."""
    min_storage_days: Mapping[Tier, int] = field(default_factory=dict)
    """Days an object must stay in a tier before leaving it costs nothing extra (the
    service charges an early deletion otherwise); tiers not listed have no minimum."""
    legal_hold: bool = False
    """``set_legal_hold`` is enforced by the service."""
    max_connections: int = 4
    """Requests to the service at once, from one process (the wrapper holds callers to it)."""
    part_size: int = 8 << 20
    """``save`` cuts streams into parts of this size (the last may be smaller); a part is
    the unit a retry resends, so at most one part per upload is held in memory."""


class Upload(abc.ABC):
    """One object being written part by part; invisible under its name until ``commit``.

    ``write_part`` may be called again with the same number after a failure (a retry) and
    must then leave the upload as if it had succeeded once. ``abort`` is idempotent and
    removes what was uploaded so far (or leaves it where no reader can take it for the
    object: an uncommitted block list, an abandoned resumable session)."""

    @abc.abstractmethod
    def write_part(self, number: int, data: bytes) -> None: ...

    @abc.abstractmethod
    def commit(self) -> ObjectInfo: ...

    @abc.abstractmethod
    def abort(self) -> None: ...


class StorageBackend(abc.ABC):
    """A place that stores named objects.

    Guarantees every implementation gives:

    - ``save`` is atomic: readers see the whole object or nothing, never a prefix. An
      interrupted save leaves no object under ``name`` (temporary names, aborted multipart
      uploads or uncommitted blocks may remain until ``delete``/cleanup, but never under
      the final name). Saving an existing name replaces it.
    - ``load`` and ``open`` read what a completed ``save`` wrote.
    - ``delete`` is idempotent: deleting a missing object is not an error.
    - No method retries; wrap the backend for that.
    """

    url: str

    @abc.abstractmethod
    def properties(self) -> Properties: ...

    @abc.abstractmethod
    def begin_upload(self, name: str, *, tier: Tier = Tier.HOT) -> Upload:
        """Start writing ``name`` in parts (see ``Upload``)."""

    def save(self, name: str, chunks: Iterable[bytes], *, tier: Tier = Tier.HOT) -> ObjectInfo:
        """Store the concatenation of ``chunks`` under ``name``, streaming: memory use does
        not depend on the object's size (one part at most). Consumes ``chunks`` exactly
        once. On any failure, including one raised by ``chunks``, the upload is aborted."""
        upload = self.begin_upload(name, tier=tier)
        try:
            for number, part in enumerate(parts(chunks, self.properties().part_size)):
                upload.write_part(number, part)
            return upload.commit()
        except BaseException:
            upload.abort()
            raise

    @abc.abstractmethod
    def load(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        """Bytes ``[offset, offset + length)`` of the object (to its end when ``length`` is
        None). Reading past the end returns what exists."""

    def open(self, name: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The whole object as a stream of chunks (default: ranged loads)."""
        offset = 0
        while True:
            data = self.load(name, offset, chunk_size)
            if not data:
                return
            yield data
            offset += len(data)
            if len(data) < chunk_size:
                return

    @abc.abstractmethod
    def stat(self, name: str) -> ObjectInfo:
        """Size and tier of an object; ``ObjectNotFound`` when absent."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects whose name starts with ``prefix``, in name order."""

    @abc.abstractmethod
    def delete(self, names: Iterable[str]) -> None:
        """Delete objects (in batches where the service allows); missing ones are fine.
        Also removes anything an interrupted ``save`` of those names left behind."""

    @abc.abstractmethod
    def set_tier(self, name: str, tier: Tier) -> None:
        """Move an object to ``tier`` the way the service does it (idempotent)."""

    def start_restore(self, name: str, days: int = 7) -> None:  # noqa: B027 - optional
        """Begin restoring an archived object so it can be read; no-op when not needed."""

    def set_legal_hold(self, name: str, on: bool) -> None:
        raise NotImplementedError(f"{self.properties().provider} storage has no legal hold")

    def close(self) -> None:  # noqa: B027 - optional
        """Release connections."""


def parts(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """Re-cut a stream into parts of exactly ``size`` bytes (the last may be shorter; an
    empty stream is one empty part, so that empty objects exist too)."""
    buf = bytearray()
    sent = False
    for chunk in chunks:
        buf += chunk
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
            sent = True
    if buf or not sent:
        yield bytes(buf)
