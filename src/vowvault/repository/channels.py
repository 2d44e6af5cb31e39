"""Bounded channels between concurrently running threads, with one abort for all.

Every stage blocks on its channels for at most ``POLL`` seconds at a time and then checks
the abort flag, so when any stage fails the others stop promptly instead of waiting
forever for data that will never come (no deadlock, no hung process).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

POLL = 0.2
_END = object()


class Aborted(Exception):
    """Raised in a stage because another stage failed; the root cause is ``Abort.error``."""


class Abort:
    def __init__(self) -> None:
        self._event = threading.Event()
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            if self.error is None and not isinstance(exc, Aborted):
                self.error = exc
            self._event.set()

    @property
    def failed(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Aborted()


class Either(Abort):
    """Stops on either of two aborts (a copy's writer stops on its own failure or the
    backup's)."""

    def __init__(self, a: Abort, b: Abort) -> None:
        super().__init__()
        self.a, self.b = a, b

    def check(self) -> None:
        self.a.check()
        self.b.check()


@dataclass
class Item:
    """One frame travelling through the pipeline."""

    obj: str
    index: int
    data: bytes
    final: bool


class Channel:
    def __init__(self, abort: Abort, maxsize: int) -> None:
        self._abort = abort
        self._queue: queue.Queue[Any] = queue.Queue(maxsize)

    def put(self, item: Any) -> None:
        while True:
            try:
                self._queue.put(item, timeout=POLL)
                return
            except queue.Full:
                self._abort.check()

    def close(self) -> None:
        self.put(_END)

    def __iter__(self) -> Iterator[Any]:
        while True:
            try:
                item = self._queue.get(timeout=POLL)
            except queue.Empty:
                self._abort.check()
                continue
            if item is _END:
                return
            yield item


class StageClock:
    """Busy time of a stage: the time spent working, not waiting on its channels."""

    def __init__(self) -> None:
        self.busy = 0.0
        self._start: float | None = None

    def __enter__(self) -> StageClock:
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._start is not None
        self.busy += time.perf_counter() - self._start
        self._start = None


def run_threads(targets: dict[str, Any], abort: Abort) -> None:
    """Run callables in threads; any failure aborts the others; re-raise the root cause."""
    threads = []
    for name, fn in targets.items():
        def body(fn: Any = fn) -> None:
            try:
                fn()
            except BaseException as exc:
                abort.fail(exc)

        t = threading.Thread(target=body, name=f"vowvault-{name}", daemon=True)
        threads.append(t)
        t.start()
    try:
        for t in threads:
            t.join()
    except BaseException as exc:  # Ctrl-C: stop the stages, and wait until they have
        abort.fail(exc)
        for t in threads:
            t.join()
        raise
    if abort.error is not None:
        raise abort.error
    if abort.failed:
        raise Aborted()
