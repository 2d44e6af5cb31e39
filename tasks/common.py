"""What every task needs: a context built once per process from the settings, and a
throttled progress reporter that logs to the run and updates a progress artifact."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from vowvault.engine.context import Context

_ctx: Context | None = None
_lock = threading.Lock()


def context() -> Context:
    global _ctx
    with _lock:
        if _ctx is None:
            _ctx = Context.from_settings()
        return _ctx


def progress_reporter(label: str, every: float = 5.0) -> Callable[[str, int, int | None], None]:
    """Logs ``label: 1.2 GiB of ~3.0 GiB (40%)`` at most every ``every`` seconds, and keeps
    a Prefect progress artifact up to date."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact
    from prefect.logging import get_run_logger

    logger = get_run_logger()
    state: dict[str, object] = {"last": 0.0, "artifact": None}

    def report(what: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - float(state["last"]) < every:  # type: ignore[arg-type]
            return
        state["last"] = now
        pct = min(done / total * 100, 100.0) if total else None
        logger.info("%s: %s%s", label, _size(done),
                    f" of ~{_size(total)} ({pct:.0f}%)" if total and pct is not None else "")
        if pct is None:
            return
        try:
            if state["artifact"] is None:
                state["artifact"] = create_progress_artifact(progress=pct, key=None,
                                                             description=label)
            else:
                update_progress_artifact(state["artifact"], progress=pct)  # type: ignore[arg-type]
        except Exception as exc:  # progress is a nicety: never fail a backup over it
            logger.debug("progress artifact not updated: %s", exc)

    return report


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"
