"""Cross-cutting concerns around any backend, composed in one place (``wrap``):

- retries (``RetryingBackend``), here and only here: backends translate SDK errors and turn
  SDK-level retries off, so a transient fault is retried once by this layer, never by two
  layers stacked (which multiplies attempts and waits). What is retried: every call that
  is idempotent by the ``StorageBackend`` contract (reads, stat, list, delete, tier
  changes, a part of an upload, an upload's commit). Streams are read as ranged loads so
  that a fault in the middle of a download costs one range, not the whole object;
- connection limits (``LimitedBackend``): at most ``properties().max_connections`` calls
  to the service at once from this process, however many threads ask (copies, stages,
  read-ahead); a call waiting to retry holds no slot;
- logging (``LoggingBackend``): every call to the service at DEBUG on
  ``vowvault.storage``, with its duration and outcome (never its data).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from vowvault.domain import Tier
from vowvault.errors import TransientStorageError
from vowvault.storage.base import ObjectInfo, Properties, StorageBackend, Upload

log = logging.getLogger("vowvault.storage")
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    """Tries in all, the first included."""
    base_delay: float = 0.5
    max_delay: float = 8.0
    read_chunk: int = 8 << 20
    """Range size used to stream a download."""


class Wrapper(StorageBackend):
    """A backend around another: every call goes through ``_call``, which a concern
    overrides."""

    def __init__(self, inner: StorageBackend) -> None:
        self.inner = inner
        self.url = inner.url

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        return fn(*args, **kw)

    def _abort(self, upload: Upload, name: str) -> None:
        self._call(f"abort of {name}", upload.abort)

    def properties(self) -> Properties:
        return self.inner.properties()

    def begin_upload(self, name: str, *, tier: Tier = Tier.HOT) -> Upload:
        return _WrappedUpload(self, self._call(f"begin upload of {name}",
                                               self.inner.begin_upload, name, tier=tier), name)

    def load(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._call(f"read of {name}", self.inner.load, name, offset, length)

    def open(self, name: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        return self.inner.open(name, chunk_size)

    def stat(self, name: str) -> ObjectInfo:
        return self._call(f"stat of {name}", self.inner.stat, name)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return iter(self._call(f"list of {prefix or '/'}",
                               lambda: list(self.inner.list(prefix))))

    def delete(self, names: Iterable[str]) -> None:
        names = list(names)
        self._call(f"delete of {len(names)} objects", self.inner.delete, names)

    def set_tier(self, name: str, tier: Tier) -> None:
        self._call(f"tier change of {name}", self.inner.set_tier, name, tier)

    def start_restore(self, name: str, days: int = 7) -> None:
        self._call(f"restore of {name}", self.inner.start_restore, name, days)

    def set_legal_hold(self, name: str, on: bool) -> None:
        self._call(f"legal hold of {name}", self.inner.set_legal_hold, name, on)

    def close(self) -> None:
        self.inner.close()


class _WrappedUpload(Upload):
    def __init__(self, owner: Wrapper, inner: Upload, name: str) -> None:
        self.owner, self.inner, self.name = owner, inner, name

    def write_part(self, number: int, data: bytes) -> None:
        self.owner._call(f"upload of {self.name} part {number}", self.inner.write_part,
                         number, data)

    def commit(self) -> ObjectInfo:
        return self.owner._call(f"commit of {self.name}", self.inner.commit)

    def abort(self) -> None:
        self.owner._abort(self.inner, self.name)


class RetryingBackend(Wrapper):
    def __init__(self, inner: StorageBackend, policy: RetryPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(inner)
        self.policy = policy or RetryPolicy()
        self.sleep = sleep

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        attempt = 1
        while True:
            try:
                return fn(*args, **kw)
            except TransientStorageError as exc:
                if attempt >= self.policy.attempts:
                    raise TransientStorageError(
                        f"{exc} (gave up after {attempt} attempts)") from exc
                delay = min(self.policy.max_delay,
                            self.policy.base_delay * 2 ** (attempt - 1))
                delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not secrecy
                log.warning("%s on %s failed (%s); retry %d of %d in %.1fs", what, self.url,
                            exc, attempt, self.policy.attempts - 1, delay)
                self.sleep(delay)
                attempt += 1

    def _abort(self, upload: Upload, name: str) -> None:
        try:
            self._call(f"abort of {name}", upload.abort)
        except Exception as exc:  # the caller is already failing: say so, keep its error
            log.warning("could not abort the upload of %s on %s: %s", name, self.url, exc)

    def open(self, name: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        size = self.stat(name).size
        step = max(chunk_size, self.policy.read_chunk)

        def ranges() -> Iterator[bytes]:
            offset = 0
            while offset < size:
                data = self.load(name, offset, min(step, size - offset))
                if not data:
                    return
                yield data
                offset += len(data)

        return ranges()


class LimitedBackend(Wrapper):
    """At most ``limit`` calls at once (default: the backend's ``max_connections``)."""

    def __init__(self, inner: StorageBackend, limit: int | None = None) -> None:
        super().__init__(inner)
        self.limit = max(1, limit or inner.properties().max_connections)
        self._slots = threading.BoundedSemaphore(self.limit)

    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        with self._slots:
            return fn(*args, **kw)


class LoggingBackend(Wrapper):
    def _call(self, what: str, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        if not log.isEnabledFor(logging.DEBUG):
            return fn(*args, **kw)
        t0 = time.perf_counter()
        try:
            result = fn(*args, **kw)
        except Exception as exc:
            log.debug("%s %s: %s after %.3fs", self.url, what, type(exc).__name__,
                      time.perf_counter() - t0)
            raise
        log.debug("%s %s: %.3fs", self.url, what, time.perf_counter() - t0)
        return result


def wrap(backend: StorageBackend, policy: RetryPolicy | None = None) -> StorageBackend:
    """The one place where cross-cutting concerns are added to a backend: retries outside
    (a wait between attempts holds no connection), the connection limit, then logging of
    each call that reaches the service."""
    return RetryingBackend(LimitedBackend(LoggingBackend(backend)), policy)
