"""Per-table row counts and checksums of a ``pg_dump -Fc -Z0`` stream, taken as it passes by.

A backup pipes pg_dump's custom-format archive through vowvault; :class:`ArchiveTap` reads the
same bytes incrementally (a small state machine, no extra query against the source) and, for
every ``TABLE DATA`` entry, counts the COPY rows and hashes them with SHA-256. After a restore,
:func:`database_digests` computes the same digest from the restored database with ``COPY ...
TO STDOUT`` in a session set up like pg_dump's, so the restore can be checked table by table.

What the digest covers: the COPY text of the table, rows in dump order, each row one line ending
in ``\\n``. pg_dump (verified with 15, archive 1.14) writes ``\\.\\n\\n\\n`` at the end of every
table's data; that terminator is left out of both the row count and the digest.

The archive format (PostgreSQL's pg_backup_archiver.c and pg_backup_custom.c)::

    header  "PGDMP" vmaj vmin vrev intSize offSize format(1 = custom)
            compression: int level (< 1.15) | byte algorithm (>= 1.15)
            7 ints (creation time), str dbname, str server version, str pg_dump version
    toc     int count, then per entry: int dumpId, int hadDumper, str tableoid, str oid,
            str tag, str desc, int section, str defn, str dropStmt, str copyStmt,
            str namespace, str tablespace, str tableam (>= 1.14), int relkind (>= 1.16),
            str owner, str withOids, str dependency... NULL, offset (1 flag byte + offSize)
    data    blocks until the end of the stream: byte type, int dumpId, then
            BLK_DATA (1): chunks (int length, bytes) until length 0
            BLK_BLOBS (3): per large object int oid, chunks until 0; the list ends at oid 0
    int     1 sign byte + intSize bytes little-endian;  str: int length + bytes, -1 = NULL

Only 1.14 (pg_dump 12 to 15) is verified against a real pg_dump here. 1.12/1.13 (pg_dump 9.6
to 11) and 1.15/1.16 (pg_dump 16, 17) follow the layout above, checked against
ReadHead/ReadToc in PostgreSQL's source (1.15: one compression-algorithm byte instead of the
level int; 1.16: an int relkind after tableam) and exercised with synthetic archives only.
Any other version is reported as unsupported rather than guessed at.

Limits of the digest: the restored table must return its rows in dump order. A table created
and loaded by COPY in one transaction does (COPY then skips the free-space map and appends;
``pg_restore --single-transaction`` does exactly that, as vowvault's restore does): without it,
a 1 GiB benchmark with rows of varying widths came back in another order. Parallel restore
(``--jobs``) cannot be validated this way. An UPDATE, a DELETE followed by INSERTs, or CLUSTER
after the restore moves rows too; the restore
server must format values like the source (same major version is safest: float text changed
in PostgreSQL 12, money needs the same lc_monetary); data dumped with --inserts, and foreign
tables (COPY TO cannot read them), are not covered.

Nothing here raises on a bad archive: the backup must go on, only the validation data is lost,
so :attr:`ArchiveSummary.error` says why and the tap ignores the rest of the stream.
"""

from __future__ import annotations

import codecs
import os
import re
import shutil
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from vowvault.codec.frames import object_digest
from vowvault.errors import RestoreError

MIN_VERSION = (1, 12)
MAX_VERSION = (1, 16)

ARCH_CUSTOM = 1
BLK_DATA = 1
BLK_BLOBS = 3
K_OFFSET_NO_DATA = 3
COMPRESSION_ALGORITHMS = {0: "none", 1: "gzip", 2: "lz4", 3: "zstd"}

# A TOC string we keep (tag, desc, namespace, copyStmt) is an identifier or one statement;
# anything larger is skipped as it streams by, so memory stays bounded whatever the archive.
MAX_KEPT_STRING = 4 << 20
KEPT_DEFN = frozenset({b"ENCODING"})

# What pg_dump sets on its own connection (pg_dump.c setup_connection), verified with pg_dump 15:
# a database default of DateStyle, IntervalStyle or extra_float_digits does not reach the dump.
PG_DUMP_FIXED_SETTINGS = {
    "DateStyle": "ISO",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
    "search_path": "",
    "synchronize_seqscans": "off",
    "row_security": "off",
    "statement_timeout": "0",
}
# What pg_dump inherits from the server (database/role defaults, PGOPTIONS, PGTZ) and that
# changes COPY's text: recorded at backup time by session_settings(). Verified with pg_dump 15
# for TimeZone (timestamptz) and bytea_output (bytea); lc_monetary formats money.
INHERITED_SETTINGS = ("TimeZone", "bytea_output", "lc_monetary", "server_encoding",
                      "client_encoding")


