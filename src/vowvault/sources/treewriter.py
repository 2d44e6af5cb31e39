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
from collections.abc import Iterable
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
        self._behind = _WriteBehind()
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
        """Place one entry (a file's bytes from ``chunks``); bytes written."""
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
            self._hardlink(entry, name)
            return 0
        if entry.type != "file":
            raise IntegrityError(f"index holds {entry.path!r} of unknown type {entry.type!r}")
        return self._file(parent_fd, name, entry, chunks or ())

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

    def _file(self, parent_fd: int, name: str, entry: Entry, chunks: Iterable[bytes]) -> int:
        tmp = self._temp(name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=parent_fd)
        written = 0
        try:
            with os.fdopen(fd, "wb", closefd=True) as f:
                if entry.size >= WRITE_BEHIND_FROM:
                    written = self._behind.write(f, chunks)
                else:
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
        """Symlinks, then directories' metadata (children first), then (replacing) what the
        backup does not hold goes, then the marker."""
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
            self._file(self.root_fd, INCOMPLETE, entry, data)
        self.close()

    def fail(self, error: BaseException, *, clear: bool) -> None:
        """Leave the marker saying why; with ``clear`` (the target was empty) remove
        everything else, so that nothing looks like a finished restore."""
        try:
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
        self._behind.stop()
        self._close_dirs()
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1


WRITE_BEHIND_FROM = 4 << 20
"""Files at least this large are written by a thread of their own while the next chunks
are read and decoded; smaller ones directly (a thread hand-off per file would cost more
than it saves on a tree of small files)."""


class _WriteBehind:
    """One thread that writes a file's chunks while the caller produces the next ones: a
    restore's decoding and its copying into the page cache overlap. At most ``depth``
    chunks wait (views of immutable bytes: nothing is copied); every queued write is done
    before ``write`` returns, and the first write error is raised there."""

    def __init__(self, depth: int = 8) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(depth)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            f, data = item
            if isinstance(data, threading.Event):
                data.set()
            elif self._error is None:
                try:
                    f.write(data)
                except BaseException as exc:  # raised in the caller's thread
                    self._error = exc

    def write(self, f: Any, chunks: Iterable[bytes]) -> int:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name="vowvault-write")
            self._thread.start()
        written = 0
        try:
            for chunk in chunks:
                if self._error is not None:
                    break
                self._queue.put((f, chunk))
                written += len(chunk)
        finally:
            done = threading.Event()
            self._queue.put((f, done))
            done.wait()  # nothing is written to ``f`` after this
            error, self._error = self._error, None
        if error is not None:
            raise error
        return written

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None


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
