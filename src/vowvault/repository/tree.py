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
import json
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

from vowvault.codec.frames import object_digest
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
    """The content's SHA-256 (files first stored before 2026-12-03)."""
    target: str | None = None
    backup: str | None = None
    """Backup id whose data holds the content (None: this backup)."""
    offset: int | None = None
    ctime_ns: int = 0
    inode: int = 0
    blake3: str | None = None
    """The content's BLAKE3 (files stored since 2026-12-03; a file carries one of the two,
    the one computed when its bytes were stored)."""

    def key(self) -> tuple[str, ...]:
        return tuple(self.path.split("/")) if self.path else ()

    def to_line(self) -> bytes:
        """One JSON line. Names are bytes on disk (``str`` here, as ``os`` gives them, with
        undecodable bytes as surrogates): a ``path`` or ``target`` that is not valid UTF-8
        is stored as ``path_b64`` / ``target_b64``, the base64 of its exact bytes."""
        # The fields in declaration order, as dataclasses.asdict gives them (the same bytes:
        # chunks of an index are compared and referenced by their bytes), without its deep
        # copy of every value (all of them str, int or None): a third of a no-change run
        data = {k: v for k in _ENTRY_FIELDS if (v := getattr(self, k)) is not None}
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
    def digest(self) -> tuple[str, str] | None:
        """(algorithm, hex digest) recorded for the content, if any."""
        if self.blake3 is not None:
            return "blake3", self.blake3
        if self.sha256 is not None:
            return "sha256", self.sha256
        return None

    def take_digest(self, other: Entry) -> None:
        """Carry ``other``'s recorded digest (the same content, stored once)."""
        self.sha256, self.blake3 = other.sha256, other.blake3

    def record_digest(self, algorithm: str, hexdigest: str) -> None:
        self.sha256 = hexdigest if algorithm == "sha256" else None
        self.blake3 = hexdigest if algorithm == "blake3" else None

    @property
    def shown(self) -> str:
        """The path for people: undecodable bytes as ``\\xNN``, control characters
        escaped, so that no name can break a line or a terminal."""
        return shown(self.path)


_ENTRY_FIELDS = tuple(f.name for f in fields(Entry))


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
    """Entries from an index stream (JSON lines) that holds no references."""
    for _offset, line in index_lines(chunks):
        if is_ref(line):
            raise IntegrityError("index refers to another backup's index where it may not")
        yield Entry.from_line(line)


def index_lines(chunks: Iterator[bytes]) -> Iterator[tuple[int, bytes]]:
    """(offset in the stream, line with its newline) of every non-empty line."""
    rest = b""
    pos = 0
    for chunk in chunks:
        rest += chunk
        *lines, rest = rest.split(b"\n")
        for line in lines:
            if line:
                yield pos, line + b"\n"
            pos += len(line) + 1
    if rest.strip():
        yield pos, rest  # its bytes as stored: a reference's length counts these


# -- index chunks ---------------------------------------------------------------------------
#
# An index is cut into chunks at lines chosen by their content (``Chunker``), so that an
# unchanged stretch of a tree gives the same chunks in every backup. A chunk the parent
# backup's index already holds is not written again: a ``ref`` line names the backup whose
# index holds its bytes, where, and their BLAKE3 (docs/FORMAT.md, "Index references").

CHUNK_AVERAGE = 64
"""Lines per chunk on average (a power of two)."""
CHUNK_MIN = 16
CHUNK_MAX = 1024
RUN_MAX = 4 << 20
"""References to consecutive bytes merge while they cover at most this much (a reader holds
one reference's bytes at a time)."""
REF_MAX = 16 << 20
"""The largest range a reader takes for one reference (a chunk of ``CHUNK_MAX`` lines of the
longest names fits); anything larger is refused, so memory stays bounded."""