TABLE_DIGEST = "blake3"
"""What new backups record of each table's COPY text (SHA-256 until 2026-12-03: still read).
BLAKE3 runs at 5.8 GB/s on one core here, SHA-256 at 1.6: the backup hashes every
table once and a validated restore once more."""


@dataclass
class TableDigest:
    schema: str
    name: str
    columns: str          # column list of pg_dump's COPY statement, verbatim ('' = no columns)
    rows: int
    sha256: str | None = None
    blake3: str | None = None

    @property
    def algorithm(self) -> str:
        return "blake3" if self.blake3 is not None else "sha256"

    @property
    def hexdigest(self) -> str | None:
        return self.blake3 if self.blake3 is not None else self.sha256


@dataclass
class ArchiveSummary:
    version: tuple[int, int, int] | None = None
    dbname: str | None = None
    server_version: str | None = None
    pg_dump_version: str | None = None
    encoding: str | None = None     # the dump's client encoding, from the ENCODING TOC entry
    tables: list[TableDigest] = field(default_factory=list)
    blobs: int = 0
    blob_bytes: int = 0
    archive_bytes: int = 0
    settings: dict[str, str] = field(default_factory=dict)  # session_settings() of the source
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["version"] = list(self.version) if self.version else None
        # a table carries the one digest it was hashed with (an older reader knows sha256)
        data["tables"] = [{k: v for k, v in t.items() if v is not None}
                          for t in data["tables"]]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ArchiveSummary:
        data = dict(data)
        version = data.pop("version", None)
        tables = [TableDigest(**t) for t in data.pop("tables", [])]
        known = set(cls.__dataclass_fields__)
        return cls(version=tuple(version) if version else None, tables=tables,
                   **{k: v for k, v in data.items() if k in known})

    def digests(self) -> dict[tuple[str, str], tuple[int, str | None]]:
        """(rows, hex digest) per table, each by its own algorithm (``TableDigest``)."""
        return {(t.schema, t.name): (t.rows, t.hexdigest) for t in self.tables}


class _FormatError(Exception):
    """The archive is not what this parser understands; becomes ArchiveSummary.error."""


_Need = Generator[None, None, Any]


_END_OF_COPY = re.compile(rb"\n\\\.")  # a precompiled search is twice as fast as find()


VECTOR_MIN = 64 << 10
"""Below this many bytes in the buffer, chunks are walked one by one in Python (and a small
dump never pays for importing numpy)."""


def _end_of_copy(data: bytes) -> int:
    """Where ``\\n\\.`` first occurs in ``data`` (-1: nowhere); a buffer at a time in
    numpy when it is large (the backslashes, then their neighbours), 6 times faster."""
    if len(data) < VECTOR_MIN:
        found = _END_OF_COPY.search(data)
        return found.start() if found else -1
    import numpy as np

    text = np.frombuffer(data, dtype=np.uint8)
    slashes = np.flatnonzero(text[1:-1] == 0x5C)
    slashes += 1
    hits = slashes[(text[slashes - 1] == 0x0A) & (text[slashes + 1] == 0x2E)]
    return int(hits[0]) - 1 if len(hits) else -1


def _newlines(data: bytes) -> int:
    if len(data) < VECTOR_MIN:
        return data.count(b"\n")
    import numpy as np

    return int(np.count_nonzero(np.frombuffer(data, dtype=np.uint8) == 0x0A))


class _TableSink:
    """Counts and hashes one table's COPY text, leaving out the ``\\.`` terminator line."""

    __slots__ = ("ended", "hash", "line_start", "pending", "rows")

    def __init__(self) -> None:
        self.hash = object_digest(TABLE_DIGEST)
        self.rows = 0
        self.line_start = True
        self.pending = b""
        self.ended = False

    def __call__(self, data: bytes) -> None:
        if self.ended:
            self._trailer(data)
            return
        if self.pending:
            data, self.pending = self.pending + data, b""
        # COPY text escapes every backslash in a value, so only the end-of-data marker puts
        # "\." at the start of a line.
        if self.line_start and data[:1] == b"\\":
            if len(data) == 1:
                self.pending = data
                return
            if data[1:2] == b".":
                self._end(data[2:])
                return
        end = _end_of_copy(data)
        if end >= 0:
            body, rest = data[:end + 1], data[end + 3:]
        elif data.endswith(b"\n\\"):
            body, rest, self.pending = data[:-1], None, b"\\"
        else:
            body, rest = data, None
        if body:
            self.hash.update(body)
            self.rows += _newlines(body)
            self.line_start = body.endswith(b"\n")
        if rest is not None:
            self._end(rest)

    def _end(self, rest: bytes) -> None:
        self.ended = True
        self._trailer(rest)

    @staticmethod
    def _trailer(data: bytes) -> None:
        if data.strip(b"\n"):
            raise _FormatError("table data continues after the end-of-copy marker")

    def close(self) -> tuple[int, str]:
        if self.pending or not self.line_start:
            raise _FormatError("table data ends in the middle of a row")
        return self.rows, self.hash.hexdigest()


