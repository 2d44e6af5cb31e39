"""The one storage interface every backend implements, and what backends share.

Storage only moves bytes: it knows nothing of codecs, keys or the catalog. Names are
relative, ``/``-separated (``<org>/<policy>/<backup>/data``) and checked by ``check_name``.
Every backend translates its SDK's errors into ``vowvault.errors`` at its edge through
``service_error`` (an answer of the service: its HTTP status and error code, classified by
the backend's ``ErrorCodes``) and ``transport_error`` (no answer): ``ObjectNotFound``,
``StoragePermissionError``, ``StorageFullError``, ``TransientStorageError``,
``ArchivedObjectError``, or ``StorageError`` for anything else. Their messages go through
``clean``, the one place where anything that looks like a secret is masked.

Retries are not a backend's business: ``vowvault.storage.wrap`` adds them, once, around
any backend, with connection limits and logging.
"""

from __future__ import annotations

import abc
import datetime as dt
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from vowvault.domain import Tier
from vowvault.errors import (
    ArchivedObjectError,
    ObjectNotFound,
    StorageError,
    StorageFullError,
    StoragePermissionError,
    TransientStorageError,
)


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
    the unit a retry resends."""
    parts_in_flight: int = 1
    """Parts of one upload ``save`` sends at once (the backend's ``Upload`` takes parts
    from several threads): at most this many parts, and the one being cut, are held in
    memory per upload."""
    read_ahead: int = 2
    """Ranged loads a stream's reader keeps in flight (each of about 8 MiB)."""


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
        not depend on the object's size (``parts_in_flight`` parts and the one being cut).
        Consumes ``chunks`` exactly once. On any failure, including one raised by
        ``chunks``, the upload is aborted, after every part in flight has ended."""
        props = self.properties()
        upload = self.begin_upload(name, tier=tier)
        try:
            cut = parts(chunks, props.part_size)
            if props.parts_in_flight <= 1:
                for number, part in enumerate(cut):
                    upload.write_part(number, part)
            else:
                write_parts(upload, cut, props.parts_in_flight)
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


CLOUD_READ_AHEAD = 4
"""Ranged loads in flight when a stream is read from a cloud service (latency, not
bandwidth, bounds one request at a time)."""


def write_parts(upload: Upload, cut: Iterable[bytes], at_once: int) -> None:
    """``upload.write_part`` of every part of ``cut``, ``at_once`` parts in flight: the next
    part is cut while earlier ones travel, and a part waits for a free slot. Returns once
    every part is written; on the first failure (of a part, or of ``cut`` itself) no new
    part starts, the parts in flight finish, and the error is raised: nothing is written
    to ``upload`` after this returns or raises, so an abort that follows is the last word."""
    import collections
    from concurrent.futures import ThreadPoolExecutor, wait

    pool = ThreadPoolExecutor(at_once, thread_name_prefix="vowvault-part")
    pending: collections.deque[Any] = collections.deque()
    try:
        for number, part in enumerate(cut):
            while pending and (len(pending) >= at_once or pending[0].done()):
                pending.popleft().result()
            for task in pending:  # a later part that failed already stops the upload too
                if task.done() and task.exception() is not None:
                    task.result()
            pending.append(pool.submit(upload.write_part, number, part))
            del part  # held by the task alone
        while pending:
            pending.popleft().result()
    finally:
        for task in pending:
            task.cancel()  # those not started yet
        interrupted: BaseException | None = None
        while True:
            # A signal while waiting must not let the abort overtake a part. (Waiting on
            # the futures, not joining the threads: an interrupted Thread.join marks a
            # running thread stopped on Python 3.11.)
            try:
                wait(pending)
                break
            except BaseException as exc:
                interrupted = interrupted or exc
        pool.shutdown(wait=False)
        if interrupted is not None:
            raise interrupted


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


def check_name(url: str, name: str) -> str:
    """An object name as every backend accepts it: relative, ``/``-separated, no empty,
    ``.`` or ``..`` segment, no control character (it can never leave the target)."""
    if not name or name.startswith("/") or any(
            part in ("", ".", "..") for part in name.split("/")) or \
            any(ord(c) < 32 for c in name):
        raise StorageError(f"{url}: invalid object name {name!r}")
    return name


_SECRETS = re.compile(
    r"(?i)\b(sig|signature|se|sp|sv|accountkey|sharedaccesssignature|account_key|"
    r"x-amz-security-token|x-amz-signature|x-amz-credential|awsaccesskeyid|access_token|"
    r"password|secret|token)=[^&;\s'\"]+")
_BEARER = re.compile(r"(?i)\b(bearer|sharedkey|basic)\s+[A-Za-z0-9._~+/:=-]+")


def clean(text: str, limit: int = 300) -> str:
    """A message from a service or SDK made fit to show: one line, at most ``limit``
    characters, anything that looks like a credential masked."""
    text = _BEARER.sub(r"\1 ***", _SECRETS.sub(r"\1=***", " ".join(str(text).split())))
    return text if len(text) <= limit else text[:limit - 3] + "..."


@dataclass(frozen=True)
class ErrorCodes:
    """How a service's error codes map onto ours (beyond what the HTTP status says)."""

    not_found: frozenset[str] = frozenset()
    denied: frozenset[str] = frozenset()
    full: frozenset[str] = frozenset()
    transient: frozenset[str] = frozenset()
    archived: frozenset[str] = frozenset()


def service_error(where: str, *, status: int | None, code: str | None, message: str = "",
                  codes: ErrorCodes = ErrorCodes()) -> StorageError:
    """Our error for an answer of the service: ``where`` names the target and object."""
    code = code or None
    message = clean(message)
    if code is None or code.isdigit():  # HEAD answers carry no body, hence no error code
        cause = " ".join(filter(None, [f"HTTP {code or status}", message]))
    else:
        cause = f"{code}: {message}" if message and message != code else code
    text = f"{where}: {cause}"
    if code in codes.archived:
        return ArchivedObjectError(f"{text}: the object is archived; start a restore first")
    if code in codes.full or status == 507:
        return StorageFullError(text)
    if code in codes.not_found or status in (404, 410):
        return ObjectNotFound(text)
    if code in codes.denied or status in (401, 403):
        return StoragePermissionError(text)
    if code in codes.transient or status in (408, 429) or (status is not None
                                                           and status >= 500):
        return TransientStorageError(text)
    return StorageError(text)


def transport_error(where: str, exc: BaseException) -> TransientStorageError:
    """No answer at all (refused, reset, timed out, cut short): worth a retry."""
    return TransientStorageError(f"{where}: connection failed: "
                                 f"{type(exc).__name__}: {clean(str(exc)) or '-'}")
