"""The tar reader of base backups (``sources.tarstream``): whatever the chunking, it gives
back exactly the members Python's tarfile wrote (ustar with prefix, GNU long names, pax
paths), and refuses a stream that is truncated, damaged or continued after its end."""

from __future__ import annotations

import io
import itertools
import tarfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vowvault.codec.frames import frame_plaintext
from vowvault.errors import IntegrityError
from vowvault.sources.tarstream import members

NAMES = st.text(st.characters(min_codepoint=0x61, max_codepoint=0x7A), min_size=1,
                max_size=12)


@st.composite
def archives(draw: st.DrawFn) -> tuple[bytes, list[tuple[str, str, bytes]]]:
    fmt = draw(st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]))
    entries: list[tuple[str, str, bytes]] = []
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for i in range(draw(st.integers(0, 8))):
            depth = draw(st.integers(0, 12 if fmt != tarfile.USTAR_FORMAT else 3))
            name = "/".join([draw(NAMES) for _ in range(depth)] + [f"f{i}"])
            kind = draw(st.sampled_from(["file", "file", "dir", "symlink"]))
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = 0o640, 1_700_000_000 + i
            data = b""
            if kind == "file":
                data = draw(st.binary(max_size=3000)) * draw(st.integers(1, 3))
                info.size = len(data)
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
            else:
                info.type, info.linkname = tarfile.SYMTYPE, "target"
            tar.addfile(info, io.BytesIO(data) if kind == "file" else None)
            entries.append((name, kind, data))
    return out.getvalue(), entries


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def read_all(chunks: list[bytes]) -> list[tuple[str, str, bytes]]:
    return [(m.name, m.type, b"".join(bytes(p) for p in body)) for m, body in members(chunks)]


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(archives(), st.lists(st.integers(0, 1 << 20), max_size=30))
def test_members_are_what_tarfile_wrote_whatever_the_chunking(
        archive: tuple[bytes, list[tuple[str, str, bytes]]], cuts: list[int]) -> None:
    data, entries = archive
    assert read_all(chunked(data, cuts)) == [(n.rstrip("/"), k, d) for n, k, d in entries]


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(archives(), st.integers(1, 1 << 20), st.lists(st.integers(0, 1 << 20), max_size=10))
def test_a_truncated_stream_is_refused(archive: tuple[bytes, list[tuple[str, str, bytes]]],
                                       cut: int, cuts: list[int]) -> None:
    data, _ = archive
    end = _end_of_members(data)
    if end == 0:
        return
    short = data[:cut % end]
    with pytest.raises(IntegrityError):
        read_all(chunked(short, cuts))


def _end_of_members(data: bytes) -> int:
    """Bytes up to the end-of-archive blocks (a cut inside them is not a truncation)."""
    at = len(data)
    while at >= 512 and data[at - 512:at] == b"\0" * 512:
        at -= 512
    return at


def test_a_damaged_header_or_data_after_the_end_is_refused() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("base/1/1259")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"pages"))
    data = out.getvalue()
    damaged = bytearray(data)
    damaged[3] ^= 0x01  # in the name: the header checksum no longer matches
    with pytest.raises(IntegrityError, match="checksum"):
        read_all([bytes(damaged)])
    with pytest.raises(IntegrityError, match="after its end"):
        read_all([data + b"x" * 512])
    hardlink = io.BytesIO()
    with tarfile.open(fileobj=hardlink, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("a")
        info.type, info.linkname = tarfile.LNKTYPE, "b"
        tar.addfile(info)
    with pytest.raises(IntegrityError, match="type"):
        read_all([hardlink.getvalue()])


@settings(max_examples=100)
@given(st.lists(st.binary(max_size=40), max_size=20), st.integers(1, 17))
def test_frames_are_the_stream_cut_evenly(chunks: list[bytes], size: int) -> None:
    """Frames of exactly ``size`` (the last shorter or empty), whatever the chunks, and the
    same bytes when a producer hands out one bytearray it then reuses."""
    frames = list(frame_plaintext(chunks, size))
    assert b"".join(f for f, _ in frames) == b"".join(chunks)
    assert [final for _, final in frames] == [False] * (len(frames) - 1) + [True]
    assert all(len(f) == size for f, _ in frames[:-1]) and len(frames[-1][0]) <= size
    reused = bytearray()

    def reusing() -> object:
        for chunk in chunks:
            reused[:] = chunk
            yield reused
            reused[:] = b"\xff" * len(chunk)  # overwritten once handed out

    assert [f for f, _ in frame_plaintext(reusing(), size)] == [f for f, _ in frames]  # type: ignore[arg-type]