class ArchiveTap:
    """Feed it a pg_dump custom-format stream in any chunk sizes; :meth:`finish` summarizes.

    Never raises on the archive's content: an archive it cannot read (compressed, unknown
    version, truncated, not pg_dump at all) sets ``error`` and the remaining bytes are ignored.
    Memory stays bounded by the largest chunk fed plus the few TOC strings that are kept.
    """

    def __init__(self) -> None:
        self.summary = ArchiveSummary()
        self._buf = b""
        self._pos = 0
        self._int_size = 4
        self._off_size = 8
        self._boundary = False       # waiting for the next data block: the stream may end here
        self._where = "header"
        self._entries: dict[int, tuple[bytes, bytes | None, bytes | None, bytes | None]] = {}
        self._expected: set[int] = set()
        self._codec = "utf-8"
        self._stopped = False
        self._finished = False
        self._parser: Generator[None, None, None] | None = self._parse()
        next(self._parser)

    # -- feeding -----------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        if self._finished:
            raise RuntimeError("ArchiveTap.feed() after finish()")
        self.summary.archive_bytes += len(data)
        if self._stopped or not data:
            return
        # The parser consumes everything before it asks for more, so nothing is left over.
        self._buf, self._pos = bytes(data), 0
        try:
            next(self._parser)  # type: ignore[arg-type]
        except StopIteration:
            self._fail("archive parser stopped unexpectedly")
        except _FormatError as exc:
            self._fail(str(exc))
        except Exception as exc:  # the backup must not fail because of its validation data
            self._fail(f"archive parser failed in {self._where}: {type(exc).__name__}: {exc}")

    def finish(self) -> ArchiveSummary:
        if self._finished:
            return self.summary
        self._finished = True
        if not self._stopped:
            if self.summary.archive_bytes == 0:
                self._fail("empty archive")
            elif not self._boundary:
                self._fail(f"archive truncated in {self._where}")
            elif self._expected:
                self._fail(f"archive ended before the data of {len(self._expected)} TOC "
                           f"entries (truncated?)")
            else:
                self._stop()
        return self.summary

    def _fail(self, message: str) -> None:
        if self.summary.error is None:
            self.summary.error = " ".join(message.split())
        self._stop()

    def _stop(self) -> None:
        self._stopped = True
        self._buf, self._pos = b"", 0
        self._entries.clear()
        if self._parser is not None:
            self._parser.close()
            self._parser = None

    # -- primitive reads (generators: they yield when they need another feed) -----------------

    def _read(self, n: int) -> _Need:
        buf, pos = self._buf, self._pos
        if len(buf) - pos >= n:
            self._pos = pos + n
            return buf[pos:pos + n]
        out = bytearray()
        while True:
            take = min(n - len(out), len(self._buf) - self._pos)
            out += self._buf[self._pos:self._pos + take]
            self._pos += take
            if len(out) == n:
                return bytes(out)
            yield

    def _skip(self, n: int) -> _Need:
        while n:
            take = min(n, len(self._buf) - self._pos)
            self._pos += take
            n -= take
            if n:
                yield

    def _stream(self, n: int, sink: Callable[[bytes], None]) -> _Need:
        while n:
            take = min(n, len(self._buf) - self._pos)
            if take:
                sink(self._buf[self._pos:self._pos + take])
                self._pos += take
                n -= take
            if n:
                yield

    def _read_byte(self) -> _Need:
        return (yield from self._read(1))[0]

    def _read_int(self) -> _Need:
        raw = yield from self._read(1 + self._int_size)
        value = int.from_bytes(raw[1:], "little")
        return -value if raw[0] else value

    def _read_str(self, keep: bool = True) -> _Need:
        length = yield from self._read_int()
        if length < 0:
            return None
        if not keep:
            yield from self._skip(length)
            return b""
        if length > MAX_KEPT_STRING:
            raise _FormatError(f"TOC string of {length} bytes in {self._where}")
        return (yield from self._read(length))

    def _text(self, raw: bytes | None) -> str | None:
        return None if raw is None else raw.decode(self._codec, "replace")

    # -- the archive ----------------------------------------------------------------------------

    def _parse(self) -> Generator[None, None, None]:
        yield  # primed by __init__
        yield from self._header()
        yield from self._toc()
        yield from self._data()

    def _header(self) -> _Need:
        s = self.summary
        if (yield from self._read(5)) != b"PGDMP":
            raise _FormatError("not a pg_dump custom-format archive (no PGDMP magic)")
        vmaj, vmin, vrev = yield from self._read(3)
        s.version = (vmaj, vmin, vrev)
        if not MIN_VERSION <= (vmaj, vmin) <= MAX_VERSION:
            raise _FormatError(f"unsupported archive version {vmaj}.{vmin}.{vrev}")
        self._int_size, self._off_size, fmt = yield from self._read(3)
        if not 1 <= self._int_size <= 16 or not 1 <= self._off_size <= 16:
            raise _FormatError(f"implausible int/offset sizes {self._int_size}/{self._off_size}")
        if fmt != ARCH_CUSTOM:
            raise _FormatError(f"archive format {fmt} is not custom (-Fc)")
        if (vmaj, vmin) >= (1, 15):
            algorithm = yield from self._read_byte()
            if algorithm != 0:
                name = COMPRESSION_ALGORITHMS.get(algorithm, str(algorithm))
                raise _FormatError(f"archive is compressed ({name}); digests need -Z0")
        else:
            level = yield from self._read_int()
            if level != 0:
                raise _FormatError(f"archive is compressed (level {level}); digests need -Z0")
        for _ in range(7):  # creation time, local time of the pg_dump host
            yield from self._read_int()
        s.dbname = self._text((yield from self._read_str()))
        s.server_version = self._text((yield from self._read_str()))
        s.pg_dump_version = self._text((yield from self._read_str()))

    def _toc(self) -> _Need:
        version = self.summary.version[:2]  # type: ignore[index]
        count = yield from self._read_int()
        if count < 0:
            raise _FormatError(f"negative TOC entry count {count}")
        for index in range(count):
            self._where = f"TOC entry {index + 1} of {count}"
            dump_id = yield from self._read_int()
            had_dumper = yield from self._read_int()
            yield from self._read_str(keep=False)  # tableoid
            yield from self._read_str(keep=False)  # oid
            tag = yield from self._read_str()
            desc = (yield from self._read_str()) or b""
            yield from self._read_int()  # section
            defn = yield from self._read_str(keep=desc in KEPT_DEFN)
            yield from self._read_str(keep=False)  # dropStmt
            copy_stmt = yield from self._read_str()
            namespace = yield from self._read_str()
            yield from self._read_str(keep=False)  # tablespace
            if version >= (1, 14):
                yield from self._read_str(keep=False)  # tableam
            if version >= (1, 16):
                yield from self._read_int()  # relkind
            yield from self._read_str(keep=False)  # owner
            yield from self._read_str(keep=False)  # withOids, always "false"
            while (yield from self._read_str(keep=False)) is not None:  # dependencies
                pass
            flag = yield from self._read_byte()
            yield from self._skip(self._off_size)
            if desc == b"ENCODING" and defn:
                self._set_encoding(defn)
            if had_dumper:
                self._entries[dump_id] = (desc, tag, namespace, copy_stmt)
                if flag != K_OFFSET_NO_DATA:
                    self._expected.add(dump_id)

    def _set_encoding(self, defn: bytes) -> None:
        # "SET client_encoding = 'UTF8';"
        parts = defn.decode("ascii", "replace").split("'")
        if len(parts) >= 3:
            self.summary.encoding = parts[1]
            self._codec = python_codec(parts[1])

    def _data(self) -> _Need:
        s = self.summary
        while True:
            self._where = "data (between blocks)"
            self._boundary = True
            block = yield from self._read_byte()
            self._boundary = False
            dump_id = yield from self._read_int()
            entry = self._entries.get(dump_id)
            if entry is None:
                raise _FormatError(f"data block for unknown or repeated dumpId {dump_id}")
            self._expected.discard(dump_id)
            desc, tag, namespace, copy_stmt = entry
            del self._entries[dump_id]
            name = self._text(tag) or ""
            if block == BLK_DATA:
                self._where = f"data of {self._text(namespace)}.{name}"
                if desc != b"TABLE DATA":
                    yield from self._chunks(lambda _: None)
                    continue
                columns = self._columns(copy_stmt)
                sink = _TableSink()
                yield from self._chunks(sink)
                rows, digest = sink.close()
                s.tables.append(TableDigest(self._text(namespace) or "", name, columns, rows,
                                            **{TABLE_DIGEST: digest}))
            elif block == BLK_BLOBS:
                self._where = "large objects"
                while (yield from self._read_int()) != 0:  # oid; > 2^31 arrives negative
                    s.blobs += 1
                    yield from self._chunks(self._count_blob)
            else:
                raise _FormatError(f"unknown data block type {block} for dumpId {dump_id}")

    def _count_blob(self, data: bytes) -> None:
        self.summary.blob_bytes += len(data)

    def _columns(self, copy_stmt: bytes | None) -> str:
        text = self._text(copy_stmt) or ""
        try:
            return copy_column_list(text)
        except ValueError as exc:
            raise _FormatError(f"table data is not COPY text ({exc}); was it dumped with "
                               f"--inserts?") from None

    def _chunks(self, sink: Callable[[bytes], None]) -> _Need:
        """Chunks (int length + bytes) until a length of 0, streamed into ``sink``."""
        isz = self._int_size
        head = 1 + isz
        while True:
            # Fast path: every chunk already in the buffer, joined into one call of the sink.
            buf, pos, end = self._buf, self._pos, len(self._buf)
            parts = []
            if isz == 4 and end - pos >= VECTOR_MIN:
                pos, rows = framed_rows(buf, pos, end)
                if rows:
                    parts.append(rows)
            while pos + head <= end:
                length = int.from_bytes(buf[pos + 1:pos + head], "little")
                if buf[pos] or length == 0 or pos + head + length > end:
                    break
                parts.append(buf[pos + head:pos + head + length])
                pos += head + length
            self._pos = pos
            if parts:
                sink(parts[0] if len(parts) == 1 else b"".join(parts))
            # Slow path: a chunk split across feeds, or the end of the list.
            length = yield from self._read_int()
            if length == 0:
                return
            if length < 0:
                raise _FormatError(f"negative data chunk length {length} in {self._where}")
            yield from self._stream(length, sink)


