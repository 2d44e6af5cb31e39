"""The one protocol of the things vowvault backs up: a source owns both directions of its
bytes.

A ``SourceDriver`` turns a policy's source configuration into a ``Snapshot`` (the streams
the pipeline stores: object kind and bytes, and what it learnt on the way: the manifest's
``source`` section, further sections, references to other backups, warnings), checks a
stored backup as only it can (every file's checksum, ``pg_restore`` reading a dump), and
writes a backup back into a ``RestoreTarget``, replaying erasures and validating the
result. Drills ask it for a scratch target.

Drivers are found by the catalog's source kind or by the manifest's ``source.kind``
(``vowvault.sources.driver``); a new kind of source is a new module and one registry line.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from vowvault.repository.reader import BackupReader

Progress = Callable[[str, int, "int | None"], None]
"""(what, bytes done, bytes expected or None)."""


def no_progress(what: str, done: int, total: int | None) -> None:
    return None


@dataclass
class SnapshotRequest:
    config: dict[str, Any]
    """The policy's source section."""
    password: str | None = None
    """A database source's password, resolved by the caller from the name the policy
    gives."""
    within: str | None = None
    """A directory source must lie under this directory (the service's rule for its
    organization), checked on the directory actually opened."""
    parent: BackupReader | None = None
    """An incremental or differential backup: the backup it builds on (the source decides
    what it needs of it: a tree's index, say)."""
    progress: Progress = no_progress
    progress_totals: bool = True
    """Whether someone watches the progress's totals (else a source does not pre-walk to
    count them: a tree's second stat of every file)."""
    backup_id: str | None = None
    """The backup being taken (a tree's index names it beside the files it stores)."""
    parent_references: dict[str, BackupReader] | None = None
    """Readers of the backups the parent takes files or index entries from."""


class Snapshot(abc.ABC):
    """One read of a source. ``info``, ``sections``, ``references`` and ``warnings`` are
    complete once ``streams`` has been read to its end."""

    def __init__(self) -> None:
        self.info: dict[str, Any] = {}
        self.sections: dict[str, Any] = {}
        self.references: set[str] = set()
        self.warnings: list[str] = []
        self.proved = True
        """For a driver that ``proved_in_stream``: whether this stream did prove its
        plaintext (a dump the tap could not parse did not: its read-back then decodes and
        runs the driver's deep check, as for any other source)."""

    @abc.abstractmethod
    def streams(self) -> Iterator[tuple[str, Iterable[bytes]]]:
        """(object kind, its bytes) for each object, in the order they are stored."""


@dataclass
class RestoreTarget:
    """Where a restore writes: a directory or a database (with its password)."""

    directory: Path | None = None
    database: str | None = None
    password: str | None = None
    force: bool = False
    """Replace what the target holds (what the backup does not hold goes)."""
    preserve_owners: bool = False
    """Restore owners and set-user/group-id bits (as root); off by default, and for drills."""

    def describe(self) -> str:
        if self.database is not None:
            return redact(self.database)
        return str(self.directory)


@dataclass(frozen=True)
class ErasureSpec:
    """One erasure request to replay on restored data: paths (globs relative to the
    source) and rows (``{"table": "schema.table", "column": ..., "value": ...}``)."""

    request: str
    subject: str
    paths: tuple[str, ...] = ()
    rows: tuple[dict[str, str], ...] = ()


@dataclass
class RestoreOutcome:
    bytes_restored: int
    validation: dict[str, Any] = field(default_factory=dict)
    erasures_applied: list[dict[str, Any]] = field(default_factory=list)


class SourceDriver(abc.ABC):
    name: ClassVar[str]
    """The manifest's ``source.kind``."""
    objects: ClassVar[tuple[str, ...]]
    """The object kinds a snapshot stores, besides the key and the manifest."""
    proved_in_stream: ClassVar[bool] = False
    """The snapshot proves its own plaintext as it streams (a base backup: every file
    against the server's manifest; a dump: every TOC entry and data block parsed by the
    tap, and pg_dump's exit status), unless ``Snapshot.proved`` says otherwise, so what is
    left to prove after a write is that the stored bytes are the ones sealed and that they
    decode to that plaintext: each frame goes through the decompressor once before sealing
    (a round trip), and the read-back after upload authenticates every record without
    decoding again. ``backup verify`` still decodes and checks everything."""

    @abc.abstractmethod
    def snapshot(self, request: SnapshotRequest) -> Snapshot: ...

    @abc.abstractmethod
    def check(self, reader: BackupReader, *, deep: bool) -> set[str]:
        """Prove what only this source can about a stored backup (one copy); returns the
        object kinds read whole (the caller reads the others)."""

    @abc.abstractmethod
    def restore(self, reader: BackupReader, references: dict[str, BackupReader],
                target: RestoreTarget, erasures: list[ErasureSpec],
                progress: Progress = no_progress) -> RestoreOutcome:
        """Write the backup into ``target``, replay ``erasures``, validate the result."""

    @abc.abstractmethod
    def scratch(self, config: dict[str, Any],
                server: str | None = None) -> contextlib.AbstractContextManager[RestoreTarget]:
        """A throw-away target for a drill, removed afterwards."""


def redact(dsn: str) -> str:
    """A DSN safe to print and store: host, port, database, user; never a password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(dsn)
    except Exception:
        return "<unparseable connection string>"
    user = f"{info['user']}@" if info.get("user") else ""
    host = info.get("host") or "localhost"
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{user}{host}{port}/{info.get('dbname', '')}"
