"""What every task needs: a context built once per process from the settings, and a
throttled progress reporter that logs to the run and updates a progress artifact."""

from __future__ import annotations

import threading
import time
from typing import Any

from vowvault.engine.context import Context

_ctx: Context | None = None
_lock = threading.Lock()


def context() -> Context:
    global _ctx
    with _lock:
        if _ctx is None:
            _ctx = Context.from_settings()
        return _ctx


class ProgressReporter:
    """Logs ``label: 1.2 GiB of ~3.0 GiB (40%)`` at most every ``every`` seconds, and keeps a
    Prefect progress artifact up to date; ``finish`` sets it to 100%."""

    def __init__(self, label: str, every: float = 5.0) -> None:
        from prefect.logging import get_run_logger

        self.label, self.every = label, every
        self.logger = get_run_logger()
        self.last = 0.0
        self.artifact: Any = None

    def __call__(self, what: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        pct = min(done / total * 100, 100.0) if total else None
        self.logger.info("%s: %s%s", self.label, _size(done),
                         f" of ~{_size(total)} ({pct:.0f}%)" if total and pct is not None
                         else "")
        if pct is not None:
            self._artifact(pct)

    def finish(self) -> None:
        self._artifact(100.0)

    def _artifact(self, pct: float) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        try:
            if self.artifact is None:
                self.artifact = create_progress_artifact(progress=pct, description=self.label)
            else:
                update_progress_artifact(self.artifact, progress=pct)
        except Exception as exc:  # progress is a nicety: never fail a backup over it
            self.logger.debug("progress artifact not updated: %s", exc)


def progress_reporter(label: str, every: float = 5.0) -> ProgressReporter:
    return ProgressReporter(label, every)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"