def framed_rows(buf: bytes, pos: int, end: int) -> tuple[int, bytes]:
    """The chunks from ``pos`` that each end in a newline, found all at once: where the
    next chunk starts, and their data joined (``pos`` and b"" when none is found).

    pg_dump writes one chunk per COPY row (verified with 15: ``dumpTableData_copy`` hands
    each row to ``WriteData``), so a chunk's header (a zero sign byte and a 4-byte length)
    follows a newline, and COPY text holds no NUL byte: the candidates are the NUL bytes
    after a newline (less those inside another candidate's length bytes, 2 to 4 bytes on).
    The result does not rest on that guess: it is the run of candidates each of whose
    length points exactly at the next one, from ``pos``, which is a walk of the chunks
    proven link by link; whatever does not fit (a chunk of several rows or of part of one,
    a zero length, the end of the buffer) is left to the walk in Python. About 7 times
    faster than that walk on rows of a few hundred bytes."""
    import numpy as np

    n = end - pos
    if buf[pos]:
        return pos, b""
    arr = np.frombuffer(buf, dtype=np.uint8, count=n, offset=pos)
    nul = np.flatnonzero(arr[1:] == 0)
    nul += 1
    starts = np.concatenate((np.zeros(1, dtype=np.int64), nul[arr[nul - 1] == 10]))
    if len(starts) > 2:
        inside = np.zeros(len(starts), dtype=bool)
        inside[1:] = (starts[1:] - starts[:-1]) <= 4
        inside[2:] |= (starts[2:] - starts[:-2]) <= 4
        if inside.any():
            starts = starts[~inside]
    starts = starts[starts + 5 <= n]
    if len(starts) < 2:
        return pos, b""
    h = arr[starts[:, None] + np.arange(1, 5)].astype(np.int64)
    lengths = h[:, 0] | (h[:, 1] << 8) | (h[:, 2] << 16) | (h[:, 3] << 24)
    linked = (starts[1:] == starts[:-1] + 5 + lengths[:-1]) & (lengths[:-1] > 0)
    if not linked.all():
        first_broken = int(np.argmin(linked))
        if first_broken == 0:
            return pos, b""
        starts = starts[:first_broken + 1]
    begin = (starts[:-1] + (pos + 5)).tolist()
    stop = (starts[1:] + pos).tolist()
    return stop[-1], b"".join([buf[a:b] for a, b in zip(begin, stop, strict=True)])


