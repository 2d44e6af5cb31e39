"""Reading a tar stream as it goes by: members and their bytes, without a file or a seek.

pg_basebackup writes the cluster as one tar to stdout; vowvault stores that stream as it
comes and reads it back the same way (verify, restore). Only what PostgreSQL's tar writer
produces is accepted: ustar headers (with the prefix field), GNU long names and pax path
records; regular files, directories and symlinks. Anything else (devices, hard links,
sparse files, a header whose checksum does not match) is refused, never guessed at.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from vowvault.errors import IntegrityError

BLOCK = 512


@dataclass(frozen=True)
class Member:
    name: str
    type: str  # file, dir, symlink
    size: int
    mode: int
    mtime: int
    linkname: str = ""


class _Bytes:
    """Exact reads over an iterator of chunks. A member's bytes come out as views of the
    chunks that hold them (no copy); headers, as small copies."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._chunk = memoryview(b"")
        self._at = 0
        self.offset = 0

    def _more(self) -> bool:
        while self._at >= len(self._chunk):
            chunk = next(self._it, None)
            if chunk is None:
                return False
            # Views of immutable bytes only: a producer may reuse a bytearray it handed out.
            self._chunk = memoryview(chunk if type(chunk) is bytes else bytes(chunk))
            self._at = 0
        return True

    def read(self, n: int) -> bytes:
        parts = []
        left = n
        while left:
            if not self._more():
                raise IntegrityError(f"tar stream ends in the middle of a record (at byte "
                                     f"{self.offset + n - left})")
            take = min(left, len(self._chunk) - self._at)
            parts.append(self._chunk[self._at:self._at + take])
            self._at += take
            left -= take
        self.offset += n
        return b"".join(parts)

    def pieces(self, n: int, size: int = 1 << 20) -> Iterator[memoryview]:
        left = n
        while left:
            if not self._more():
                raise IntegrityError("tar stream ends in the middle of a file")
            take = min(left, len(self._chunk) - self._at, size)
            out = self._chunk[self._at:self._at + take]
            self._at += take
            self.offset += take
            left -= take
            yield out

    def rest_is_empty(self) -> bool:
        if self._chunk[self._at:].tobytes().strip(b"\0"):
            return False
        return all(not bytes(chunk).strip(b"\0") for chunk in self._it)


def _number(field: bytes) -> int:
    if field[:1] and field[0] & 0x80:  # base-256 (GNU) for large values
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    return int(text or b"0", 8)


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def members(chunks: Iterable[bytes]) -> Iterator[tuple[Member, Iterator[memoryview]]]:
    """(member, its bytes: views into the stream's chunks) in stream order; read a
    member's bytes before asking for the next one (they are not kept)."""
    stream = _Bytes(chunks)
    long_name: str | None = None
    while True:
        header = stream.read(BLOCK)
        if header == b"\0" * BLOCK:
            if not stream.rest_is_empty():
                raise IntegrityError("tar stream has data after its end")
            return
        expected = _number(header[148:156])
        actual = sum(header[:148]) + 8 * 32 + sum(header[156:])
        if expected != actual:
            raise IntegrityError(f"tar header checksum mismatch at byte {stream.offset - BLOCK}")
        typeflag = chr(header[156]) if header[156] else "0"
        size = _number(header[124:136])
        padded = (size + BLOCK - 1) // BLOCK * BLOCK
        if typeflag in ("L", "x"):  # a long name for the next member
            raw = stream.read(padded)[:size]
            if typeflag == "L":
                long_name = raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            else:
                long_name = _pax_path(raw) or long_name
            continue
        name = _text(header[0:100])
        if header[257:262] == b"ustar" and header[345:500].strip(b"\0"):
            name = _text(header[345:500]) + "/" + name
        if long_name is not None:
            name, long_name = long_name, None
        kind = {"0": "file", "7": "file", "5": "dir", "2": "symlink"}.get(typeflag)
        if kind is None:
            raise IntegrityError(f"tar member {name!r} is of a type vowvault does not restore "
                                 f"({typeflag!r})")
        member = Member(_clean(name), kind, size if kind == "file" else 0,
                        _number(header[100:108]) & 0o7777, _number(header[136:148]),
                        _text(header[157:257]))
        body = stream.pieces(size) if kind == "file" else iter(())
        yield member, body
        for _ in body:  # what the caller did not read
            pass
        if padded > size:
            stream.read(padded - size)


def _pax_path(raw: bytes) -> str | None:
    found = None
    pos = 0
    while pos < len(raw):
        space = raw.index(b" ", pos)
        length = int(raw[pos:space])
        record = raw[space + 1:pos + length - 1]
        key, _, value = record.partition(b"=")
        if key == b"path":
            found = value.decode("utf-8", "surrogateescape")
        pos += length
    return found


def _clean(name: str) -> str:
    """A member's path relative to the archive's top: no leading ``./`` or ``/``, no empty,
    ``.`` or ``..`` component."""
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    if name in ("", "."):
        return ""  # the top itself
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise IntegrityError(f"tar member {name!r} climbs out of the archive")
    return name