class Chunker:
    """Where an index is cut: after a line whose CRC-32 has its low bits set, once at least
    ``CHUNK_MIN`` lines are in the chunk, and after ``CHUNK_MAX`` lines at most. The same
    lines in the same order are always cut the same way, by the writer and by readers."""

    def __init__(self) -> None:
        self.lines = 0
        self._mask = CHUNK_AVERAGE - 1

    def cut_after(self, line: bytes) -> bool:
        self.lines += 1
        if self.lines >= CHUNK_MAX or (
                self.lines >= CHUNK_MIN and zlib.crc32(line) & self._mask == self._mask):
            self.lines = 0
            return True
        return False


@dataclass(frozen=True)
class Held:
    """Where a chunk's bytes are: the index of ``backup``, ``[offset, offset + length)``."""

    backup: str
    offset: int
    length: int


def is_ref(line: bytes) -> bool:
    return line.startswith(b'{"ref":')


def ref_line(held: Held, digest: str) -> bytes:
    return json.dumps({"ref": {"backup": held.backup, "offset": held.offset,
                               "length": held.length, "blake3": digest}},
                      separators=(",", ":")).encode() + b"\n"


def _parse_ref(line: bytes) -> tuple[Held, str]:
    try:
        ref = json.loads(line)["ref"]
        held = Held(str(ref["backup"]), int(ref["offset"]), int(ref["length"]))
        digest = str(ref["blake3"])
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"index holds an unreadable reference: {exc}") from None
    if held.offset < 0 or not 0 < held.length <= REF_MAX:
        raise IntegrityError("index holds a reference to an empty, negative or oversized "
                             "range")
    return held, digest


def _blake3() -> Any:
    import blake3

    return blake3.blake3()


class IndexWriter:
    """Writes an index to ``out``: entry lines, cut into chunks as readers cut them; a chunk
    whose BLAKE3 ``table`` (the parent's ``chunk_table``) holds becomes a reference, and
    references to consecutive bytes of one backup's index merge into one; every other
    chunk is written as it is. ``holders``: the backups referenced."""

    def __init__(self, out: Any, table: dict[str, Held] | None = None) -> None:
        self.out = out
        self.table = table or {}
        self.holders: set[str] = set()
        self.references = self.literal_bytes = self.referenced_bytes = 0
        self._chunker = Chunker()
        self._lines: list[bytes] = []
        self._run: Held | None = None
        self._run_hash: Any = None

    def add(self, line: bytes) -> None:
        self._lines.append(line)
        if self._chunker.cut_after(line):
            self._chunk()

    def _chunk(self) -> None:
        if not self._lines:
            return
        data = b"".join(self._lines)
        self._lines = []
        held = None
        if self.table:
            h = _blake3()
            h.update(data)
            held = self.table.get(h.hexdigest())
            if held is not None and held.length != len(data):
                held = None
        if held is None:
            self._end_run()
            self.out.write(data)
            self.literal_bytes += len(data)
            return
        run = self._run
        if run is not None and run.backup == held.backup and \
                run.offset + run.length == held.offset and \
                run.length + held.length <= RUN_MAX:
            self._run = Held(run.backup, run.offset, run.length + held.length)
        else:
            self._end_run()
            self._run, self._run_hash = held, _blake3()
        self._run_hash.update(data)
        self.referenced_bytes += len(data)

    def _end_run(self) -> None:
        if self._run is not None:
            self.out.write(ref_line(self._run, self._run_hash.hexdigest()))
            self.holders.add(self._run.backup)
            self.references += 1
            self._run = None

    def close(self) -> None:
        self._chunk()
        self._end_run()


Chunks = Iterator[bytes]


