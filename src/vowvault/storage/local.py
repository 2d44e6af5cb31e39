"""Local disk or NAS (``file:///path``).

Writes go to a temporary name in the same directory, are fsync'ed, then renamed, and the
directory is fsync'ed: a crash leaves either the old object, the new one, or a ``.tmp-``
file that ``delete`` and ``list`` know about, never a partial object under its name.
Tiers have no meaning on a local disk; they are recorded in a ``.vvmeta`` sidecar so that
the catalog and the target agree.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from vowvault.domain import Tier
from vowvault.errors import (
    ConfigError,
    ObjectNotFound,
    StorageError,
    StorageFullError,
    StoragePermissionError,
)
from vowvault.storage.base import ObjectInfo, Properties, StorageBackend, Upload, check_name
from vowvault.storage.url import parse_target_url

_META = ".vvmeta"
_TMP = ".tmp-"


@dataclass(frozen=True)
class LocalConfig:
    root: Path
    fsync: bool = True

    @classmethod
    def from_url(cls, url: str) -> LocalConfig:
        """``file:///absolute/path`` (``storage.url``)."""
        target = parse_target_url(url)
        if target.scheme != "file":
            raise ConfigError(f"not a local storage URL: {url!r} (use file:///absolute/path)")
        return cls(root=Path(target.path))


class LocalBackend(StorageBackend):
    def __init__(self, config: LocalConfig) -> None:
        self.config = config
        self.root = config.root
        self.url = f"file://{config.root}"

    def properties(self) -> Properties:
        return Properties(provider="local", archive_needs_restore=False,
                          max_connections=8, part_size=1 << 20)

    def _path(self, name: str) -> Path:
        return self.root / check_name(self.url, name)

    def begin_upload(self, name: str, *, tier: Tier = Tier.HOT) -> Upload:
        path = self._path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._error(exc, name) from exc
        return _LocalUpload(self, name, path, tier)

    def load(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            with open(self._path(name), "rb") as f:
                f.seek(offset)
                return f.read() if length is None else f.read(length)
        except OSError as exc:
            raise self._error(exc, name) from exc

    def open(self, name: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        try:
            f = open(self._path(name), "rb")  # noqa: SIM115 - closed by the generator
        except OSError as exc:
            raise self._error(exc, name) from exc
        return _read_chunks(f, chunk_size, self, name)

    def stat(self, name: str) -> ObjectInfo:
        path = self._path(name)
        try:
            st = path.stat()
        except OSError as exc:
            raise self._error(exc, name) from exc
        return ObjectInfo(name=name, size=st.st_size, tier=self._read_tier(path),
                          modified=dt.datetime.fromtimestamp(st.st_mtime, dt.UTC))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Walks only the directory the prefix ends in (never the whole root), iteratively
        (any depth), without following symlinks."""
        directory, _, _ = prefix.rpartition("/")
        base = self.root / directory if directory else self.root
        if directory and (directory.startswith("/") or ".." in directory.split("/")):
            raise StorageError(f"{self.url}: invalid prefix {prefix!r}")
        found: list[tuple[str, os.stat_result, Path]] = []
        pending = [(base, directory)]
        while pending:
            path, rel = pending.pop()
            try:
                entries = list(os.scandir(path))
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise self._error(exc, rel or ".") from exc
            for entry in entries:
                name = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir(follow_symlinks=False):
                    if name.startswith(prefix) or prefix.startswith(name + "/"):
                        pending.append((Path(entry.path), name))
                    continue
                if entry.name.endswith(_META) or not name.startswith(prefix) \
                        or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    found.append((name, entry.stat(follow_symlinks=False), Path(entry.path)))
                except FileNotFoundError:
                    continue
        found.sort(key=lambda item: item[0])
        return iter([ObjectInfo(name=rel, size=st.st_size, tier=self._read_tier(full),
                                modified=dt.datetime.fromtimestamp(st.st_mtime, dt.UTC))
                     for rel, st, full in found])

    def delete(self, names: Iterable[str]) -> None:
        for name in names:
            path = self._path(name)
            try:
                path.unlink(missing_ok=True)
                Path(str(path) + _META).unlink(missing_ok=True)
                if path.parent.exists():
                    for leftover in path.parent.glob(f"{_TMP}{path.name}.*"):
                        leftover.unlink(missing_ok=True)
            except OSError as exc:
                raise self._error(exc, name) from exc
            _prune_empty_dirs(path.parent, self.root)

    def set_tier(self, name: str, tier: Tier) -> None:
        path = self._path(name)
        if not path.exists():
            raise ObjectNotFound(f"{self.url}/{name}: no such object")
        try:
            self._write_tier(path, tier)
        except OSError as exc:
            raise self._error(exc, name) from exc

    def _write_tier(self, path: Path, tier: Tier) -> None:
        meta = Path(str(path) + _META)
        if tier == Tier.HOT:
            meta.unlink(missing_ok=True)
        else:
            meta.write_text(json.dumps({"tier": tier.value}))

    def _read_tier(self, path: Path) -> Tier:
        try:
            return Tier(json.loads(Path(str(path) + _META).read_text())["tier"])
        except (OSError, ValueError, KeyError):
            return Tier.HOT

    def _error(self, exc: OSError, name: str) -> StorageError:
        where = f"{self.url}/{name}"
        if exc.errno == errno.ENOENT:
            return ObjectNotFound(f"{where}: no such object")
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return StoragePermissionError(f"{where}: {exc.strerror}")
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return StorageFullError(f"{self.url} is full: {exc.strerror} while writing {name}")
        return StorageError(f"{where}: {exc.strerror or exc}")


class _LocalUpload(Upload):
    """A temporary file beside the target, fsync'ed and renamed into place on commit."""

    def __init__(self, backend: LocalBackend, name: str, path: Path, tier: Tier) -> None:
        self.backend, self.name, self.path, self.tier = backend, name, path, tier
        self.tmp = path.with_name(f"{_TMP}{path.name}.{uuid.uuid4().hex[:8]}")
        self.next_part = 0
        self.size = 0
        try:
            self.file = open(self.tmp, "wb")  # noqa: SIM115 - closed by commit/abort
        except OSError as exc:
            raise backend._error(exc, name) from exc

    def write_part(self, number: int, data: bytes) -> None:
        if number < self.next_part:
            return  # already written: a retry after success
        if number != self.next_part:
            raise StorageError(f"{self.name}: part {number} out of order")
        try:
            self.file.write(data)
        except OSError as exc:
            raise self.backend._error(exc, self.name) from exc
        self.size += len(data)
        self.next_part += 1

    def commit(self) -> ObjectInfo:
        try:
            self.file.flush()
            if self.backend.config.fsync:
                os.fsync(self.file.fileno())
            self.file.close()
            self.backend._write_tier(self.path, self.tier)
            os.replace(self.tmp, self.path)
            if self.backend.config.fsync:
                _fsync_dir(self.path.parent)
        except OSError as exc:
            self.abort()
            raise self.backend._error(exc, self.name) from exc
        return ObjectInfo(name=self.name, size=self.size, tier=self.tier, modified=_now())

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        _remove(self.tmp)


def _read_chunks(f, chunk_size: int, backend: LocalBackend, name: str) -> Iterator[bytes]:  # type: ignore[no-untyped-def]
    with f:
        while True:
            try:
                data = f.read(chunk_size)
            except OSError as exc:
                raise backend._error(exc, name) from exc
            if not data:
                return
            yield data


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def _prune_empty_dirs(path: Path, root: Path) -> None:
    while path != root and root in path.parents:
        try:
            path.rmdir()
        except OSError:
            return
        path = path.parent


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