# -- COPY statements ---------------------------------------------------------------------------

def _quoted_end(text: str, start: int) -> int:
    """Index just past the quoted identifier opening at ``start`` ("" escapes a quote)."""
    i = start + 1
    while True:
        i = text.index('"', i)
        if text.startswith('"', i + 1):
            i += 2
            continue
        return i + 1


def copy_column_list(stmt: str) -> str:
    """The column list of pg_dump's ``COPY schema.table (cols) FROM stdin;``, verbatim."""
    if not stmt.startswith("COPY "):
        raise ValueError(f"not a COPY statement: {stmt[:60]!r}")
    try:
        i = 5
        while True:  # qualified table name: identifiers joined by dots
            if stmt[i] == '"':
                i = _quoted_end(stmt, i)
            else:
                while stmt[i] not in ' ."(':
                    i += 1
            if stmt[i] != ".":
                break
            i += 1
        if stmt[i] != " ":
            raise ValueError(f"unexpected text in {stmt[:120]!r}")
        i += 1
        columns = ""
        if stmt[i] == "(":
            j = i + 1
            while stmt[j] != ")":
                j = _quoted_end(stmt, j) if stmt[j] == '"' else j + 1
            columns, i = stmt[i + 1:j], j + 1
    except IndexError:
        raise ValueError(f"unterminated COPY statement {stmt[:120]!r}") from None
    if stmt[i:].strip() != "FROM stdin;":
        raise ValueError(f"unexpected COPY statement ending {stmt[i:i + 60]!r}")
    split_column_list(columns)  # validates
    return columns


