"""File trees, both directions: a deterministic walk that produces a backup's streams, and
writing a stored tree back.

A directory backup stores two streams: ``data`` (the contents of the files it holds,
concatenated in walk order) and ``index`` (one JSON line per entry: path, type, mode,
owner, mtime, size, SHA-256, and for files where their bytes are: this backup's data at
``offset``, or another backup's for content unchanged since an earlier backup; the format
is ``repository.tree``'s).

The walk visits each directory's entries sorted by name, depth first; the parent backup's
index is in the same order, so an incremental backup compares both in one merged pass with
bounded memory.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import logging
import os
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vowvault.errors import (
    BoundaryError,
    ConfigError,
    RestoreError,
    SourceAccessError,
    SourceError,
    SourceMissingError,
    TargetInTheWay,
)
from vowvault.repository.layout import DATA, INDEX
from vowvault.repository.reader import BackupReader
from vowvault.repository.tree import (
    CONTENT_DIGEST,
    Entry,
    Held,
    IndexWriter,
    TreeReader,
    content_hasher,
    digest_name,
    shown,
)
from vowvault.sources.base import (
    ErasureSpec,
    Progress,
    RestoreOutcome,
    RestoreTarget,
    Snapshot,
    SnapshotRequest,
    SourceDriver,
    no_progress,
)
from vowvault.sources.treewriter import INCOMPLETE, TreeWriter

log = logging.getLogger("vowvault")

READ_CHUNK = 1 << 20
INDEX_SPOOL = 8 << 20


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
    hardlinks: int = 0
    changed: list[str] = field(default_factory=list)
    """Entries swapped or replaced between lstat and open: not followed, not backed up."""
    files_moved: int = 0
    """Files found elsewhere in the parent (moved, renamed, copied with their times) and
    referenced, not stored again."""
    bytes_read_twice: int = 0
    """Bytes of files read to compare with a parent's file of the same size and mtime, and
    then stored after all (their content differed)."""


def _excluded(rel: str, patterns: list[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


_DIR_OPEN = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in for a file must not hang the walk (it is refused by fstat).
_FILE_OPEN = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK


@dataclass(slots=True)
class Found:
    """One entry of the walk: its path under the root, the lstat that chose it, and its
    name in the directory ``dir_fd`` (open until the walk moves on)."""

    rel: str
    st: os.stat_result
    name: str
    dir_fd: int


class Changed(Exception):
    """What the walk chose by lstat is not what it opened: swapped or replaced meanwhile."""


def same_object(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino, stat.S_IFMT(a.st_mode)) == \
        (b.st_dev, b.st_ino, stat.S_IFMT(b.st_mode))


def open_found(found: Found, flags: int = _FILE_OPEN) -> int:
    """Open what the walk found, by its directory's descriptor and without following a
    symlink, and only if it is still the object lstat saw; else :class:`Changed`."""
    try:
        fd = os.open(found.name, flags, dir_fd=found.dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
            raise Changed(f"{shown(found.rel)}: changed while read (now a "
                          f"{'symlink' if exc.errno == errno.ELOOP else 'different kind'}): "
                          f"not followed") from None
        raise
    try:
        if not same_object(os.fstat(fd), found.st):
            raise Changed(f"{shown(found.rel)}: replaced while read: not followed")
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Dir:
    __slots__ = ("fd", "names", "rel")

    def __init__(self, rel: str, fd: int, names: list[str]) -> None:
        self.rel, self.fd, self.names = rel, fd, names


def walk(root: Path, exclude: list[str] | None = None, one_file_system: bool = True,
         on_error: Callable[[str, OSError], None] | None = None, lenient: bool = False,
         on_changed: Callable[[str], None] | None = None, within: str | None = None,
         ) -> Iterator[Found]:
    """Everything under ``root`` (the root itself first, as ""), depth first with names
    sorted, by directory descriptors: each directory is opened by name under its parent's
    descriptor with ``O_NOFOLLOW | O_DIRECTORY`` and checked to be the one lstat chose, so
    a symlink swapped in mid-walk is never followed out of the root (``on_changed`` is told
    instead). No recursion: any depth. ``within``: the root opened must really lie under
    that directory (whatever symlinks its path went through)."""
    patterns = exclude or []
    try:
        root_st = os.lstat(root)
        if not stat.S_ISDIR(root_st.st_mode):
            raise SourceMissingError(f"{root} is not a directory")
        root_fd = os.open(root, _DIR_OPEN)
    except FileNotFoundError:
        raise SourceMissingError(f"directory {root} does not exist") from None
    except PermissionError as exc:
        raise SourceAccessError(f"cannot read directory {root}: {exc.strerror}") from None
    except OSError as exc:
        raise SourceError(f"cannot read directory {root}: {exc.strerror}") from None
    stack: list[_Dir] = []
    try:
        if not same_object(os.fstat(root_fd), root_st):
            raise SourceError(f"{root} changed while the backup opened it")
        if within is not None:
            opened = os.readlink(f"/proc/self/fd/{root_fd}")
            base = within.rstrip("/") or "/"
            if opened != base and not opened.startswith(base.rstrip("/") + "/"):
                raise BoundaryError(f"source directory {root} is really {opened}, outside "
                                    f"{base}: not read")
        yield Found("", root_st, ".", root_fd)
        names = _list(root_fd, "", on_error)
        if names is None:
            return
        stack.append(_Dir("", root_fd, names))
        dev = root_st.st_dev
        while stack:
            top = stack[-1]
            if not top.names:
                stack.pop()
                if top.fd != root_fd:
                    os.close(top.fd)
                continue
            name = top.names.pop()
            child = f"{top.rel}/{name}" if top.rel else name
            if _excluded(child, patterns):
                continue
            try:
                st = os.stat(name, dir_fd=top.fd, follow_symlinks=False)
            except OSError as exc:
                _trouble(exc, root, child, lenient, on_error)
                continue
            found = Found(child, st, name, top.fd)
            yield found
            if not stat.S_ISDIR(st.st_mode) or (one_file_system and st.st_dev != dev):
                continue
            try:
                fd = open_found(found, _DIR_OPEN)
            except Changed as exc:
                if on_changed is not None:
                    on_changed(str(exc))
                continue
            except OSError as exc:
                _trouble(exc, root, child, lenient, on_error)
                continue
            names = _list(fd, child, on_error)
            if names is None:
                os.close(fd)
                continue
            stack.append(_Dir(child, fd, names))
    finally:
        for frame in stack:
            if frame.fd != root_fd:
                os.close(frame.fd)
        os.close(root_fd)


def _trouble(exc: OSError, root: Path, child: str, lenient: bool,
             on_error: Callable[[str, OSError], None] | None) -> None:
    """A name that vanished (skipped when ``lenient``, else the backup fails) or cannot be
    read (told to ``on_error``, else raised)."""
    if isinstance(exc, FileNotFoundError):
        if lenient:
            return
        raise SourceError(f"{root}/{shown(child)} vanished during the backup") from None
    if on_error is None:
        raise exc
    on_error(child, exc)


def _list(fd: int, rel: str, on_error: Callable[[str, OSError], None] | None,
          ) -> list[str] | None:
    """A directory's names, reversed sorted (popped from the end: ascending)."""
    try:
        return sorted(os.listdir(fd), reverse=True)
    except OSError as exc:
        if on_error is None:
            raise
        on_error(rel or ".", exc)
        return None


