"""The retry layer's logic, with a scripted backend (pure logic: the real faults, through a
fault-injecting proxy in front of real emulators, are in the storage tests)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vowvault.domain import Tier
from vowvault.errors import StorageFullError, TransientStorageError
from vowvault.storage.base import ObjectInfo, Properties, StorageBackend, Upload
from vowvault.storage.wrap import RetryingBackend, RetryPolicy


class Scripted(StorageBackend):
    """Fails the first ``fail`` calls of each operation with ``error``."""

    url = "mem://scripted"

    def __init__(self, fail: int, error: Exception) -> None:
        self.fail, self.error = fail, error
        self.calls: dict[str, int] = {}
        self.objects: dict[str, bytes] = {}

    def _tick(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1
        if self.calls[op] <= self.fail:
            raise self.error

    def properties(self) -> Properties:
        return Properties("local", False, part_size=4)

    def begin_upload(self, name: str, *, tier: Tier = Tier.HOT) -> Upload:
        backend = self

        class U(Upload):
            parts: dict[int, bytes] = {}

            def write_part(self, number: int, data: bytes) -> None:
                backend._tick(f"part{number}")
                self.parts[number] = data

            def commit(self) -> ObjectInfo:
                backend._tick("commit")
                data = b"".join(self.parts[i] for i in sorted(self.parts))
                backend.objects[name] = data
                return ObjectInfo(name, len(data))

            def abort(self) -> None:
                backend.calls["abort"] = backend.calls.get("abort", 0) + 1

        return U()

    def load(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        self._tick(f"load{offset}")
        data = self.objects[name]
        return data[offset:] if length is None else data[offset:offset + length]

    def stat(self, name: str) -> ObjectInfo:
        self._tick("stat")
        return ObjectInfo(name, len(self.objects[name]))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._tick("list")
        return iter([])

    def delete(self, names) -> None:  # type: ignore[no-untyped-def]
        self._tick("delete")

    def set_tier(self, name: str, tier: Tier) -> None:
        self._tick("tier")


def wrapped(inner: StorageBackend, attempts: int = 3) -> RetryingBackend:
    return RetryingBackend(inner, RetryPolicy(attempts=attempts, base_delay=0.01,
                                              read_chunk=5), sleep=lambda s: None)


def test_transient_faults_are_retried_per_part_and_per_range() -> None:
    inner = Scripted(fail=2, error=TransientStorageError("503 slow down"))
    store = wrapped(inner)
    store.save("o", [b"abcdefghij"])  # parts of 4: three parts, each failing twice first
    assert inner.objects["o"] == b"abcdefghij"
    assert inner.calls["part0"] == inner.calls["part2"] == inner.calls["commit"] == 3
    assert b"".join(store.open("o", chunk_size=1)) == b"abcdefghij"  # ranges of 5, retried
    assert inner.calls["load0"] == inner.calls["load5"] == 3


def test_giving_up_says_how_often_and_aborts_the_upload() -> None:
    inner = Scripted(fail=10, error=TransientStorageError("connection reset"))
    with pytest.raises(TransientStorageError, match="gave up after 3 attempts"):
        wrapped(inner).save("o", [b"abc"])
    assert inner.calls["part0"] == 3 and inner.calls["abort"] == 1


def test_permanent_errors_are_not_retried() -> None:
    inner = Scripted(fail=1, error=StorageFullError("bucket quota exceeded"))
    with pytest.raises(StorageFullError):
        wrapped(inner).save("o", [b"abc"])
    assert inner.calls["part0"] == 1