def split_column_list(columns: str) -> list[str]:
    '''``id, "Weird ""Col"""`` -> ``['id', 'Weird "Col"']`` (pg_dump's fmtId quoting undone).'''
    names: list[str] = []
    i, n = 0, len(columns)
    while i < n:
        if columns[i] == '"':
            j = _quoted_end(columns, i)
            names.append(columns[i + 1:j - 1].replace('""', '"'))
        else:
            j = columns.find(",", i)
            j = n if j < 0 else j
            name = columns[i:j]
            if not name or any(c in name for c in ' "()'):
                raise ValueError(f"bad column list {columns[:120]!r}")
            names.append(name)
        i = j
        if i < n:
            if not columns.startswith(", ", i):
                raise ValueError(f"bad column list {columns[:120]!r}")
            i += 2
    return names


# -- encodings ---------------------------------------------------------------------------------

_PG_CODECS = {
    "UTF8": "utf-8", "SQL_ASCII": "latin-1", "LATIN1": "latin-1", "LATIN2": "iso8859-2",
    "LATIN3": "iso8859-3", "LATIN4": "iso8859-4", "LATIN5": "iso8859-9", "LATIN6": "iso8859-10",
    "LATIN7": "iso8859-13", "LATIN8": "iso8859-14", "LATIN9": "iso8859-15",
    "LATIN10": "iso8859-16", "ISO_8859_5": "iso8859-5", "ISO_8859_6": "iso8859-6",
    "ISO_8859_7": "iso8859-7", "ISO_8859_8": "iso8859-8", "KOI8R": "koi8-r", "KOI8U": "koi8-u",
    "EUC_JP": "euc_jp", "EUC_JIS_2004": "euc_jis_2004", "EUC_KR": "euc_kr", "EUC_CN": "gb2312",
    "SJIS": "shift_jis", "SHIFT_JIS_2004": "shift_jis_2004", "BIG5": "big5", "GBK": "gbk",
    "GB18030": "gb18030", "UHC": "cp949", "JOHAB": "johab",
}


def python_codec(pg_encoding: str) -> str:
    """Python's codec for a PostgreSQL encoding name (WIN1252 -> cp1252); utf-8 if unknown."""
    name = pg_encoding.upper().replace("-", "_")
    if name.startswith("WIN") and name[3:].isdigit():
        name = f"cp{name[3:]}"
    else:
        name = _PG_CODECS.get(name, "utf-8")
    try:
        return codecs.lookup(name).name
    except LookupError:
        return "utf-8"


# -- the database side -------------------------------------------------------------------------

def session_settings(conn: Any) -> dict[str, str]:
    """What COPY's text depends on and pg_dump inherits from the server rather than sets.

    Call it on a connection to the SOURCE opened like pg_dump's (same DSN, role and
    environment): it reads the values a fresh session gets (database and role defaults,
    PGOPTIONS/PGTZ), not the session's own SETs. Store the result in the summary's
    ``settings``; :func:`database_digests` applies it on the restored side.
    """
    rows = conn.execute(
        "SELECT name, reset_val FROM pg_catalog.pg_settings WHERE name = ANY(%s)",
        (list(INHERITED_SETTINGS),)).fetchall()
    found = dict(rows)
    return {name: found[name] for name in INHERITED_SETTINGS if name in found}