class DirectorySnapshot:
    """Produces the ``data`` stream of a directory backup; while it does, writes the index
    to a spool (memory up to 8 MiB, then a temporary file: it is metadata only)."""

    def __init__(self, root: Path, *, exclude: list[str] | None = None,
                 one_file_system: bool = True,
                 parent: Callable[[], Iterator[Entry]] | None = None,
                 strict: bool = True, progress: Callable[[int], None] | None = None,
                 within: str | None = None, own_id: str | None = None,
                 parent_chunks: dict[str, Held] | None = None) -> None:
        """``parent``: a new iterator over the parent backup's entries (resolved) each
        call; called once for the merge and, if a file is new at its path, once more to
        find it elsewhere in the parent. ``own_id``: this backup's id, named by the entries
        of the files it stores (so that an index chunk means the same in any backup);
        ``parent_chunks``: the parent index's chunks (``TreeReader.chunk_table``), not
        written again."""
        self.root = root
        self.within = within
        self.exclude = exclude or []
        self.one_file_system = one_file_system
        self.parent = parent
        self.strict = strict
        self.progress = progress
        self.report = WalkReport()
        self.references: set[str] = set()
        self.data_references: set[str] = set()
        self.index: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=INDEX_SPOOL)  # noqa: SIM115
        self.own_id = own_id
        self.index_writer = IndexWriter(self.index, parent_chunks)

    def estimate(self) -> tuple[int, int]:
        """(files, bytes) under the root: a quick pre-walk for progress reporting."""
        files = size = 0
        for found in walk(self.root, self.exclude, self.one_file_system,
                          on_error=lambda *_: None, lenient=True, within=self.within):
            if stat.S_ISREG(found.st.st_mode):
                files += 1
                size += found.st.st_size
        return files, size

    def _unreadable(self, rel: str, exc: OSError) -> None:
        message = f"{shown(rel)}: {exc.strerror or exc}"
        if self.strict:
            raise SourceAccessError(f"cannot read {self.root}/{message} (fix permissions, "
                                    f"exclude it, or set on_unreadable: warn)")
        self.report.unreadable.append(message)

    def _changed(self, message: str) -> None:
        self.report.changed.append(message)

    def data(self) -> Iterator[bytes]:
        self._elsewhere: _Elsewhere | None = None
        try:
            yield from self._data()
        finally:
            if self._elsewhere is not None:
                self._elsewhere.close()

    def _data(self) -> Iterator[bytes]:
        offset = 0
        parents = _Lookahead(self.parent()) if self.parent is not None else None
        linked: dict[tuple[int, int], str] = {}
        """(device, inode) -> the path a file with more than one link was stored under."""
        for found in walk(self.root, self.exclude, self.one_file_system, self._unreadable,
                          on_changed=self._changed, within=self.within):
            rel, st = found.rel, found.st
            mode = st.st_mode
            entry = Entry(path=rel, type="dir", mode=stat.S_IMODE(mode), uid=st.st_uid,
                          gid=st.st_gid, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns,
                          inode=st.st_ino)
            if stat.S_ISDIR(mode):
                self.report.dirs += 1
            elif stat.S_ISLNK(mode):
                entry.type = "symlink"
                try:
                    entry.target = os.readlink(found.name, dir_fd=found.dir_fd)
                except OSError as exc:
                    if exc.errno == errno.EINVAL:  # no longer a symlink
                        self._changed(f"{shown(rel)}: changed while read (no longer a symlink): "
                                      f"not backed up")
                        continue
                    self._unreadable(rel, exc)
                    continue
                self.report.symlinks += 1
            elif stat.S_ISFIFO(mode):
                entry.type = "fifo"
            elif stat.S_ISREG(mode):
                first = linked.get((st.st_dev, st.st_ino)) if st.st_nlink > 1 else None
                if first is not None:  # another name of a file already stored
                    entry.type, entry.target = "hardlink", first
                    self.report.hardlinks += 1
                    self._indexed(entry)
                    continue
                entry.type = "file"
                entry.size = st.st_size
                previous = parents.find(entry.key()) if parents else None
                if previous is not None and _unchanged(previous, st):
                    self._refer(entry, previous)
                    self.report.files_unchanged += 1
                else:
                    moved = None
                    if self.parent is not None and st.st_size > 0 and (
                            previous is None or previous.inode != st.st_ino):
                        # New at this path (not the same file written in place): it may
                        # have been moved, renamed or copied from elsewhere in the tree.
                        if self._elsewhere is None:
                            self._elsewhere = _Elsewhere(self.parent())
                        moved = self._find_moved(found, self._elsewhere,
                                                 new_here=previous is None)
                    if moved is not None:
                        self._refer(entry, moved)
                        self.report.files_moved += 1
                    else:
                        entry.offset = offset
                        read = yield from self._file(found, entry)
                        if read is None:
                            continue
                        offset += read
                if st.st_nlink > 1:
                    linked[(st.st_dev, st.st_ino)] = rel
                self.report.files += 1
            else:
                self.report.skipped.append(f"{shown(rel)}: {_kind(mode)} not backed up")
                continue
            self._indexed(entry)
        self.report.bytes_stored = offset
        self.index_writer.close()
        self.data_references = set(self.references)
        self.references |= self.index_writer.holders

    def _indexed(self, entry: Entry) -> None:
        if entry.type == "file" and entry.backup is None and self.own_id is not None:
            entry.backup = self.own_id
        self.index_writer.add(entry.to_line())

    def _refer(self, entry: Entry, held: Entry) -> None:
        """``entry``'s content is ``held``'s, in the backup that stores it."""
        entry.take_digest(held)
        entry.size = held.size
        entry.backup, entry.offset = held.backup, held.offset
        self.references.add(str(held.backup))
        self.report.bytes_referenced += entry.size

    def _find_moved(self, found: Found, elsewhere: _Elsewhere, *,
                    new_here: bool) -> Entry | None:
        """The parent's file holding what ``found`` holds, if any. At a path new in the
        tree, the same name, inode, size, mtime and ctime (a file of a moved or renamed
        directory) is the same file, as an unchanged one is at its own path; a file of the
        same size and mtime (renamed itself, moved across file systems, copied with its
        times, or a path whose file was replaced) is read and hashed first, and is that
        file only if its content hash (the one the parent recorded) is the same."""
        st = found.st
        same = elsewhere.same_file(st, found.name) if new_here else None
        if same is not None:
            return same
        candidates = elsewhere.same_size_and_mtime(st)
        if not candidates:
            return None
        algorithms = sorted({d[0] for held in candidates if (d := held.digest)})
        digests, read = self._hash(found, algorithms)
        for held in candidates:
            d = held.digest
            if d is not None and digests.get(d[0]) == d[1] and held.size == read:
                return held
        self.report.bytes_read_twice += read
        return None

    def _hash(self, found: Found, algorithms: list[str]) -> tuple[dict[str, str], int]:
        """Digests (by algorithm) and size of what ``found`` holds now (none: it could not
        be read here; the normal read reports why)."""
        hashers = {a: content_hasher(a) for a in algorithms}
        read = 0
        try:
            fd = open_found(found)
        except (Changed, OSError):
            return {}, 0
        try:
            os.set_blocking(fd, True)
            while chunk := os.read(fd, READ_CHUNK):
                for h in hashers.values():
                    h.update(chunk)
                read += len(chunk)
        except OSError:
            return {}, read
        finally:
            os.close(fd)
        return {a: h.hexdigest() for a, h in hashers.items()}, read

    def _file(self, found: Found, entry: Entry) -> Iterator[bytes]:
        """Yield one file's bytes; return how many were read (None: unreadable, changed
        or skipped). The file is opened without following a symlink, by its directory's
        descriptor, and read only if it is the file lstat chose."""
        rel = found.rel
        digest = content_hasher(CONTENT_DIGEST)
        read = 0
        try:
            fd = open_found(found)
            os.set_blocking(fd, True)
            f = os.fdopen(fd, "rb", buffering=0)
        except Changed as exc:
            self._changed(str(exc))
            return None
        except FileNotFoundError:
            raise SourceError(f"{self.root}/{shown(rel)} vanished during the backup") from None
        except OSError as exc:
            self._unreadable(rel, exc)
            return None
        with f:
            while True:
                try:
                    chunk = f.read(READ_CHUNK)
                except OSError as exc:
                    if exc.errno == errno.EIO or self.strict:
                        raise SourceError(f"read error in {self.root}/{shown(rel)}: "
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
        entry.record_digest(CONTENT_DIGEST, digest.hexdigest())
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
            and previous.inode == st.st_ino and previous.digest is not None)


