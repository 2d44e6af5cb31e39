"""File trees as stored: the index of entries, and the one reader that walks a tree and
resolves the files it references in other backups (docs/FORMAT.md, "data and index of a
file tree").

A file-tree backup stores ``index`` (one JSON line per entry, in walk order) and ``data``
(the bytes of the files it holds itself, concatenated in index order). A file unchanged
since an earlier backup names that backup (``backup``) and its ``offset`` in that backup's
data instead. ``TreeReader`` is what restore, verify, drills and erasure all use to read a
tree back; every file it hands out is checked against its recorded SHA-256.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

from vowvault.errors import IntegrityError
from vowvault.repository.layout import DATA, INDEX
from vowvault.repository.reader import BackupReader, RangeReader


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
        """One JSON line. Names are bytes on disk (``str`` here, as ``os`` gives them, with
        undecodable bytes as surrogates): a ``path`` or ``target`` that is not valid UTF-8
        is stored as ``path_b64`` / ``target_b64``, the base64 of its exact bytes."""
        data = {k: v for k, v in asdict(self).items() if v is not None}
        for key in ("path", "target"):
            value = data.get(key)
            if value is not None and not _utf8(value):
                data[f"{key}_b64"] = base64.b64encode(os.fsencode(value)).decode()
                del data[key]
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> Entry:
        try:
            data = json.loads(line)
            for key in ("path", "target"):
                raw = data.pop(f"{key}_b64", None)
                if raw is not None:
                    data[key] = os.fsdecode(base64.b64decode(raw, validate=True))
            return cls(**data)
        except (ValueError, TypeError, binascii.Error) as exc:
            raise IntegrityError(f"index holds an unreadable entry: {exc}") from None

    @property
    def shown(self) -> str:
        """The path for people: undecodable bytes as ``\\xNN``, control characters
        escaped, so that no name can break a line or a terminal."""
        return shown(self.path)


def _utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(name: str) -> str:
    """A file name fit for a message, a log line or a catalog row (see ``Entry.shown``)."""
    text = os.fsencode(name).decode("utf-8", "backslashreplace")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode()
                   for c in text)


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


Chunks = Iterator[bytes]


class TreeReader:
    """Walks one file-tree backup: its entries, and for files their content, from this
    backup's data or from the backup each refers to (``references``: backup id -> its
    reader, resolved by the caller)."""

    def __init__(self, reader: BackupReader,
                 references: dict[str, BackupReader] | None = None) -> None:
        self.reader = reader
        self.references = references or {}
        self._ranges: dict[str, RangeReader] = {}
        self.own_id = str(reader.backup_id)

    def entries(self, *, resolved: bool = False) -> Iterator[Entry]:
        """The index. ``resolved``: every file's ``backup`` names the backup holding its
        bytes (this one included), as an incremental backup built on this one needs."""
        for entry in parse_index(self.reader.stream(INDEX)):
            if resolved and entry.type == "file" and entry.backup is None:
                entry.backup = self.own_id
            yield entry

    def walk(self, *, withhold: Callable[[Entry], bool] | None = None,
             referenced: bool = True) -> Iterator[tuple[Entry, Chunks | None]]:
        """Every entry, with an iterator over a file's content (None for other entries,
        withheld files, and, unless ``referenced``, files held by other backups).

        A file's content must be read before the walk goes on; what is left unread is
        skipped. Each file is checked against its SHA-256 once fully read, this backup's
        data must hold exactly the files its index places in it, in order."""
        data = _Sequential(self.reader.stream(DATA))
        offset = 0
        for entry in self.entries():
            own = entry.type == "file" and entry.backup is None
            if own and entry.offset != offset:
                raise IntegrityError(f"index places {entry.path} at {entry.offset}, data has "
                                     f"it at {offset}")
            if own:
                offset += entry.size
            if withhold is not None and withhold(entry):
                if own:
                    data.skip(entry.size)
                yield entry, None
                continue
            if entry.type != "file":
                yield entry, None
                continue
            if own:
                chunks = _checked(entry, data.take(entry.size))
            elif referenced:
                chunks = _checked(entry, self._range(entry).read(int(entry.offset or 0),
                                                                  entry.size))
            else:
                yield entry, None
                continue
            yield entry, chunks
            for _ in chunks:  # what the caller left unread
                pass
        data.finish()

    def check_referenced(self) -> int:
        """Read and check every file this tree takes from other backups (its own data is
        not read); the bytes read."""
        read = 0
        for entry in self.entries():
            if entry.type == "file" and entry.backup is not None:
                for chunk in _checked(entry, self._range(entry).read(int(entry.offset or 0),
                                                                    entry.size)):
                    read += len(chunk)
        return read

    def _range(self, entry: Entry) -> RangeReader:
        assert entry.backup is not None
        found = self._ranges.get(entry.backup)
        if found is None:
            other = self.references.get(entry.backup)
            if other is None:
                raise IntegrityError(f"{entry.path} is held by backup {entry.backup}, which "
                                     f"is not among this backup's references")
            found = self._ranges[entry.backup] = other.ranges(DATA)
        return found


def _checked(entry: Entry, chunks: Chunks) -> Chunks:
    digest = hashlib.sha256()
    size = 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
        yield chunk
    if size != entry.size or digest.hexdigest() != entry.sha256:
        raise IntegrityError(f"content of {entry.path} does not match its recorded SHA-256")


class _Sequential:
    """Takes exact byte counts off a stream of chunks."""

    def __init__(self, chunks: Chunks) -> None:
        self._chunks = iter(chunks)
        self._buf = memoryview(b"")

    def take(self, n: int) -> Chunks:
        while n:
            if not self._buf:
                nxt = next(self._chunks, None)
                if nxt is None:
                    raise IntegrityError("data ends before the last file of the index")
                self._buf = memoryview(nxt)
            piece, self._buf = self._buf[:n], self._buf[n:]
            n -= len(piece)
            yield bytes(piece)

    def skip(self, n: int) -> None:
        for _ in self.take(n):
            pass

    def finish(self) -> None:
        rest = len(self._buf) + sum(len(c) for c in self._chunks)
        if rest:
            raise IntegrityError(f"data holds {rest} bytes no file of the index accounts for")
