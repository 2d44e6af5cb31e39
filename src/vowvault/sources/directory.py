"""File trees: a deterministic walk, the content stream, and the index of entries.

A directory backup stores two streams: ``data`` (the contents of the files it holds,
concatenated in walk order) and ``index`` (one JSON line per entry: path, type, mode,
owner, mtime, size, SHA-256, and for files where their bytes are: this backup's data at
``offset``, or another backup's for content unchanged since an earlier backup).

The walk visits each directory's entries sorted by name, depth first; the parent backup's
index is in the same order, so an incremental backup compares both in one merged pass with
bounded memory.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

from vowvault.errors import SourceError

READ_CHUNK = 1 << 20
INDEX_SPOOL = 8 << 20


@dataclass
class Entry:
    path: str
    type: str  # dir, file, symlink, fifo
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    size: int = 0
    sha256: str | None = None
    target: str | None = None
    backup: str | None = None
    """Backup id whose data holds the content (None: this backup)."""
    offset: int | None = None
    ctime_ns: int = 0
    inode: int = 0

    def key(self) -> tuple[str, ...]:
        return tuple(self.path.split("/")) if self.path else ()

    def to_line(self) -> bytes:
        data = {k: v for k, v in asdict(self).items() if v is not None}
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> Entry:
        return cls(**json.loads(line))


@dataclass
class WalkReport:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes_stored: int = 0
    bytes_referenced: int = 0
    files_unchanged: int = 0
    unreadable: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Sockets and device files: not backed up, listed here."""


