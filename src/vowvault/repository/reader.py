"""Reading a stored backup back, checked as it goes.

A ``BackupReader`` is handed every copy of a backup (primary first). It reads the manifest
from the first copy that answers and serves the backup's objects from that copy:

- ``stream(kind)``: the whole plaintext, frame by frame, with read-ahead (the next range is
  fetched while the current one is opened), ending with a check of size and SHA-256
  against the manifest;
- ``ranges(kind)``: random access by plaintext offset through the manifest's frame table,
  reading only the frames a range needs (content an incremental backup refers to).

Every frame is authenticated (AES-256-GCM, bound to backup, object, index and final flag),
every record's length is checked against the frame table, and an object holding more or
fewer bytes than the manifest records is refused. Reads are ranged loads of at most
``read_size`` bytes, so a fault in the middle of a download costs one range.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from vowvault.codec.frames import HEADER, RECORD_LEN, Opener, decompress, parse_header
from vowvault.errors import (
    ArchivedObjectError,
    IntegrityError,
    ObjectNotFound,
    StorageError,
)
from vowvault.repository.copies import Copy
from vowvault.repository.layout import MANIFEST, BackupLocation
from vowvault.repository.manifest import Manifest, ObjectEntry
from vowvault.storage import StorageBackend

READ_SIZE = 8 << 20
"""Bytes fetched by one ranged load (several frames)."""

log = logging.getLogger("vowvault")


def read_whole(backend: StorageBackend, location: BackupLocation, dek: bytes,
               kind: str) -> bytes:
    """The plaintext of a small framed object read in one go (the manifest), fully
    checked; a missing object is damage on a target that answered."""
    try:
        return b"".join(Opener(dek, location.backup_id, kind).frames(
            backend.open(location.name(kind))))
    except ObjectNotFound:
        raise IntegrityError(f"backup {location.backup_id}: {kind} is missing from "
                             f"{backend.url}") from None


@dataclass
class BackupReader:
    location: BackupLocation
    dek: bytes
    copies: list[Copy]
    read_size: int = READ_SIZE
    copy: Copy | None = None
    """The copy serving reads (after ``open``)."""
    skipped: list[str] = field(default_factory=list)
    """Copies tried first that could not be read, with why."""
    manifest_bytes: bytes = b""
    _manifest: Manifest | None = None

    @property
    def backup_id(self) -> Any:
        return self.location.backup_id

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            self.open()
        assert self._manifest is not None
        return self._manifest

    def open(self) -> Manifest:
        """Read the manifest from the first copy that answers; say so when falling back
        to another copy. An archived or damaged manifest is not skipped over."""
        if not self.copies:
            raise StorageError(f"backup {self.backup_id} has no stored copy to read")
        errors: list[str] = []
        for copy in self.copies:
            try:
                raw = read_whole(copy.backend, self.location, self.dek, MANIFEST)
            except (ArchivedObjectError, IntegrityError):
                raise
            except (StorageError, OSError) as exc:
                errors.append(f"{copy.url}: {exc}")
                log.warning("copy %s of backup %s is unreachable (%s); trying the next copy",
                            copy.url, self.backup_id, exc)
                continue
            self._manifest = Manifest.from_bytes(raw, self.backup_id)
            self.manifest_bytes, self.copy, self.skipped = raw, copy, errors
            if errors:
                log.warning("reading backup %s from %s", self.backup_id, copy.url)
            return self._manifest
        raise StorageError(f"no copy of backup {self.backup_id} can be read: "
                           + "; ".join(errors))

    def entry(self, kind: str) -> ObjectEntry:
        try:
            return self.manifest.objects[kind]
        except KeyError:
            raise IntegrityError(f"backup {self.backup_id}: the manifest lists no {kind} "
                                 f"object") from None

    def _frames(self, kind: str) -> FrameReader:
        self.manifest  # noqa: B018 - opens the backup when not yet open
        assert self.copy is not None
        return FrameReader(self.copy.backend, self.location, self.dek, kind, self.entry(kind),
                           self.read_size)

    def stream(self, kind: str) -> Iterator[bytes]:
        """The whole plaintext of an object, checked frame by frame and as a whole."""
        return self._frames(kind).stream()

    def ranges(self, kind: str) -> RangeReader:
        return RangeReader(self._frames(kind))

    def ensure_readable(self, *, wait: float = 0.0, kinds: list[str] | None = None) -> None:
        """Objects in an archive tier are restored (rehydrated) first; see
        ``ensure_readable``."""
        self.manifest  # noqa: B018
        assert self.copy is not None
        for kind in kinds or list(self.manifest.objects):
            ensure_readable(self.copy.backend, self.location.name(kind), wait=wait)


class FrameReader:
    """The frames of one object on one copy, by index, through the manifest's frame
    table."""

    def __init__(self, backend: StorageBackend, location: BackupLocation, dek: bytes,
                 kind: str, entry: ObjectEntry, read_size: int = READ_SIZE) -> None:
        self.backend, self.kind, self.entry = backend, kind, entry
        self.name = location.name(kind)
        self.backup_id = location.backup_id
        self.lengths, self.offsets = entry.frame_table()
        self.count = entry.frames
        self.frame_size = entry.frame_size
        self.read_size = read_size
        self.opener = Opener(dek, location.backup_id, kind, entry.frame_size)

    def groups(self, first: int = 0, last: int | None = None) -> Iterator[tuple[int, int]]:
        """Runs of consecutive frames of about ``read_size`` sealed bytes each."""
        last = self.count - 1 if last is None else last
        start = first
        size = 0
        for i in range(first, last + 1):
            size += RECORD_LEN.size + self.lengths[i]
            if size >= self.read_size or i == last:
                yield start, i
                start, size = i + 1, 0

    def load(self, first: int, last: int) -> bytes:
        """The records of frames ``first..last`` as stored (from the header on for frame 0,
        which is checked)."""
        start = 0 if first == 0 else self.offsets[first]
        end = self.offsets[last] + RECORD_LEN.size + self.lengths[last]
        final = last == self.count - 1
        # One byte more at the end of the object: anything after the final frame shows.
        data = self.backend.load(self.name, start, end - start + (1 if final else 0))
        if len(data) < end - start:
            raise IntegrityError(f"{self.kind} object is truncated: {start + len(data)} of "
                                 f"{self.entry.stored_size} bytes")
        if len(data) > end - start:
            raise IntegrityError(f"{self.kind} object: data after the final frame "
                                 f"{last}: appended or spliced")
        if first == 0:
            if parse_header(data[:HEADER.size], self.backup_id, self.kind) != self.frame_size:
                raise IntegrityError(f"{self.kind} object header gives another frame size "
                                     f"than the manifest")
            data = data[HEADER.size:]
        return data

    def open_records(self, first: int, last: int, data: bytes) -> Iterator[tuple[int, bytes]]:
        """(index, plaintext) of frames ``first..last`` from their stored records."""
        view = memoryview(data)
        pos = 0
        for i in range(first, last + 1):
            (length,) = RECORD_LEN.unpack_from(view, pos)
            if length != self.lengths[i]:
                raise IntegrityError(f"{self.kind} object: frame {i} is {length} bytes, the "
                                     f"manifest records {self.lengths[i]}")
            sealed = bytes(view[pos + RECORD_LEN.size:pos + RECORD_LEN.size + length])
            final = i == self.count - 1
            plain = decompress(self.opener.open(i, sealed, final), self.frame_size)
            if (not final and len(plain) != self.frame_size) or len(plain) > self.frame_size:
                raise IntegrityError(f"{self.kind} object: frame {i} holds {len(plain)} "
                                     f"bytes, expected {self.frame_size}")
            yield i, plain
            pos += RECORD_LEN.size + length

    def stream(self) -> Iterator[bytes]:
        """Every frame in order, the next range fetched while this one is opened; then the
        whole object's size and SHA-256 against the manifest."""
        digest = hashlib.sha256()
        size = 0
        groups = list(self.groups())
        with ThreadPoolExecutor(1, thread_name_prefix="vowvault-read") as pool:
            pending = pool.submit(self.load, *groups[0])
            for n, (first, last) in enumerate(groups):
                data = pending.result()
                if n + 1 < len(groups):
                    pending = pool.submit(self.load, *groups[n + 1])
                for _i, plain in self.open_records(first, last, data):
                    digest.update(plain)
                    size += len(plain)
                    yield plain
        if size != self.entry.plaintext_size or digest.hexdigest() != self.entry.sha256:
            raise IntegrityError(f"{self.kind} object holds {size} bytes with another "
                                 f"checksum than the manifest records")