def _apply_settings(conn: Any, settings: dict[str, str], encoding: str | None) -> None:
    if "TimeZone" not in settings:
        raise RestoreError("no TimeZone recorded from the source; the digests cannot be "
                           "recomputed (record session_settings() at backup time)")
    values = dict(PG_DUMP_FIXED_SETTINGS)
    values["TimeZone"] = settings["TimeZone"]
    for name in ("bytea_output",):
        if name in settings:
            values[name] = settings[name]
    values["client_encoding"] = (encoding or settings.get("client_encoding")
                                 or settings.get("server_encoding") or "UTF8")
    for name, value in values.items():
        conn.execute("SELECT pg_catalog.set_config(%s, %s, false)", (name, value))
    if settings.get("lc_monetary"):
        # Only money's text needs it; a locale missing on the restore host must not stop the
        # check of every other table (a money column then shows up as a mismatch).
        try:
            with conn.transaction():
                conn.execute("SELECT pg_catalog.set_config('lc_monetary', %s, false)",
                             (settings["lc_monetary"],))
        except Exception:  # noqa: S110 - see above
            pass


def _copy_query(schema: str, table: str, columns: str) -> Any:
    """``COPY schema.table (columns) TO STDOUT``, every name quoted by psycopg."""
    from psycopg import sql

    if not columns:
        return sql.SQL("COPY {} TO STDOUT").format(sql.Identifier(schema, table))
    names = sql.SQL(", ").join(sql.Identifier(c) for c in split_column_list(columns))
    return sql.SQL("COPY {} ({}) TO STDOUT").format(sql.Identifier(schema, table), names)


def _copy_digest(conn: Any, schema: str, table: str, columns: str,
                 algorithm: str = TABLE_DIGEST) -> tuple[int, str]:
    query = _copy_query(schema, table, columns)
    digest, rows = object_digest(algorithm), 0
    with conn.cursor() as cur, cur.copy(query) as copy:
        for data in copy:
            block = bytes(data)
            digest.update(block)
            rows += block.count(b"\n")
    return rows, digest.hexdigest()


def _connect(dsn: str, settings: dict[str, str], encoding: str | None) -> Any:
    import psycopg

    conn = psycopg.connect(dsn, autocommit=True)
    try:
        _apply_settings(conn, settings, encoding)
    except BaseException:
        conn.close()
        raise
    return conn


def table_digest(dsn: str, schema: str, table: str, columns: str,
                 settings: dict[str, str], algorithm: str = TABLE_DIGEST) -> tuple[int, str]:
    """(rows, digest) of ``COPY schema.table (columns) TO STDOUT`` as pg_dump would write it."""
    import psycopg

    try:
        with _connect(dsn, settings, settings.get("client_encoding")) as conn:
            return _copy_digest(conn, schema, table, columns, algorithm)
    except psycopg.Error as exc:
        raise RestoreError(f"cannot digest {schema}.{table}: {exc}") from exc


PSQL_FROM = 8 << 20
"""Tables at least this large (on disk) are read by psql processes beside the main
connection; smaller ones on the main connection, where a process start would cost more
than the rows."""
PSQL_READ = 1 << 20


def database_digests(dsn: str, summary: ArchiveSummary, settings: dict[str, str] | None = None,
                     tables: Iterable[TableDigest] | None = None, *, workers: int = 2,
                     ) -> dict[tuple[str, str], tuple[int, str]]:
    """The digest of every table of ``summary`` in the (restored) database, all from one
    snapshot: the main connection holds it (REPEATABLE READ, read only) and exports it, and
    up to ``workers`` ``psql`` processes import it to read the large tables, largest first,
    while the main connection reads the small ones. psql hands COPY's text over as it comes
    (no Python per row), and the server's COPY, which bounds the reading, runs on as many
    cores as there are readers. Without psql on PATH, or with ``workers=0``, all is read on
    the main connection.

    ``settings`` defaults to ``summary.settings``. Compare the result to ``summary.digests()``.
    """
    import psycopg

    settings = summary.settings if settings is None else settings
    wanted = list(summary.tables if tables is None else tables)
    result: dict[tuple[str, str], tuple[int, str]] = {}
    psql = shutil.which("psql") if workers > 0 else None
    try:
        with _connect(dsn, settings, summary.encoding) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # one snapshot
            conn.read_only = True
            with conn.transaction():
                large: list[TableDigest] = []
                if psql is not None and wanted:
                    sizes = _sizes(conn, wanted)
                    large = sorted((t for t in wanted if sizes.get((t.schema, t.name), 0)
                                    >= PSQL_FROM),
                                   key=lambda t: -sizes[(t.schema, t.name)])
                apart = {(t.schema, t.name) for t in large}
                with ThreadPoolExecutor(max(1, workers),
                                        thread_name_prefix="vowvault-digest") as pool:
                    futures = {}
                    if large:
                        snapshot = conn.execute(
                            "SELECT pg_catalog.pg_export_snapshot()").fetchone()[0]
                        script = _session_script(conn, snapshot)
                        futures = {(t.schema, t.name): pool.submit(_psql_digest, psql, dsn,
                                                                   script, t) for t in large}
                    try:
                        for t in wanted:
                            if (t.schema, t.name) not in apart:
                                result[(t.schema, t.name)] = _digest_or_raise(conn, t)
                        for key, future in futures.items():
                            result[key] = future.result()
                    finally:
                        for future in futures.values():
                            future.cancel()
    except psycopg.Error as exc:
        raise RestoreError(f"cannot digest the restored database: {exc}") from exc
    return result


