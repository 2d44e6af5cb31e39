"""Reading a stored backup back, checked as it goes, from whichever copy holds it intact.

A ``BackupReader`` is handed every copy of a backup (primary first). Every copy holds the
same sealed bytes, so any copy can serve any frame: the manifest comes from the first copy
whose manifest is intact (and is the one the catalog recorded, when it says which), and
each run of frames from the first copy that reads it back intact. A copy that cannot be
reached, is unavailable (its repository marker missing), lacks an object or holds a damaged
frame is passed over for that frame only, and the reader keeps what each copy served and
every problem it met (``served``, ``problems``), which the caller records as the copies'
health.

- ``stream(kind)``: the whole plaintext, frame by frame, with read-ahead (the next run of
  frames is fetched and opened while the current one is handed out), ending with a check of
  size and SHA-256 against the manifest;
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
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from vowvault.codec.frames import (
    HEADER,
    RECORD_LEN,
    Opener,
    decompress,
    object_digest,
    parse_header,
)
from vowvault.domain import CopyHealth
from vowvault.errors import (
    ArchivedObjectError,
    IntegrityError,
    ObjectNotFound,
    StorageError,
    TargetUnavailableError,
)
from vowvault.repository import allocator
from vowvault.repository.copies import Copy
from vowvault.repository.layout import MANIFEST, BackupLocation
from vowvault.repository.manifest import Manifest, ObjectEntry
from vowvault.repository.marker import check_marker
from vowvault.storage import StorageBackend

READ_SIZE = 8 << 20
READ_AHEAD = 2
"""Runs of frames loaded and decoded at once while a stream is read (each in a thread of
its own: decompression releases the GIL, so a restore decodes on two cores)."""
_counting = threading.Lock()
"""Bytes fetched by one ranged load (several frames)."""

log = logging.getLogger("vowvault")


@dataclass(frozen=True)
class Problem:
    """What one copy could not serve: which object (and frame), and why."""

    url: str
    kind: str
    health: CopyHealth
    """DAMAGED, MISSING or UNREACHABLE."""
    message: str
    frame: int | None = None


def classify(copy: Copy, exc: BaseException) -> CopyHealth:
    """How a failed read reflects on a copy. A missing object on a target whose marker is
    gone too is an unavailable target, not a missing object."""
    if isinstance(exc, IntegrityError):
        return CopyHealth.DAMAGED
    if isinstance(exc, ObjectNotFound) and not isinstance(exc, TargetUnavailableError):
        if copy.marker is not None:
            try:
                check_marker(copy.backend, copy.marker)
            except (StorageError, OSError):
                return CopyHealth.UNREACHABLE
        return CopyHealth.MISSING
    return CopyHealth.UNREACHABLE


def read_whole(backend: StorageBackend, location: BackupLocation, dek: bytes,
               kind: str) -> bytes:
    """The plaintext of a small framed object read in one go (the manifest), fully
    checked; a missing object is damage on a target that answered."""
    try:
        return b"".join(Opener(dek, location.backup_id, kind).frames(
            backend.open(location.name(kind))))
    except ObjectNotFound as exc:
        if isinstance(exc, TargetUnavailableError):
            raise
        raise ObjectNotFound(f"backup {location.backup_id}: {kind} is missing from "
                             f"{backend.url}") from None


@dataclass
class BackupReader:
    location: BackupLocation
    dek: bytes
    copies: list[Copy]
    expected_manifest_sha: str | None = None
    """The SHA-256 the catalog recorded of the manifest: a copy whose manifest differs is
    passed over."""
    read_size: int = READ_SIZE
    copy: Copy | None = None
    """The copy that served the manifest, tried first for everything else."""
    manifest_bytes: bytes = b""
    problems: list[Problem] = field(default_factory=list)
    served: dict[str, dict[str, int]] = field(default_factory=dict)
    """Copy URL -> object kind -> frames it served."""
    _manifest: Manifest | None = None
    _order: list[Copy] = field(default_factory=list)

    @property
    def backup_id(self) -> Any:
        return self.location.backup_id

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            self.open()
        assert self._manifest is not None
        return self._manifest

    @property
    def skipped(self) -> list[str]:
        """Copies passed over for something, with why (one line each)."""
        seen: dict[str, str] = {}
        for p in self.problems:
            seen.setdefault(p.url, f"{p.url}: {p.message}")
        return list(seen.values())

    def note(self, copy: Copy, kind: str, exc: BaseException, frame: int | None = None
             ) -> None:
        health = classify(copy, exc)
        self.problems.append(Problem(copy.url, kind, health, str(exc), frame))
        log.warning("copy %s of backup %s could not serve %s%s (%s: %s)", copy.url,
                    self.backup_id, kind, f" frame {frame}" if frame is not None else "",
                    health.value.lower(), exc)

    def open(self) -> Manifest:
        """Read the manifest from the first copy that holds it intact."""
        if not self.copies:
            raise StorageError(f"backup {self.backup_id} has no stored copy to read")
        archived: ArchivedObjectError | None = None
        for copy in self.copies:
            try:
                raw = read_whole(copy.backend, self.location, self.dek, MANIFEST)
                if self.expected_manifest_sha and \
                        hashlib.sha256(raw).hexdigest() != self.expected_manifest_sha:
                    raise IntegrityError("manifest differs from the one recorded when the "
                                         "backup was made")
                manifest = Manifest.from_bytes(raw, self.backup_id)
            except ArchivedObjectError as exc:
                archived = archived or exc
                continue
            except (StorageError, IntegrityError, OSError) as exc:
                self.note(copy, MANIFEST, exc)
                continue
            self._manifest, self.manifest_bytes, self.copy = manifest, raw, copy
            self._order = [copy, *(c for c in self.copies if c is not copy)]
            self.count_served(copy, MANIFEST, 1)
            if self.problems:
                log.warning("reading backup %s from %s", self.backup_id, copy.url)
            return manifest
        if archived is not None:
            raise archived
        raise _failure(f"no copy of backup {self.backup_id} holds a readable manifest",
                       self.problems)

    def order(self) -> list[Copy]:
        """The copies in the order reads try them: the one that served the manifest (or is
        readable without an archive restore) first."""
        return self._order or list(self.copies)

    def count_served(self, copy: Copy, kind: str, frames: int) -> None:
        with _counting:  # runs are read two at a time
            per = self.served.setdefault(copy.url, {})
            per[kind] = per.get(kind, 0) + frames

    def entry(self, kind: str) -> ObjectEntry:
        try:
            return self.manifest.objects[kind]
        except KeyError:
            raise IntegrityError(f"backup {self.backup_id}: the manifest lists no {kind} "
                                 f"object") from None

    def frames(self, kind: str) -> Frames:
        self.manifest  # noqa: B018 - opens the backup when not yet open
        return Frames(self, kind, self.entry(kind))

    def stream(self, kind: str) -> Iterator[bytes]:
        """The whole plaintext of an object, checked frame by frame and as a whole."""
        return self.frames(kind).stream()

    def ranges(self, kind: str) -> RangeReader:
        return RangeReader(self.frames(kind))

    def ensure_readable(self, *, wait: float = 0.0, kinds: list[str] | None = None) -> None:
        """Prefer a copy whose objects are readable now; when the only copies holding them
        have them archived, restore (rehydrate) them on the first of those
        (``ensure_readable``). A copy that cannot say is left to the reads, which report
        it."""
        self.manifest  # noqa: B018
        kinds = kinds or list(self.manifest.objects)
        archived: list[Copy] = []
        for copy in self._order:
            try:
                if not any(_archived(copy.backend, self.location.name(k)) for k in kinds):
                    self._order = [copy, *(c for c in self._order if c is not copy)]
                    return
                archived.append(copy)
            except (StorageError, OSError):
                continue
        if archived:
            self._order = [archived[0], *(c for c in self._order if c is not archived[0])]
            for kind in kinds:
                ensure_readable(archived[0].backend, self.location.name(kind), wait=wait)


class Frames:
    """The frames of one object, served by whichever copy holds each intact."""

    def __init__(self, reader: BackupReader, kind: str, entry: ObjectEntry) -> None:
        allocator.tune()
        self.reader, self.kind, self.entry = reader, kind, entry
        self.lengths, self.offsets = entry.frame_table()
        self.count = entry.frames
        self.frame_size = entry.frame_size
        self.read_size = reader.read_size
        self.name = reader.location.name(kind)
        self.opener = Opener(reader.dek, reader.location.backup_id, kind, entry.frame_size)
        self.order = list(reader.order())
        self.ahead = max([READ_AHEAD] + [c.backend.properties().read_ahead
                                         for c in self.order[:1]])
        """Runs in flight: more where each load waits on a service's latency."""

    def groups(self, first: int = 0, last: int | None = None) -> Iterator[tuple[int, int]]:
        """Runs of consecutive frames of about ``read_size`` sealed bytes each, and of at
        most twice that in plaintext (what a run decodes to stays bounded however well the
        data compresses)."""
        last = self.count - 1 if last is None else last
        most = max(1, 2 * self.read_size // self.frame_size)
        start = first
        size = 0
        for i in range(first, last + 1):
            size += RECORD_LEN.size + self.lengths[i]
            if size >= self.read_size or i - start + 1 >= most or i == last:
                yield start, i
                start, size = i + 1, 0

    def load(self, backend: StorageBackend, first: int, last: int) -> bytes:
        """The records of frames ``first..last`` as one copy stores them, preceded by the
        object's header (checked) for frame 0."""
        start = 0 if first == 0 else self.offsets[first]
        end = self.offsets[last] + RECORD_LEN.size + self.lengths[last]
        final = last == self.count - 1
        # One byte more at the end of the object: anything after the final frame shows.
        data = backend.load(self.name, start, end - start + (1 if final else 0))
        if len(data) < end - start:
            raise IntegrityError(f"{self.kind} object is truncated: {start + len(data)} of "
                                 f"{self.entry.stored_size} bytes")
        if len(data) > end - start:
            raise IntegrityError(f"{self.kind} object: data after the final frame "
                                 f"{last}: appended or spliced")
        if first == 0 and parse_header(data[:HEADER.size], self.reader.backup_id,
                                       self.kind) != self.frame_size:
            raise IntegrityError(f"{self.kind} object header gives another frame size than "
                                 f"the manifest")
        return data

    def open_records(self, first: int, last: int, data: bytes, decode: bool = True
                     ) -> list[bytes]:
        """The plaintext of frames ``first..last`` from their stored records (as ``load``
        returns them); without ``decode``, each record authenticated and opened but not
        decompressed (flag + payload)."""
        view = memoryview(data)
        pos = HEADER.size if first == 0 else 0
        out = []
        for i in range(first, last + 1):
            (length,) = RECORD_LEN.unpack_from(view, pos)
            if length != self.lengths[i]:
                raise IntegrityError(f"{self.kind} object: frame {i} is {length} bytes, the "
                                     f"manifest records {self.lengths[i]}")
            sealed = bytes(view[pos + RECORD_LEN.size:pos + RECORD_LEN.size + length])
            final = i == self.count - 1
            opened = self.opener.open(i, sealed, final)
            pos += RECORD_LEN.size + length
            if not decode:
                out.append(opened)
                continue
            plain = decompress(opened, self.frame_size)
            if (not final and len(plain) != self.frame_size) or len(plain) > self.frame_size:
                raise IntegrityError(f"{self.kind} object: frame {i} holds {len(plain)} "
                                     f"bytes, expected {self.frame_size}")
            out.append(plain)
        return out

    def get(self, first: int, last: int) -> list[bytes]:
        """Plaintext of frames ``first..last``: the run from the first copy that reads it
        intact, else frame by frame from whichever copy holds each one intact."""
        return self.fetch(first, last)[0]

    def raw(self, first: int, last: int) -> bytes:
        """The stored bytes of frames ``first..last`` (the header too for frame 0) as a copy
        holds them intact: what a repair writes to a damaged copy."""
        return self.fetch(first, last)[1]

    def fetch(self, first: int, last: int, decode: bool = True) -> tuple[list[bytes], bytes]:
        """(plaintext frames, stored bytes) of ``first..last`` (without ``decode``: the
        opened records, authenticated but not decompressed)."""
        for copy in list(self.order):
            try:
                stored = self.load(copy.backend, first, last)
                plain = self.open_records(first, last, stored, decode)
            except ArchivedObjectError:
                continue
            except (StorageError, IntegrityError, OSError) as exc:
                self.reader.note(copy, self.kind, exc, first if first == last else None)
                if not isinstance(exc, IntegrityError):  # gone or unreachable: ask it last
                    self.order = [c for c in self.order if c is not copy] + [copy]
                continue
            self.reader.count_served(copy, self.kind, last - first + 1)
            return plain, stored
        if first == last:
            raise _failure(f"{self.kind} object of backup {self.reader.backup_id}: frame "
                           f"{first} is intact on no copy", self.reader.problems)
        plains: list[bytes] = []
        stored_parts: list[bytes] = []
        for i in range(first, last + 1):
            plain_i, stored_i = self.fetch(i, i, decode)
            plains += plain_i
            stored_parts.append(stored_i)
        return plains, b"".join(stored_parts)

    def authenticate(self) -> int:
        """Read every stored record and check its tag, position and length without decoding
        it (``ahead`` runs in flight); the stored size."""
        groups = deque(self.groups())
        with ThreadPoolExecutor(self.ahead, thread_name_prefix="vowvault-read") as pool:
            pending: deque[Any] = deque()
            while groups or pending:
                while groups and len(pending) < self.ahead:
                    pending.append(pool.submit(self.fetch, *groups.popleft(), False))
                pending.popleft().result()
        return self.entry.stored_size

    def stream(self) -> Iterator[bytes]:
        """Every frame in order, the next ``ahead`` runs fetched and decoded while this
        one is handed out; then the whole object's size and digest against the manifest.

        The digest is taken on a thread of its own, run by run in order (one worker: the
        order of submission is the order of hashing), so the consumer's thread only hands
        frames out; at most ``ahead`` runs wait to be hashed."""
        digest = object_digest(self.entry.algorithm)
        size = 0
        groups = deque(self.groups())

        def take(frames: list[bytes]) -> None:
            for plain in frames:
                digest.update(plain)

        with ThreadPoolExecutor(self.ahead, thread_name_prefix="vowvault-read") as pool, \
                ThreadPoolExecutor(1, thread_name_prefix="vowvault-digest") as hasher:
            pending: deque[Any] = deque()
            hashing: deque[Any] = deque()
            while groups or pending:
                while groups and len(pending) < self.ahead:
                    pending.append(pool.submit(self.get, *groups.popleft()))
                frames = pending.popleft().result()
                hashing.append(hasher.submit(take, frames))
                while len(hashing) > self.ahead:
                    hashing.popleft().result()
                for plain in frames:
                    size += len(plain)
                    yield plain
            for job in hashing:
                job.result()
        if size != self.entry.plaintext_size or digest.hexdigest() != self.entry.digest:
            raise IntegrityError(f"{self.kind} object holds {size} bytes with another "
                                 f"checksum than the manifest records")


class RangeReader:
    """Random access to the plaintext of an object: reads only the frames a range needs,
    in loads of at most ``read_size`` bytes, keeping the last frames read."""

    def __init__(self, frames: Frames) -> None:
        self.frames = frames
        self._cache: dict[int, bytes] = {}

    def _fill(self, first: int, last: int) -> None:
        self._cache.clear()
        for a, b in self.frames.groups(first, last):
            for i, plain in enumerate(self.frames.get(a, b), start=a):
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


def _failure(what: str, problems: list[Problem]) -> StorageError | IntegrityError:
    """The error for something no copy could serve: damage if any copy held it damaged or
    lacked it, an outage otherwise."""
    detail = "; ".join(dict.fromkeys(p.message for p in problems[-4:]))
    text = f"{what}" + (f" ({detail})" if detail else "")
    if any(p.health in (CopyHealth.DAMAGED, CopyHealth.MISSING) for p in problems):
        return IntegrityError(text)
    return StorageError(text)


def _archived(backend: StorageBackend, name: str) -> bool:
    info = backend.stat(name)
    return info.archived and info.restore_state != "restored"


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