class RangeReader:
    """Random access to the plaintext of an object: reads only the frames a range needs,
    in loads of at most ``read_size`` bytes, keeping the last frames read."""

    def __init__(self, frames: FrameReader) -> None:
        self.frames = frames
        self._cache: dict[int, bytes] = {}

    def _fill(self, first: int, last: int) -> None:
        self._cache.clear()
        for a, b in self.frames.groups(first, last):
            data = self.frames.load(a, b)
            for i, plain in self.frames.open_records(a, b, data):
                self._cache[i] = plain
            if len(self._cache) * self.frames.frame_size >= self.frames.read_size:
                return

    def read(self, offset: int, length: int) -> Iterator[bytes]:
        frame_size = self.frames.frame_size
        end = offset + length
        if length and (offset < 0 or end > self.frames.entry.plaintext_size):
            raise IntegrityError(f"{self.frames.name}: range beyond the end of the data")
        last = (end - 1) // frame_size if length else 0
        while offset < end:
            i, within = divmod(offset, frame_size)
            if i not in self._cache:
                self._fill(i, last)
            piece = self._cache[i][within:within + (end - offset)]
            if not piece:
                raise IntegrityError(f"{self.frames.name}: range beyond the end of the data")
            yield piece
            offset += len(piece)


def ensure_readable(backend: StorageBackend, name: str, *, wait: float = 0.0,
                    poll: float = 5.0, days: int = 7) -> None:
    """Make an archived object readable: start its restore (rehydration) and wait up to
    ``wait`` seconds for it; if it is not readable by then, say so clearly."""
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