def _digest_or_raise(conn: Any, t: TableDigest) -> tuple[int, str]:
    import psycopg

    try:
        return _copy_digest(conn, t.schema, t.name, t.columns, t.algorithm)
    except psycopg.Error as exc:
        raise RestoreError(f"cannot digest {t.schema}.{t.name}: {exc}") from exc


def _sizes(conn: Any, tables: list[TableDigest]) -> dict[tuple[str, str], int]:
    """Each table's size on disk (0 when it is not there: its digest then says so)."""
    rows = conn.execute(
        "SELECT s, n, coalesce(pg_catalog.pg_relation_size(pg_catalog.to_regclass("
        "pg_catalog.quote_ident(s) || '.' || pg_catalog.quote_ident(n))), 0) "
        "FROM unnest(%s::text[], %s::text[]) AS t(s, n)",
        ([t.schema for t in tables], [t.name for t in tables])).fetchall()
    return {(schema, name): int(size) for schema, name, size in rows}


def _session_script(conn: Any, snapshot: str) -> str:
    """What a psql reader runs before its COPY: the main connection's snapshot and the
    settings the digests depend on, read back from the main session (so they are the ones
    that session could set), every value quoted by psycopg."""
    from psycopg import sql

    names = [*PG_DUMP_FIXED_SETTINGS, "TimeZone", "bytea_output", "client_encoding",
             "lc_monetary"]
    values = dict(conn.execute(
        "SELECT name, setting FROM pg_catalog.pg_settings WHERE name = ANY(%s)",
        (names,)).fetchall())
    lines = ["BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;",
             sql.SQL("SET TRANSACTION SNAPSHOT {};").format(sql.Literal(snapshot)
                                                            ).as_string(conn)]
    for name in names:
        if name in values:
            lines.append(sql.SQL("SELECT pg_catalog.set_config({}, {}, false) \\g /dev/null"
                                 ).format(sql.Literal(name), sql.Literal(values[name])
                                          ).as_string(conn))
    return "\n".join(lines) + "\n"


def _psql_digest(psql: str, dsn: str, script: str, t: TableDigest) -> tuple[int, str]:
    """(rows, digest by the table's algorithm) of its COPY text as a psql process streams
    it."""
    import subprocess
    import tempfile

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    query = _copy_query(t.schema, t.name, t.columns)
    info = conninfo_to_dict(dsn)
    env = dict(os.environ)
    password = info.pop("password", None)
    if password is not None:  # never on a command line, where ps shows it
        env["PGPASSWORD"] = str(password)
    command = script + query.as_string(None) + ";\nCOMMIT;\n"
    digest, rows = object_digest(t.algorithm), 0
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", make_conninfo(**info), "-f", "-"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env)
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(command.encode())
            proc.stdin.close()
            while block := proc.stdout.read1(PSQL_READ):
                digest.update(block)
                rows += block.count(b"\n")
        except BaseException:
            proc.kill()
            raise
        finally:
            proc.stdout.close()
            rc = proc.wait()
        if rc != 0:
            err.seek(0)
            lines = [ln.strip() for ln in err.read().decode("utf-8", "replace").splitlines()
                     if ln.strip()]
            message = lines[0].removeprefix("psql:").strip() if lines else f"exit {rc}"
            raise RestoreError(f"cannot digest {t.schema}.{t.name}: {message}")
    return rows, digest.hexdigest()