def _kind(mode: int) -> str:
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISBLK(mode) or stat.S_ISCHR(mode):
        return "device file"
    return "special file"


class _Elsewhere:
    """The parent backup's files by inode and by size and mtime, in a temporary SQLite
    file (memory stays flat however large the tree), loaded once, when the walk first
    meets a file that is new at its path."""

    def __init__(self, entries: Iterator[Entry]) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="vowvault-parent-")
        try:
            # The walk's generator may be closed from another thread than the one that
            # opened this: the connection is used by one thread at a time.
            self._db = sqlite3.connect(os.path.join(self._dir.name, "files.db"),
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=OFF")
            self._db.execute("PRAGMA synchronous=OFF")
            self._db.execute("CREATE TABLE f (inode INTEGER, size INTEGER, mtime INTEGER, "
                             "ctime INTEGER, name TEXT, sha256 TEXT, blake3 TEXT, "
                             "backup TEXT, off INTEGER)")
            rows = ((_i64(e.inode), e.size, e.mtime_ns, e.ctime_ns, e.path.rpartition("/")[2],
                     e.sha256, e.blake3, e.backup, e.offset)
                    for e in entries
                    if e.type == "file" and e.digest is not None and e.backup is not None
                    and e.size > 0)
            self._db.executemany("INSERT INTO f VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self._db.execute("CREATE INDEX f_inode ON f (inode)")
            self._db.execute("CREATE INDEX f_size ON f (size, mtime)")
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _entry(row: tuple[Any, ...]) -> Entry:
        return Entry(path="", type="file", mode=0, uid=0, gid=0, mtime_ns=row[2],
                     ctime_ns=row[3], inode=row[0] % (1 << 64), size=row[1], sha256=row[4],
                     blake3=row[5], backup=row[6], offset=row[7])

    def same_file(self, st: os.stat_result, name: str) -> Entry | None:
        """The parent's file of that name with the same inode, size, mtime and ctime (a
        file of a moved or renamed folder; the name too, as inode numbers are not stable
        on every file system: FAT, exFAT or sshfs number files anew at each mount)."""
        row = self._db.execute("SELECT inode, size, mtime, ctime, sha256, blake3, backup, off "
                               "FROM f "
                               "WHERE inode = ? AND size = ? AND mtime = ? AND ctime = ? "
                               "AND name = ? LIMIT 1",
                               (_i64(st.st_ino), st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                                name)).fetchone()
        return self._entry(row) if row else None

    def same_size_and_mtime(self, st: os.stat_result, limit: int = 8) -> list[Entry]:
        """Distinct contents of that size and mtime (a few: each costs nothing to compare
        once the file is hashed)."""
        rows = self._db.execute("SELECT inode, size, mtime, ctime, sha256, blake3, backup, off "
                                "FROM f WHERE size = ? AND mtime = ? GROUP BY sha256, blake3 "
                                "LIMIT ?",
                                (st.st_size, st.st_mtime_ns, limit)).fetchall()
        return [self._entry(r) for r in rows]

    def close(self) -> None:
        try:
            db = getattr(self, "_db", None)
            if db is not None:
                db.close()
        finally:
            self._dir.cleanup()


def _i64(inode: int) -> int:
    """An inode number (up to 2**64 - 1 on some file systems) as SQLite's signed integer."""
    return inode - (1 << 64) if inode >= 1 << 63 else inode


class _Lookahead:
    """Merge-join helper over the parent's entries (same walk order)."""

    def __init__(self, entries: Iterator[Entry]) -> None:
        self._it = entries
        self._head: Entry | None = None
        self._head_key: tuple[str, ...] = ()
        self._advance()

    def _advance(self) -> None:
        self._head = next(self._it, None)
        if self._head is not None:
            self._head_key = self._head.key()

    def find(self, key: tuple[str, ...]) -> Entry | None:
        while self._head is not None and self._head_key < key:
            self._advance()
        if self._head is not None and self._head_key == key:
            return self._head
        return None


def path_matches(path: str, patterns: list[str]) -> bool:
    """A glob on the relative path, or a directory and everything under it."""
    for p in patterns:
        p = p.strip("/")
        if fnmatch.fnmatchcase(path, p) or path == p or path.startswith(p + "/"):
            return True
        if p.endswith("/**") and (path == p[:-3] or path.startswith(p[:-2])):
            return True
    return False


class TreeSnapshot(Snapshot):
    """The streams of a directory backup: ``data`` while walking, then ``index``."""

    def __init__(self, request: SnapshotRequest) -> None:
        super().__init__()
        self.request = request

    def streams(self) -> Iterator[tuple[str, Iterable[bytes]]]:
        config, progress = self.request.config, self.request.progress
        parent = self.request.parent
        refs = self.request.parent_references or {}
        snap = DirectorySnapshot(Path(config["path"]), exclude=config.get("exclude") or [],
                                 one_file_system=config.get("one_file_system", True),
                                 parent=(lambda: TreeReader(parent, refs).entries(
                                     resolved=True)) if parent is not None else None,
                                 strict=config.get("on_unreadable", "fail") != "warn",
                                 within=self.request.within, own_id=self.request.backup_id,
                                 parent_chunks=TreeReader(parent, refs).chunk_table()
                                 if parent is not None else None)
        # The total only for someone who watches it: the pre-walk stats every file again
        total = snap.estimate()[1] if self.request.progress_totals else None
        done = 0

        def read(n: int) -> None:
            nonlocal done
            done += n
            progress("read", done, total)

        snap.progress = read
        yield DATA, snap.data()
        report = snap.report
        self.references = set(snap.references)
        self.info = {"kind": "directory", "path": config["path"], "files": report.files,
                     "dirs": report.dirs, "symlinks": report.symlinks,
                     "files_unchanged": report.files_unchanged,
                     "files_moved": report.files_moved,
                     "data_references": sorted(snap.data_references),
                     "index_bytes_written": snap.index_writer.literal_bytes,
                     "index_bytes_referenced": snap.index_writer.referenced_bytes,
                     "bytes_read_twice": report.bytes_read_twice,
                     "bytes_referenced": report.bytes_referenced,
                     "hardlinks": report.hardlinks,
                     "unreadable": report.unreadable, "skipped": report.skipped,
                     "changed": report.changed}
        if report.changed:
            self.warnings.append(f"{len(report.changed)} entries changed while read, not "
                                 f"followed and not backed up: "
                                 + "; ".join(report.changed[:5]))
        if report.unreadable:
            self.warnings.append(f"{len(report.unreadable)} unreadable files not backed up: "
                                 + "; ".join(report.unreadable[:5]))
        yield INDEX, snap.index_lines()


class TreeRewrite(Snapshot):
    """The streams of a new, self-contained backup made from a stored tree without the
    entries ``withhold`` matches (an erasure purge): data copied from wherever the tree
    holds it, every file checked on the way."""

    def __init__(self, tree: TreeReader, patterns: list[str]) -> None:
        super().__init__()
        self.tree, self.patterns = tree, patterns

    def streams(self) -> Iterator[tuple[str, Iterable[bytes]]]:
        index: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=INDEX_SPOOL)  # noqa: SIM115
        counts = {"files": 0, "withheld": 0}
        yield DATA, self._data(index, counts)
        self.info = {"kind": "directory", "rewritten": True, "files": counts["files"],
                     "withheld": counts["withheld"]}
        index.seek(0)
        yield INDEX, iter(lambda: index.read(READ_CHUNK), b"")

    def _data(self, index: IO[bytes], counts: dict[str, int]) -> Iterator[bytes]:
        offset = 0

        gone: set[str] = set()

        def withhold(entry: Entry) -> bool:
            if entry.type == "hardlink":  # another name of an erased file goes with it
                return entry.target in gone
            if bool(entry.path) and path_matches(entry.path, self.patterns):
                gone.add(entry.path)
                return True
            return False

        for entry, chunks in self.tree.walk(withhold=withhold):
            if withhold(entry):
                counts["withheld"] += entry.type != "dir"  # files; folders go with them
                continue
            if entry.type == "file":
                assert chunks is not None
                yield from chunks
                entry = Entry(**{**entry.__dict__, "backup": None, "offset": offset})
                offset += entry.size
                counts["files"] += 1
            index.write(entry.to_line())


class DirectoryDriver(SourceDriver):
    name = "directory"
    objects = (DATA, INDEX)

    def snapshot(self, request: SnapshotRequest) -> Snapshot:
        return TreeSnapshot(request)

    def check(self, reader: BackupReader, *, deep: bool) -> set[str]:
        """Every file this backup stores, in data order, against its SHA-256 and the
        index's offsets (the data and index objects are read whole on the way)."""
        for _entry, chunks in TreeReader(reader, expand=False).walk(referenced=False):
            for _ in chunks or ():
                pass
        return {DATA, INDEX}

    def restore(self, reader: BackupReader, references: dict[str, BackupReader],
                target: RestoreTarget, erasures: list[ErasureSpec],
                progress: Progress = no_progress) -> RestoreOutcome:
        if target.directory is None:
            raise ConfigError(f"backup {reader.backup_id} is a file tree: restore it with "
                              f"--to-dir")
        directory = target.directory
        if directory.exists() and not directory.is_dir():
            raise TargetInTheWay(f"{directory} exists and is not a directory: restore into a "
                                 f"new or empty directory")
        was_empty = not directory.exists() or not any(
            p.name != INCOMPLETE for p in directory.iterdir())
        if not was_empty and not target.force:
            raise TargetInTheWay(f"{directory} is not empty: restore into an empty directory, "
                               f"or add --force to overwrite files in it")
        erased = [p for e in erasures for p in e.paths]
        try:
            writer = TreeWriter(directory, replace=target.force,
                                preserve_owners=target.preserve_owners,
                                note=f"restore of backup {reader.backup_id} in progress")
        except OSError as exc:
            raise ConfigError(f"cannot restore into {directory}: {exc.strerror or exc}: give "
                              f"a directory that can be created and written") from None
        held_back: list[Entry] = []
        try:
            restored, validation = write_tree(TreeReader(reader, references), writer, erased,
                                              progress, held_back.append)
        except BaseException as exc:
            writer.fail(exc, clear=was_empty)  # nothing there looks like a finished restore
            if isinstance(exc, OSError):
                raise RestoreError(f"cannot write under {directory}: "
                                   f"{exc.strerror or exc}") from None
            raise
        return RestoreOutcome(restored, validation, _attribute(erasures, held_back))

    @contextlib.contextmanager
    def scratch(self, config: dict[str, Any],
                server: str | None = None) -> Iterator[RestoreTarget]:
        tmp = Path(tempfile.mkdtemp(prefix="vowvault-drill-"))
        try:
            yield RestoreTarget(directory=tmp / "restored")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _attribute(erasures: list[ErasureSpec], held_back: list[Entry]) -> list[dict[str, Any]]:
    """What each erasure request withheld: files (other names of a file included) and
    folders counted apart."""
    applied = []
    for e in erasures:
        if not e.paths:
            continue
        mine = {h.path for h in held_back if h.type != "hardlink" and
                path_matches(h.path, list(e.paths))}
        mine |= {h.path for h in held_back if h.type == "hardlink" and h.target in mine}
        kinds = [h.type for h in held_back if h.path in mine]
        applied.append({"request": e.request, "subject": e.subject,
                        "files_withheld": sum(k != "dir" for k in kinds),
                        "folders_withheld": kinds.count("dir")})
    return applied


def write_tree(tree: TreeReader, writer: TreeWriter, erased: list[str],
               progress: Progress = no_progress,
               held_back: Callable[[Entry], None] | None = None) -> tuple[int, dict[str, Any]]:
    """Write a stored tree through ``writer``; entries matching ``erased`` are withheld
    (and passed to ``held_back``); ``withheld`` counts files, ``withheld_folders`` folders."""
    manifest = tree.reader.manifest
    total = manifest.objects[DATA].plaintext_size + \
        int(manifest.source.get("bytes_referenced") or 0)
    done = files = withheld = withheld_dirs = dirs = 0
    algorithms: set[str] = set()

    gone: set[str] = set()

    def withhold(entry: Entry) -> bool:
        """Erased, or another name of an erased file."""
        if entry.type == "hardlink":
            return entry.target in gone
        if bool(erased) and bool(entry.path) and path_matches(entry.path, erased):
            gone.add(entry.path)
            return True
        return False

    def counted(chunks: Iterable[bytes]) -> Iterator[bytes]:
        nonlocal done
        for chunk in chunks:
            done += len(chunk)
            progress("restore", done, total)
            yield chunk

    for entry, chunks in tree.walk(withhold=withhold):
        if withhold(entry):  # erased after this backup was taken: never handed over
            if entry.type == "dir":
                withheld_dirs += 1
            else:
                withheld += 1
            if held_back is not None:
                held_back(entry)
            continue
        writer.add(entry, counted(chunks) if chunks is not None else None)
        files += entry.type == "file"
        dirs += entry.type == "dir" and entry.path != ""
        if entry.type == "file" and (recorded := entry.digest) is not None:
            algorithms.add(recorded[0])
    writer.finish()
    return done, {"files": files, "directories": dirs, "checked": True,
                  "checksum_per_file": " or ".join(digest_name(a) for a in
                                                   sorted(algorithms)) or "BLAKE3",
                  "withheld": withheld, "withheld_folders": withheld_dirs}
