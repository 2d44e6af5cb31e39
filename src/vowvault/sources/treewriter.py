"""Writing a tree under a target directory, and nowhere else.

Every directory is reached by file descriptors from the target's own, each component opened
with ``O_NOFOLLOW | O_DIRECTORY``: a symlink already in the target, or one the index makes,
is never followed. The index is trusted for nothing: an entry is placed only under a
directory the backup itself holds, so ``link -> /outside`` followed by ``link/x`` is refused.
Files are written to a temporary name beside their final one and renamed into place (a
failed or killed restore never leaves a truncated file under a real name), with mode, owner
and times set through the open descriptor; symlinks are made last, and nothing is ever
changed through one. Set-user-id and set-group-id bits and foreign owners are restored
only when asked (``preserve_owners``).

While a restore runs, the target holds ``.vowvault-incomplete`` at its top (saying which
restore and, after a failure, why): a tree without it is complete. Replacing
(``replace``: ``--force`` and emergency recoveries) makes the target what the backup holds:
what is in the way is removed, and so is everything the backup does not hold.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import secrets
import stat
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from vowvault.errors import IntegrityError, RestoreError, TargetInTheWay
from vowvault.repository.tree import Entry

INCOMPLETE = ".vowvault-incomplete"
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID
_KEEP_OPEN = 256


class TreeWriter:
    def __init__(self, root: Path, *, replace: bool = False, preserve_owners: bool = False,
                 note: str = "") -> None:
        root.mkdir(parents=True, exist_ok=True)  # the operator's own path
        self.root = root
        self.replace, self.preserve_owners = replace, preserve_owners
        self.root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._fds: dict[str, int] = {}
        self.kinds: dict[str, str] = {"": "dir"}
        self._links: list[Entry] = []
        self._dirs: list[Entry] = []
        self._late: list[tuple[Entry, list[bytes]]] = []
        self._root_seen = False
        self._writers = _Writers(self._place_file)
        self._write_marker(note or "restore in progress")

    # -- where things go ------------------------------------------------------------------

    def _dir_fd(self, rel: str) -> int:
        """The descriptor of a directory this restore placed (or found, when replacing),
        reached component by component from the nearest one still open, without following
        anything and without recursion (any depth)."""
        if rel == "":
            return self.root_fd
        found = self._fds.get(rel)
        if found is not None:
            return found
        parts = rel.split("/")
        depth = len(parts) - 1
        while depth > 0 and "/".join(parts[:depth]) not in self._fds:
            depth -= 1
        fd = self._fds["/".join(parts[:depth])] if depth else self.root_fd
        for i in range(depth, len(parts)):
            try:
                fd = os.open(parts[i], _DIR, dir_fd=fd)
            except OSError as exc:
                raise RestoreError(f"{self.root}/{rel} is no longer a directory of this "
                                   f"restore ({exc.strerror}): something changed it "
                                   f"meanwhile") from None
            self._keep("/".join(parts[:i + 1]), fd)
        return fd

    def _keep(self, rel: str, fd: int) -> None:
        """Remember an open directory; beyond ``_KEEP_OPEN``, the oldest is closed (the
        one just used to open ``fd`` may go: it is not used again)."""
        if len(self._fds) >= _KEEP_OPEN:
            oldest = next(iter(self._fds))
            os.close(self._fds.pop(oldest))
        self._fds[rel] = fd

    def _parent(self, entry: Entry) -> tuple[int, str]:
        parts = entry.path.split("/")
        if entry.path in ("", ".") or entry.path.startswith("/") or \
                any(p in ("", ".", "..") for p in parts):
            raise IntegrityError(f"index holds an unsafe path {entry.path!r}")
        parent = "/".join(parts[:-1])
        if self.kinds.get(parent) != "dir":
            raise IntegrityError(f"index places {entry.path!r} under {parent!r}, which the "
                                 f"backup does not hold as a directory")
        if entry.path in self.kinds:
            raise IntegrityError(f"index holds {entry.path!r} twice")
        return self._dir_fd(parent), parts[-1]

    def _clear_way(self, parent_fd: int, name: str, rel: str, *, keep_dir: bool) -> None:
        """Make room for ``name``: nothing there, or (``keep_dir``) a real directory."""
        try:
            st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if keep_dir and stat.S_ISDIR(st.st_mode):
            return
        if not self.replace:
            raise TargetInTheWay(f"{self.root}/{rel} is in the way; add --force to replace it")
        if stat.S_ISDIR(st.st_mode):
            remove_tree(parent_fd, name)
        else:
            os.unlink(name, dir_fd=parent_fd)

    # -- entries --------------------------------------------------------------------------

    def add(self, entry: Entry, chunks: Iterable[bytes] | None = None) -> int:
        """Place one entry (a file's bytes from ``chunks``, consumed before this returns);
        bytes taken. Files are written by writer threads: a file is in place once
        ``finish`` returns, and a writer's error is raised by a later ``add`` or by
        ``finish``."""
        self._writers.check()
        if entry.path == "":
            if entry.type != "dir" or self._root_seen:
                raise IntegrityError(f"index holds the target itself as a {entry.type}"
                                     if entry.type != "dir" else "index holds the target "
                                     "itself twice")
            self._root_seen = True
            self._dirs.append(entry)  # the target itself: its metadata at the end
            return 0
        if entry.path == INCOMPLETE:  # the backup holds a file of the marker's name
            self.kinds[entry.path] = entry.type
            self._late.append((entry, list(chunks or ())))
            return 0
        parent_fd, name = self._parent(entry)
        self.kinds[entry.path] = entry.type
        if entry.type == "dir":
            self._clear_way(parent_fd, name, entry.path, keep_dir=True)
            with contextlib.suppress(FileExistsError):  # a real directory (checked): reused
                os.mkdir(name, 0o700, dir_fd=parent_fd)
            self._dir_fd(entry.path)
            self._dirs.append(entry)
            return 0
        if entry.type == "symlink":
            self._links.append(entry)
            return 0
        if entry.type == "fifo":
            self._fifo(parent_fd, name, entry)
            return 0
        if entry.type == "hardlink":
            self._writers.drain()  # the file it names is in place first
            self._hardlink(entry, name)
            return 0
        if entry.type != "file":
            raise IntegrityError(f"index holds {entry.path!r} of unknown type {entry.type!r}")
        return self._writers.write(os.dup(parent_fd), name, entry, chunks or ())

    def _temp(self, name: str) -> str:
        return f".vowvault-tmp.{secrets.token_hex(8)}"  # short: any name may be 255 bytes

    def _hardlink(self, entry: Entry, name: str) -> None:
        """Another name of a file this restore placed (never of anything else)."""
        target = entry.target or ""
        if self.kinds.get(target) != "file" or target == INCOMPLETE:
            raise IntegrityError(f"index links {entry.path!r} to {target!r}, which the "
                                 f"backup does not hold as a file")
        source_dir, _, source = target.rpartition("/")
        source_fd = os.dup(self._dir_fd(source_dir))
        try:
            parent_fd = self._dir_fd(entry.path.rpartition("/")[0])
            tmp = self._temp(name)
            os.link(source, tmp, src_dir_fd=source_fd, dst_dir_fd=parent_fd,
                    follow_symlinks=False)
            try:
                self._clear_way(parent_fd, name, entry.path, keep_dir=False)
                os.replace(tmp, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
            except BaseException:
                _unlink_quietly(parent_fd, tmp)
                raise
        finally:
            os.close(source_fd)

    def _place_file(self, parent_fd: int, name: str, entry: Entry,
                    chunks: Iterable[bytes]) -> int:
        """Write a file under a temporary name and rename it into place; a failure (of a
        write, or of ``chunks``: a checksum that does not match) leaves no file."""
        tmp = self._temp(name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=parent_fd)
        written = 0
        try:
            with os.fdopen(fd, "wb", closefd=True) as f:
                for chunk in chunks:
                    f.write(chunk)
                    written += len(chunk)
                f.flush()
                self._metadata(f.fileno(), entry)
            self._clear_way(parent_fd, name, entry.path, keep_dir=False)
            os.replace(tmp, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
        except BaseException:
            _unlink_quietly(parent_fd, tmp)
            raise
        return written

    def _fifo(self, parent_fd: int, name: str, entry: Entry) -> None:
        tmp = self._temp(name)
        os.mkfifo(tmp, 0o600, dir_fd=parent_fd)
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC,
                         dir_fd=parent_fd)
            try:
                self._metadata(fd, entry)
            finally:
                os.close(fd)
            self._clear_way(parent_fd, name, entry.path, keep_dir=False)
            os.replace(tmp, name, src_dir_fd=parent_fd, dst_dir_fd=parent_fd)
        except BaseException:
            _unlink_quietly(parent_fd, tmp)
            raise

    def _metadata(self, fd: int, entry: Entry) -> None:
        mode = stat.S_IMODE(entry.mode)
        if self.preserve_owners:
            with contextlib.suppress(PermissionError):  # not root: the restorer's files
                os.fchown(fd, entry.uid, entry.gid)
        else:
            mode &= ~_SPECIAL_BITS
        os.fchmod(fd, mode)
        os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))

    # -- the end --------------------------------------------------------------------------

    def finish(self) -> None:
        """Every file written, then symlinks, then directories' metadata (children first),
        then (replacing) what the backup does not hold goes, then the marker."""
        self._writers.stop()
        for entry in self._links:
            parent_fd, name = self._dir_fd(entry.path.rpartition("/")[0]), \
                entry.path.rpartition("/")[2]
            self._clear_way(parent_fd, name, entry.path, keep_dir=False)
            os.symlink(entry.target or "", name, dir_fd=parent_fd)
            if self.preserve_owners:
                with contextlib.suppress(PermissionError):
                    os.chown(name, entry.uid, entry.gid, dir_fd=parent_fd,
                             follow_symlinks=False)
            os.utime(name, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=parent_fd,
                     follow_symlinks=False)
        if self.replace:
            self._remove_extras()
        for entry in sorted(self._dirs, key=lambda e: e.path.count("/"), reverse=True):
            self._metadata(self._dir_fd(entry.path), entry)
        os.unlink(INCOMPLETE, dir_fd=self.root_fd)
        for entry, data in self._late:
            self._place_file(self.root_fd, INCOMPLETE, entry, data)
        self.close()

    def fail(self, error: BaseException, *, clear: bool) -> None:
        """Leave the marker saying why; with ``clear`` (the target was empty) remove
        everything else, so that nothing looks like a finished restore."""
        try:
            self._writers.stop(quiet=True)
            if clear:
                for name in os.listdir(self.root_fd):
                    if name != INCOMPLETE:
                        st = os.stat(name, dir_fd=self.root_fd, follow_symlinks=False)
                        if stat.S_ISDIR(st.st_mode):
                            remove_tree(self.root_fd, name)
                        else:
                            os.unlink(name, dir_fd=self.root_fd)
            why = str(error).strip().splitlines()[0] if str(error).strip() else \
                type(error).__name__
            self._write_marker(f"restore failed: {why}")
        except OSError:
            pass  # the error being reported matters more than the marker's text
        finally:
            self.close()

    def _remove_extras(self) -> None:
        """Everything under the target the backup does not hold (replacing)."""
        pending = [""]
        while pending:
            rel = pending.pop()
            fd = self._dir_fd(rel)
            for name in os.listdir(fd):
                child = f"{rel}/{name}" if rel else name
                if child == INCOMPLETE:
                    continue
                kind = self.kinds.get(child)
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if kind is None:
                    if stat.S_ISDIR(st.st_mode):
                        remove_tree(fd, name)
                    else:
                        os.unlink(name, dir_fd=fd)
                elif kind == "dir" and stat.S_ISDIR(st.st_mode):
                    pending.append(child)

    def _write_marker(self, text: str) -> None:
        tmp = self._temp(INCOMPLETE)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644, dir_fd=self.root_fd)
        with os.fdopen(fd, "w") as f:
            f.write(text.rstrip() + "\n")
        os.replace(tmp, INCOMPLETE, src_dir_fd=self.root_fd, dst_dir_fd=self.root_fd)

    def _close_dirs(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def close(self) -> None:
        self._writers.stop(quiet=True)
        self._close_dirs()
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1


WRITERS = 2
"""Threads that create and write files (file creation and the copy into the page cache
are the kernel's work, and most of a restore's: two threads use both cores)."""


class _Abort(Exception):
    """The caller's chunks failed: the file being written must not be placed."""


_END = object()
_ABORT = object()


class _Writers:
    """Files written by ``WRITERS`` threads, each from a bounded queue of its own: a job
    (the file's directory, as a descriptor of its own, its name and entry), its chunks,
    then the end (or an abort, when the chunks failed). Each file goes to the least busy
    thread; at most ``depth`` chunks (views of immutable bytes: nothing is copied) wait
    per thread. The first error of a writer is kept and raised by ``check`` in the
    caller's thread, then and every time after; writers only discard what they are
    given after it."""

    def __init__(self, place: Any, depth: int = 8, threads: int = WRITERS) -> None:
        self._place = place
        self._depth, self._count = depth, threads
        self._queues: list[queue.Queue[Any]] = []
        self._threads: list[tuple[threading.Thread, threading.Event]] = []
        self._error: BaseException | None = None
        """The first failure of a writer: nothing is placed after it."""
        self._broken = False
        self._lock = threading.Lock()

    def _start(self) -> None:
        for i in range(self._count):
            q: queue.Queue[Any] = queue.Queue(self._depth)
            ended = threading.Event()
            t = threading.Thread(target=self._run, args=(q, ended), daemon=True,
                                 name=f"vowvault-write-{i}")
            self._queues.append(q)
            self._threads.append((t, ended))
            t.start()

    def _run(self, q: queue.Queue[Any], ended: threading.Event) -> None:
        try:
            self._serve(q)
        finally:
            ended.set()

    def _serve(self, q: queue.Queue[Any]) -> None:
        stop = [False]
        while not stop[0] and (item := q.get()) is not None:
            if isinstance(item, threading.Event):
                item.set()
                continue
            dir_fd, name, entry = item
            chunks = self._chunks(q, stop)
            try:
                if not self._broken:
                    self._place(dir_fd, name, entry, chunks)
            except _Abort:
                pass  # the caller has the error, or is stopping
            except BaseException as exc:
                with self._lock:
                    if not self._broken:
                        self._error, self._broken = exc, True
            finally:
                with contextlib.suppress(_Abort):
                    for _ in chunks:  # the rest of this file's items
                        pass
                os.close(dir_fd)

    @staticmethod
    def _chunks(q: queue.Queue[Any], stop: list[bool]) -> Iterator[bytes]:
        """A file's chunks, up to its end; anything but a chunk or the end (an abort, the
        stop of a caller interrupted in the middle of a file, a drain mark) means the file
        is incomplete and must not be placed."""
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, bytes | memoryview):
                yield item
                continue
            if item is None:
                stop[0] = True
            elif isinstance(item, threading.Event):
                item.set()
            raise _Abort

    def write(self, dir_fd: int, name: str, entry: Entry, chunks: Iterable[bytes]) -> int:
        """Queue one file (``dir_fd`` is the writer's to close, whatever happens); the bytes
        taken. The file is written only if every chunk came and none failed."""
        try:
            if not self._threads:
                self._start()
            q = min(self._queues, key=lambda x: x.qsize())
            q.put((dir_fd, name, entry))
        except BaseException:
            os.close(dir_fd)
            raise
        taken, ended = 0, False
        try:
            for chunk in chunks:
                if self._broken:  # a writer failed: this file is not finished either
                    break
                q.put(chunk)
                taken += len(chunk)
            else:
                ended = True
        finally:
            q.put(_END if ended else _ABORT)
        self.check()
        return taken

    def check(self) -> None:
        """Raise the first failure of a writer (every time: the restore cannot go on)."""
        if self._error is not None:
            raise self._error

    def drain(self) -> None:
        """Wait until every file queued so far is written (or failed); raise the first
        error."""
        if self._threads:
            marks = [threading.Event() for _ in self._queues]
            for q, mark in zip(self._queues, marks, strict=True):
                q.put(mark)
            for mark in marks:
                mark.wait()
        self.check()

    def stop(self, *, quiet: bool = False) -> None:
        """Drain, then end the threads; the first error is raised unless ``quiet``. A
        signal while waiting does not cut the wait short: nothing may still be writing
        when a failed restore clears its target (the signal is raised after)."""
        interrupted: BaseException | None = None
        if self._queues:
            for q in self._queues:
                q.put(None)
            self._queues = []
        while self._threads:
            try:
                self._threads[0][1].wait()  # an Event: an interrupted join would lie
                self._threads.pop(0)
            except BaseException as exc:
                interrupted = interrupted or exc
        if interrupted is not None:
            raise interrupted
        if not quiet:
            self.check()


def remove_tree(parent_fd: int, name: str) -> None:
    """Remove ``name`` under ``parent_fd`` and everything below it, by descriptors, without
    following symlinks and without recursion (any depth)."""
    stack = [(parent_fd, name, os.open(name, _DIR, dir_fd=parent_fd))]
    try:
        while stack:
            _pfd, _name, fd = stack[-1]
            sub = None
            for child in os.scandir(fd):
                if child.is_dir(follow_symlinks=False):
                    sub = child.name
                    break
                os.unlink(child.name, dir_fd=fd)
            if sub is not None:
                stack.append((fd, sub, os.open(sub, _DIR, dir_fd=fd)))
                continue
            stack.pop()
            os.close(fd)
            os.rmdir(_name, dir_fd=_pfd)
    finally:
        for _p, _n, fd in stack:
            with contextlib.suppress(OSError):
                os.close(fd)


def _unlink_quietly(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
