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
import hashlib
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from vowvault.errors import (
    ConfigError,
    RestoreError,
    SourceAccessError,
    SourceError,
    SourceMissingError,
)
from vowvault.repository.layout import DATA, INDEX
from vowvault.repository.reader import BackupReader
from vowvault.repository.tree import Entry, TreeReader
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
        raise SourceMissingError(f"directory {root} does not exist") from None
    except PermissionError as exc:
        raise SourceAccessError(f"cannot read directory {root}: {exc.strerror}") from None
    except OSError as exc:
        raise SourceError(f"cannot read directory {root}: {exc.strerror}") from None
    if not stat.S_ISDIR(root_st.st_mode):
        raise SourceMissingError(f"{root} is not a directory")
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
            raise SourceAccessError(f"cannot read {self.root}/{message} (fix permissions, "
                                    f"exclude it, or set on_unreadable: warn)")
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
        snap = DirectorySnapshot(Path(config["path"]), exclude=config.get("exclude") or [],
                                 one_file_system=config.get("one_file_system", True),
                                 parent=TreeReader(parent).entries(resolved=True)
                                 if parent is not None else None,
                                 strict=config.get("on_unreadable", "fail") != "warn")
        _files, total = snap.estimate()
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
                     "bytes_referenced": report.bytes_referenced,
                     "unreadable": report.unreadable, "skipped": report.skipped}
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

        def withhold(entry: Entry) -> bool:
            return bool(entry.path) and path_matches(entry.path, self.patterns)

        for entry, chunks in self.tree.walk(withhold=withhold):
            if withhold(entry):
                counts["withheld"] += 1
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
        for _entry, chunks in TreeReader(reader).walk(referenced=False):
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
            raise RestoreError(f"{directory} exists and is not a directory")
        was_empty = not directory.exists() or not any(
            p.name != INCOMPLETE for p in directory.iterdir())
        if not was_empty and not target.force:
            raise RestoreError(f"{directory} is not empty: restore into an empty directory, "
                               f"or add --force to overwrite files in it")
        erased = [p for e in erasures for p in e.paths]
        writer = TreeWriter(directory, replace=target.force,
                            preserve_owners=target.preserve_owners,
                            note=f"restore of backup {reader.backup_id} in progress")
        try:
            restored, validation = write_tree(TreeReader(reader, references), writer, erased,
                                              progress)
        except BaseException as exc:
            writer.fail(exc, clear=was_empty)  # nothing there looks like a finished restore
            if isinstance(exc, OSError):
                raise RestoreError(f"cannot write under {directory}: "
                                   f"{exc.strerror or exc}") from None
            raise
        applied = [{"request": e.request, "subject": e.subject,
                    "files_withheld": validation.get("withheld", 0)}
                   for e in erasures if e.paths]
        return RestoreOutcome(restored, validation, applied)

    @contextlib.contextmanager
    def scratch(self, config: dict[str, Any],
                server: str | None = None) -> Iterator[RestoreTarget]:
        tmp = Path(tempfile.mkdtemp(prefix="vowvault-drill-"))
        try:
            yield RestoreTarget(directory=tmp / "restored")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def write_tree(tree: TreeReader, writer: TreeWriter, erased: list[str],
               progress: Progress = no_progress) -> tuple[int, dict[str, Any]]:
    """Write a stored tree through ``writer``; files matching ``erased`` are withheld."""
    manifest = tree.reader.manifest
    total = manifest.objects[DATA].plaintext_size + \
        int(manifest.source.get("bytes_referenced") or 0)
    done = files = withheld = dirs = 0

    def withhold(entry: Entry) -> bool:
        return bool(erased) and bool(entry.path) and path_matches(entry.path, erased)

    def counted(chunks: Iterable[bytes]) -> Iterator[bytes]:
        nonlocal done
        for chunk in chunks:
            done += len(chunk)
            progress("restore", done, total)
            yield chunk

    for entry, chunks in tree.walk(withhold=withhold):
        if withhold(entry):
            withheld += 1  # erased after this backup was taken: never handed over
            continue
        writer.add(entry, counted(chunks) if chunks is not None else None)
        files += entry.type == "file"
        dirs += entry.type == "dir" and entry.path != ""
    writer.finish()
    return done, {"files": files, "directories": dirs, "checked": True,
                  "sha256_per_file": True, "withheld": withheld}