def _excluded(rel: str, patterns: list[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def walk(root: Path, exclude: list[str] | None = None, one_file_system: bool = True,
         on_error: Callable[[str, OSError], None] | None = None, lenient: bool = False,
         ) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) for the root ("") and everything under it, depth first with
    names sorted, symlinks not followed."""
    patterns = exclude or []
    try:
        root_st = os.lstat(root)
    except FileNotFoundError:
        raise SourceError(f"directory {root} does not exist") from None
    except OSError as exc:
        raise SourceError(f"cannot read directory {root}: {exc.strerror}") from None
    if not stat.S_ISDIR(root_st.st_mode):
        raise SourceError(f"{root} is not a directory")
    yield "", root_st
    yield from _walk_dir(root, "", root_st.st_dev, patterns, one_file_system, on_error,
                         lenient)


def _walk_dir(root: Path, rel: str, dev: int, patterns: list[str], one_fs: bool,
              on_error: Callable[[str, OSError], None] | None, lenient: bool,
              ) -> Iterator[tuple[str, os.stat_result]]:
    full = root / rel if rel else root
    try:
        with os.scandir(full) as it:
            names = sorted(e.name for e in it)
    except OSError as exc:
        if on_error is None:
            raise
        on_error(rel or ".", exc)
        return
    for name in names:
        child = f"{rel}/{name}" if rel else name
        if _excluded(child, patterns):
            continue
        try:
            st = os.lstat(root / child)
        except FileNotFoundError:
            if lenient:
                continue
            raise SourceError(f"{root}/{child} vanished during the backup") from None
        except OSError as exc:
            if on_error is None:
                raise
            on_error(child, exc)
            continue
        yield child, st
        if stat.S_ISDIR(st.st_mode) and not (one_fs and st.st_dev != dev):
            yield from _walk_dir(root, child, dev, patterns, one_fs, on_error, lenient)


class DirectorySnapshot:
    """Produces the ``data`` stream of a directory backup; while it does, writes the index
    to a spool (memory up to 8 MiB, then a temporary file: it is metadata only)."""

    def __init__(self, root: Path, *, exclude: list[str] | None = None,
                 one_file_system: bool = True, parent: Iterator[Entry] | None = None,
                 strict: bool = True, progress: Callable[[int], None] | None = None) -> None:
        self.root = root
        self.exclude = exclude or []
        self.one_file_system = one_file_system
        self.parent = parent
        self.strict = strict
        self.progress = progress
        self.report = WalkReport()
        self.references: set[str] = set()
        self.index: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=INDEX_SPOOL)  # noqa: SIM115

    def estimate(self) -> tuple[int, int]:
        """(files, bytes) under the root: a quick pre-walk for progress reporting."""
        files = size = 0
        for _rel, st in walk(self.root, self.exclude, self.one_file_system,
                             on_error=lambda *_: None, lenient=True):
            if stat.S_ISREG(st.st_mode):
                files += 1
                size += st.st_size
        return files, size

    def _unreadable(self, rel: str, exc: OSError) -> None:
        message = f"{rel}: {exc.strerror or exc}"
        if self.strict:
            raise SourceError(f"cannot read {self.root}/{message} (fix permissions, exclude "
                              f"it, or set on_unreadable: warn)")
        self.report.unreadable.append(message)

    def data(self) -> Iterator[bytes]:
        offset = 0
        parents = _Lookahead(self.parent) if self.parent is not None else None
        for rel, st in walk(self.root, self.exclude, self.one_file_system, self._unreadable):
            mode = st.st_mode
            entry = Entry(path=rel, type="dir", mode=stat.S_IMODE(mode), uid=st.st_uid,
                          gid=st.st_gid, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns,
                          inode=st.st_ino)
            if stat.S_ISDIR(mode):
                self.report.dirs += 1
            elif stat.S_ISLNK(mode):
                entry.type = "symlink"
                try:
                    entry.target = os.readlink(self.root / rel)
                except OSError as exc:
                    self._unreadable(rel, exc)
                    continue
                self.report.symlinks += 1
            elif stat.S_ISFIFO(mode):
                entry.type = "fifo"
            elif stat.S_ISREG(mode):
                entry.type = "file"
                entry.size = st.st_size
                previous = parents.find(entry.key()) if parents else None
                if previous is not None and _unchanged(previous, st):
                    entry.sha256, entry.size = previous.sha256, previous.size
                    entry.backup, entry.offset = previous.backup, previous.offset
                    self.references.add(str(previous.backup))
                    self.report.files_unchanged += 1
                    self.report.bytes_referenced += entry.size
                else:
                    entry.offset = offset
                    read = yield from self._file(rel, entry)
                    if read is None:
                        continue
                    offset += read
                self.report.files += 1
            else:
                self.report.skipped.append(f"{rel}: {_kind(mode)} not backed up")
                continue
            self.index.write(entry.to_line())
        self.report.bytes_stored = offset

    def _file(self, rel: str, entry: Entry) -> Iterator[bytes]:
        """Yield one file's bytes; return how many were read (None: unreadable, skipped)."""
        digest = hashlib.sha256()
        read = 0
        try:
            f = open(self.root / rel, "rb", buffering=0)  # noqa: SIM115
        except FileNotFoundError:
            raise SourceError(f"{self.root}/{rel} vanished during the backup") from None
        except OSError as exc:
            self._unreadable(rel, exc)
            return None
        with f:
            while True:
                try:
                    chunk = f.read(READ_CHUNK)
                except OSError as exc:
                    if exc.errno == errno.EIO or self.strict:
                        raise SourceError(f"read error in {self.root}/{rel}: "
                                          f"{exc.strerror}") from None
                    self._unreadable(rel, exc)
                    return None
                if not chunk:
                    break
                digest.update(chunk)
                read += len(chunk)
                if self.progress:
                    self.progress(len(chunk))
                yield chunk
        # The file may have grown or shrunk while read: record what was read.
        entry.size = read
        entry.sha256 = digest.hexdigest()
        return read

    def index_lines(self) -> Iterator[bytes]:
        self.index.seek(0)
        while True:
            chunk = self.index.read(READ_CHUNK)
            if not chunk:
                return
            yield chunk


def _unchanged(previous: Entry, st: os.stat_result) -> bool:
    return (previous.type == "file" and previous.size == st.st_size
            and previous.mtime_ns == st.st_mtime_ns and previous.ctime_ns == st.st_ctime_ns
            and previous.inode == st.st_ino and previous.sha256 is not None)


def _kind(mode: int) -> str:
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISBLK(mode) or stat.S_ISCHR(mode):
        return "device file"
    return "special file"


class _Lookahead:
    """Merge-join helper over the parent's entries (same walk order)."""

    def __init__(self, entries: Iterator[Entry]) -> None:
        self._it = entries
        self._head: Entry | None = next(self._it, None)

    def find(self, key: tuple[str, ...]) -> Entry | None:
        while self._head is not None and self._head.key() < key:
            self._head = next(self._it, None)
        if self._head is not None and self._head.key() == key:
            return self._head
        return None


def parse_index(chunks: Iterator[bytes]) -> Iterator[Entry]:
    """Entries from an index stream (JSON lines)."""
    rest = b""
    for chunk in chunks:
        rest += chunk
        *lines, rest = rest.split(b"\n")
        for line in lines:
            if line:
                yield Entry.from_line(line)
    if rest.strip():
        yield Entry.from_line(rest)