class TreeReader:
    """Walks one file-tree backup: its entries, and for files their content, from this
    backup's data or from the backup each refers to (``references``: backup id -> its
    reader, resolved by the caller)."""

    def __init__(self, reader: BackupReader,
                 references: dict[str, BackupReader] | None = None, *,
                 expand: bool = True) -> None:
        """``expand``: read the chunks the index takes from other backups' indexes (from
        ``references``); without it they are passed over (the entries of this backup's own
        files are never among them: a check of its own data needs nothing else)."""
        self.reader = reader
        self.references = references or {}
        self.expand = expand
        self._ranges: dict[str, RangeReader] = {}
        self._index_ranges: dict[str, RangeReader] = {}
        self.own_id = str(reader.backup_id)

    def lines(self) -> Iterator[tuple[bytes, Held]]:
        """Every entry line of the index, references expanded, with where its bytes are."""
        for offset, line in index_lines(self.reader.stream(INDEX)):
            if not is_ref(line):
                yield line, Held(self.own_id, offset, len(line))
                continue
            if not self.expand:
                continue
            held, digest = _parse_ref(line)
            yield from self._chunk(held, digest)

    def _chunk(self, held: Held, digest: str) -> Iterator[tuple[bytes, Held]]:
        other = self.references.get(held.backup)
        if other is None:
            raise IntegrityError(f"index takes entries from backup {held.backup}'s index, "
                                 f"which is not among this backup's references")
        ranges = self._index_ranges.get(held.backup)
        if ranges is None:
            ranges = self._index_ranges[held.backup] = other.ranges(INDEX)
        data = b"".join(ranges.read(held.offset, held.length))
        h = _blake3()
        h.update(data)
        if len(data) != held.length or h.hexdigest() != digest:
            raise IntegrityError(f"entries taken from backup {held.backup}'s index do not "
                                 f"match their recorded BLAKE3")
        for rel, line in index_lines(iter([data])):
            if is_ref(line):
                raise IntegrityError(f"entries taken from backup {held.backup}'s index hold "
                                     f"a reference themselves")
            yield line, Held(held.backup, held.offset + rel, len(line))

    def entries(self, *, resolved: bool = False) -> Iterator[Entry]:
        """The index. ``resolved``: every file's ``backup`` names the backup holding its
        bytes (this one included), as an incremental backup built on this one needs. An
        entry taken from another backup's index that names no backup is that backup's."""
        for line, held in self.lines():
            entry = Entry.from_line(line)
            if entry.type == "file" and entry.backup is None and (
                    resolved or held.backup != self.own_id):
                entry.backup = held.backup
            yield entry

    def chunk_table(self) -> dict[str, Held]:
        """BLAKE3 -> where its bytes are, of every chunk of this index (cut as the writer
        cut it) whose bytes lie in one place: what a backup built on this one need not
        write again."""
        table: dict[str, Held] = {}
        chunker = Chunker()
        h, first, end, whole = _blake3(), None, 0, True
        for line, held in self.lines():
            if first is None:
                first, end = held, held.offset
            if held.backup != first.backup or held.offset != end:
                whole = False  # the chunk is not in one place: not reusable
            end = held.offset + held.length
            h.update(line)
            if chunker.cut_after(line):
                if whole:
                    table.setdefault(h.hexdigest(), Held(first.backup, first.offset,
                                                         end - first.offset))
                h, first, whole = _blake3(), None, True
        if first is not None and whole:
            table.setdefault(h.hexdigest(), Held(first.backup, first.offset, end - first.offset))
        return table

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
            own = entry.type == "file" and entry.backup in (None, self.own_id)
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
            if entry.type == "file" and entry.backup not in (None, self.own_id):
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


CONTENT_DIGEST = "blake3"
"""What new backups record of each file's content (3.5x SHA-256's speed on one core here:
5.8 against 1.6 GB/s)."""
_NAMES = {"blake3": "BLAKE3", "sha256": "SHA-256"}


def content_hasher(algorithm: str = CONTENT_DIGEST) -> Any:
    return object_digest(algorithm)


def digest_name(algorithm: str) -> str:
    return _NAMES.get(algorithm, algorithm)


def _checked(entry: Entry, chunks: Chunks) -> Chunks:
    recorded = entry.digest
    if recorded is None:
        raise IntegrityError(f"{entry.path} has no recorded checksum")
    algorithm, expected = recorded
    digest = content_hasher(algorithm)
    size = 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
        yield chunk
    if size != entry.size or digest.hexdigest() != expected:
        raise IntegrityError(f"content of {entry.path} does not match its recorded "
                             f"{digest_name(algorithm)}")


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
