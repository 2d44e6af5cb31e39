"""``StorageBackend.save`` with parts in flight (issue 20, item 4): the logic alone, on an
``Upload`` that records what reaches it (the real backends' concurrent uploads are tested
on the emulators by tests/contract)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import pytest

from vowvault.domain import Tier
from vowvault.errors import StorageError
from vowvault.storage.base import ObjectInfo, Properties, StorageBackend, Upload, write_parts


class Recording(Upload):
    def __init__(self, delay: float = 0.01, fail_on: int | None = None) -> None:
        self.parts: dict[int, bytes] = {}
        self.calls = 0
        self.running = self.most = 0
        self.lock = threading.Lock()
        self.delay, self.fail_on = delay, fail_on
        self.closed = False
        self.late = False
        """A part arrived after the caller was told the upload was over."""
        self.aborted = self.committed = False

    def write_part(self, number: int, data: bytes) -> None:
        with self.lock:
            self.late |= self.closed
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            time.sleep(self.delay * random.random())
            if number == self.fail_on:
                raise StorageError(f"part {number} refused")
            with self.lock:
                self.parts[number] = data
        finally:
            with self.lock:
                self.running -= 1

    def commit(self) -> ObjectInfo:
        self.committed = True
        return ObjectInfo("x", sum(len(p) for p in self.parts.values()))

    def abort(self) -> None:
        self.aborted = True


class Backend(StorageBackend):
    url = "test://"

    def __init__(self, upload: Recording, at_once: int, part_size: int = 10) -> None:
        self.upload, self.at_once, self.part_size = upload, at_once, part_size

    def properties(self) -> Properties:
        return Properties(provider="test", archive_needs_restore=False,
                          part_size=self.part_size, parts_in_flight=self.at_once)

    def begin_upload(self, name: str, *, tier: Tier = Tier.HOT) -> Upload:
        return self.upload

    def load(self, *a, **k):  # pragma: no cover - not used
        raise NotImplementedError

    stat = list = delete = set_tier = load


def chunks_of(data: bytes, rng: random.Random) -> Iterator[bytes]:
    i = 0
    while i < len(data):
        n = rng.randrange(0, 25)
        yield data[i:i + n]
        i += n


@pytest.mark.parametrize("seed", range(20))
def test_every_part_arrives_once_whatever_the_order_and_never_more_than_allowed(
        seed: int) -> None:
    rng = random.Random(seed)
    data = rng.randbytes(rng.randrange(0, 400))
    at_once = rng.randrange(1, 6)
    up = Recording()
    info = Backend(up, at_once).save("x", chunks_of(data, rng))
    assert up.committed and not up.aborted
    assert b"".join(up.parts[i] for i in sorted(up.parts)) == data
    assert sorted(up.parts) == list(range(len(up.parts))) and up.calls == len(up.parts)
    assert info.size == len(data)
    assert up.most <= at_once


def test_parts_do_travel_at_once() -> None:
    up = Recording(delay=0.05)
    write_parts(up, (bytes([i]) * 10 for i in range(16)), 4)
    assert up.most > 1  # not one at a time


@pytest.mark.parametrize("fail_on", [0, 3, 9])
def test_a_failed_part_aborts_and_nothing_reaches_the_upload_after(fail_on: int) -> None:
    up = Recording(fail_on=fail_on)
    with pytest.raises(StorageError, match=f"part {fail_on} refused"):
        Backend(up, 4).save("x", (bytes([i]) * 10 for i in range(40)))
    up.closed = True
    time.sleep(0.05)
    assert up.aborted and not up.committed and not up.late
    assert up.calls < 40  # it stopped early, not after sending everything


def test_a_failing_source_aborts_after_the_parts_in_flight() -> None:
    up = Recording(delay=0.02)

    def source() -> Iterator[bytes]:
        for i in range(7):
            yield bytes([i]) * 10
        raise OSError("disk went away")

    with pytest.raises(OSError, match="disk went away"):
        Backend(up, 3).save("x", source())
    up.closed = True
    time.sleep(0.05)
    assert up.aborted and not up.committed and not up.late
