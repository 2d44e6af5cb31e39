"""What every task and flow needs: a context built once per process from the settings, a
throttled progress reporter that logs to the run and updates a progress artifact (and feeds
the bar of a process running the flow in place), and the scheduling of webhook retries."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from vowvault.engine.context import Context, Progress

_ctx: Context | None = None
_lock = threading.Lock()
_local: list[Progress] = []
"""A progress display of the process running the flow in place (`vowvault backup run`
draws a bar), fed besides the run's log and artifact."""


@contextmanager
def local_progress(sink: Progress) -> Iterator[None]:
    """Feed ``sink`` with every task's progress while a flow runs in this process."""
    _local.append(sink)
    try:
        yield
    finally:
        _local.remove(sink)


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
        self.done, self.what = 0, label
        self.artifact: Any = None

    def __call__(self, what: str, done: int, total: int | None) -> None:
        self.done, self.what = done, what
        for sink in _local:
            sink(what, done, total)
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
        """All read: the estimate was only an estimate, so the end is what was read."""
        for sink in _local:
            sink(self.what, self.done, self.done)
        self.logger.info("%s: %s (100%%)", self.label, _size(self.done))
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


# -- webhook retries without polling ---------------------------------------------------------
#
# After a flow that may have queued deliveries, ONE run of
# the webhook-delivery deployment is scheduled for the earliest retry the catalog holds
# (``webhooks.next_due``). That run delivers, then schedules the next one the same way, so a
# delivery that keeps failing is tried at each of its backoff times and nothing runs while
# nothing is due. The daily analytics flow schedules too: a process that died after emitting,
# before scheduling, still has its retry run within a day.

WEBHOOK_DEPLOYMENT = "webhook-delivery/webhook-delivery"


def schedule_webhook_delivery() -> str | None:
    """The id of the webhook-delivery run that will make the next attempt (None: nothing
    pending, or no such deployment). Never raises: the flow that emitted the event must not
    fail over its webhooks. A plain call, not a task: it adds no step to the flows' graphs
    (its lines are in the calling run's logs)."""
    from prefect.exceptions import MissingContextError, ObjectNotFound
    from prefect.logging import get_run_logger

    from vowvault.engine.webhooks import next_due

    logger: Any
    try:
        logger = get_run_logger()
    except MissingContextError:
        logger = logging.getLogger(__name__)
    due: dt.datetime | None = None
    try:
        due = next_due(context())
        if due is None:
            return None
        return _schedule(due)
    except ObjectNotFound:
        # Flows called without deployments (a temporary server): only `vowvault webhooks
        # deliver` makes retries there.
        logger.info("webhook retry due at %s not scheduled: no %s deployment",
                    due.isoformat() if due else "?", WEBHOOK_DEPLOYMENT)
    except Exception as exc:
        logger.warning("webhook retry due at %s not scheduled: %s",
                       due.isoformat() if due else "?", exc)
    return None


def _schedule(due: dt.datetime) -> str:
    """One run per due time, however many flows ask: the idempotency key is the time. A
    run for that time that has already finished (it crashed, or failed, before delivering)
    gets a successor, keyed by its id: asking again never makes a third."""
    from prefect.deployments import run_deployment

    def run(key: str) -> Any:
        # Not as a subflow: the run belongs to no emitting flow, and outlives it.
        return run_deployment(WEBHOOK_DEPLOYMENT, scheduled_time=due, timeout=0,
                              as_subflow=False,
                              idempotency_key=key)

    flow_run = run(f"webhook-delivery-{due.isoformat()}")
    if flow_run.state is not None and flow_run.state.is_final():
        flow_run = run(f"webhook-delivery-{due.isoformat()}-after-{flow_run.id}")
    return str(flow_run.id)
