"""The wrappers ``storage.wrap`` composes: the connection limit holds however many threads
call, and a wait between retries holds no connection."""

from __future__ import annotations

import threading
import time

from vowvault.domain import Tier
from vowvault.errors import TransientStorageError
from vowvault.storage.base import ObjectInfo, Properties, StorageBackend, Upload
from vowvault.storage.wrap import LimitedBackend, RetryingBackend, RetryPolicy, wrap


class Counting(StorageBackend):
    """Counts calls in flight; the first ``fail`` loads fail transiently."""

    url = "mem://counting"

    def __init__(self, limit: int, fail: int = 0) -> None:
        self.limit, self.fail = limit, fail
        self.now = self.peak = self.calls = 0
        self.lock = threading.Lock()

    def properties(self) -> Properties:
        return Properties("local", False, max_connections=self.limit)

    def load(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        with self.lock:
            self.calls += 1
            self.now += 1
            self.peak = max(self.peak, self.now)
            failing = self.calls <= self.fail
        time.sleep(0.01)
        with self.lock:
            self.now -= 1
        if failing:
            raise TransientStorageError("busy")
        return b"x"

    def begin_upload(self, name: str, *, tier: Tier = Tier.HOT) -> Upload:
        raise NotImplementedError

    def stat(self, name: str) -> ObjectInfo:
        return ObjectInfo(name, 1)

    def list(self, prefix: str = "") -> list[ObjectInfo]:  # type: ignore[override]
        return []

    def delete(self, names: object) -> None:
        return None

    def set_tier(self, name: str, tier: Tier) -> None:
        return None


def hammer(store: StorageBackend, threads: int = 12, each: int = 5) -> None:
    def work() -> None:
        for _ in range(each):
            store.load("x")

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()


def test_the_backends_max_connections_is_never_exceeded() -> None:
    inner = Counting(limit=3)
    hammer(wrap(inner))
    assert inner.calls == 60 and inner.peak == 3


def test_a_retry_waits_without_holding_a_connection() -> None:
    inner = Counting(limit=1, fail=1)
    slept: list[float] = []
    limited = LimitedBackend(inner)

    def sleep(seconds: float) -> None:
        # While this caller waits to retry, another caller gets the one connection.
        other = threading.Thread(target=limited.load, args=("y",))
        other.start()
        other.join(timeout=5)
        assert not other.is_alive()
        slept.append(seconds)

    store = RetryingBackend(limited, RetryPolicy(attempts=3, base_delay=0.01), sleep=sleep)
    assert store.load("x") == b"x"
    assert len(slept) == 1 and inner.calls == 3
