"""The frame format: anything round-trips; any tampering is detected, never decrypted."""

from __future__ import annotations

import struct
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vowvault.codec import frames as codec
from vowvault.errors import IntegrityError

BACKUP = uuid.UUID(int=42)
DEK = bytes(range(32))


def seal(data: bytes, frame_size: int, kind: str = "data", backup: uuid.UUID = BACKUP,
         dek: bytes = DEK) -> bytes:
    sealer = codec.Sealer(dek, backup, kind, frame_size)
    out = [sealer.header]
    chunks = [data[i:i + 7] for i in range(0, len(data), 7)] or [b""]
    for i, (frame, final) in enumerate(codec.frame_plaintext(chunks, frame_size)):
        out.append(sealer.seal(i, codec.compress(frame), final))
    return b"".join(out)


def unseal(blob: bytes, kind: str = "data", backup: uuid.UUID = BACKUP,
           dek: bytes = DEK, chunk: int = 1000) -> bytes:
    chunks = [blob[i:i + chunk] for i in range(0, len(blob), chunk)]
    return b"".join(codec.Opener(dek, backup, kind).frames(chunks))


def records(blob: bytes) -> list[tuple[int, int]]:
    """(offset, length) of each record, including its 4-byte length prefix."""
    out, pos = [], codec.HEADER.size
    while pos < len(blob):
        (n,) = struct.unpack_from(">I", blob, pos)
        out.append((pos, 4 + n))
        pos += 4 + n
    return out


payloads = st.one_of(st.binary(max_size=3000),
                     st.text(max_size=2000).map(str.encode),
                     st.integers(0, 5000).map(lambda n: b"wedding " * n))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=payloads, frame_size=st.integers(1, 700), chunk=st.integers(1, 2000))
def test_any_plaintext_round_trips(data: bytes, frame_size: int, chunk: int) -> None:
    assert unseal(seal(data, frame_size), chunk=chunk) == data


@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=1, max_size=2000), frame_size=st.integers(16, 500),
       position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_any_flipped_bit_is_detected(data: bytes, frame_size: int, position: int,
                                     bit: int) -> None:
    blob = bytearray(seal(data, frame_size))
    blob[position % len(blob)] ^= 1 << bit
    with pytest.raises(IntegrityError):
        unseal(bytes(blob))


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=1, max_size=2000), frame_size=st.integers(16, 500),
       cut=st.integers(min_value=1))
def test_any_truncation_is_detected(data: bytes, frame_size: int, cut: int) -> None:
    blob = seal(data, frame_size)
    with pytest.raises(IntegrityError):
        unseal(blob[:len(blob) - 1 - cut % len(blob)])


@settings(max_examples=100, deadline=None)
@given(data=st.binary(min_size=100, max_size=2000), frame_size=st.integers(10, 40),
       pick=st.integers(min_value=0))
def test_swapped_or_dropped_frames_are_detected(data: bytes, frame_size: int,
                                                pick: int) -> None:
    blob = seal(data, frame_size)
    recs = records(blob)
    assert len(recs) >= 3
    i = pick % (len(recs) - 1)
    (a, la), (b, lb) = recs[i], recs[i + 1]
    swapped = blob[:a] + blob[b:b + lb] + blob[a:a + la] + blob[b + lb:]
    with pytest.raises(IntegrityError):
        unseal(swapped)
    dropped = blob[:a] + blob[a + la:]
    with pytest.raises(IntegrityError):
        unseal(dropped)


def test_the_last_frame_cut_off_at_a_frame_boundary_is_detected() -> None:
    blob = seal(b"x" * 100, 10)
    last_offset, _ = records(blob)[-1]
    with pytest.raises(IntegrityError, match="frame 8 fails authentication"):
        unseal(blob[:last_offset])


def test_data_appended_after_the_final_frame_is_detected() -> None:
    blob = seal(b"guest list", 4)
    extra = codec.Sealer(DEK, BACKUP, "data", 4).seal(3, codec.compress(b"more"), True)
    with pytest.raises(IntegrityError, match="after the final frame"):
        unseal(blob + extra)


def test_splicing_between_backups_kinds_and_keys_is_detected() -> None:
    blob = seal(b"seating plan" * 50, 64)
    with pytest.raises(IntegrityError, match="belongs to backup"):
        unseal(blob, backup=uuid.UUID(int=43))
    with pytest.raises(IntegrityError, match="another kind"):
        unseal(blob, kind="index")
    with pytest.raises(IntegrityError, match="fails authentication"):
        unseal(blob, dek=bytes(32))
    # Same header, frames of another backup sealed with the same key: still refused.
    other = seal(b"seating plan" * 50, 64, backup=uuid.UUID(int=43))
    spliced = blob[:codec.HEADER.size] + other[codec.HEADER.size:]
    with pytest.raises(IntegrityError):
        unseal(spliced)


def test_garbage_and_empty_objects() -> None:
    with pytest.raises(IntegrityError, match="truncated"):
        unseal(b"")
    with pytest.raises(IntegrityError, match="bad magic"):
        unseal(b"NOPE" + bytes(100))
    with pytest.raises(IntegrityError, match="no frames"):
        unseal(codec.header(BACKUP, "data", 16))
    assert unseal(seal(b"", 16)) == b""


def test_incompressible_frames_are_stored_raw() -> None:
    import os

    photo = os.urandom(50_000)
    body = codec.compress(photo)
    assert body[0] == codec.RAW and len(body) == len(photo) + 1
    text = codec.compress(b"the first dance " * 1000)
    assert text[0] == codec.ZSTD and len(text) < 200


def test_framing_holds_exact_frame_sizes() -> None:
    frames = list(codec.frame_plaintext([b"abc", b"defgh", b"", b"ij"], 4))
    assert frames == [(b"abcd", False), (b"efgh", False), (b"ij", True)]
    assert list(codec.frame_plaintext([b"abcd"], 4)) == [(b"abcd", True)]
    assert list(codec.frame_plaintext([], 4)) == [(b"", True)]


def test_the_round_trip_catches_a_frame_that_does_not_decompress_to_its_plaintext() -> None:
    """A compressor (or the memory under it) that returns a valid zstd frame of other bytes:
    without the round trip it would be sealed; with it, nothing is."""
    import zstandard

    from vowvault.codec import frames

    plaintext = b"guest list: table 7, Ada and Grace " * 2000
    assert codec.compress(plaintext, round_trip=True)[0] == frames.ZSTD

    class Faulty:
        def compress(self, data: bytes) -> bytes:
            flipped = bytearray(data)
            flipped[len(flipped) // 2] ^= 0x01
            return zstandard.ZstdCompressor(level=3).compress(bytes(flipped))

    frames._local.compressor, frames._local.level = Faulty(), frames.ZSTD_LEVEL
    try:
        assert codec.compress(plaintext)[0] == frames.ZSTD  # sealed as is, unnoticed
        with pytest.raises(IntegrityError, match="does not decompress to the plaintext"):
            codec.compress(plaintext, round_trip=True)
        sealer = codec.ObjectSealer(b"k" * 32, uuid.uuid4(), "data", 1 << 16, round_trip=True)
        with pytest.raises(IntegrityError):
            list(sealer.records([plaintext]))
    finally:
        del frames._local.compressor
