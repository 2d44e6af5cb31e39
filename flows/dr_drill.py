"""Disaster-recovery drill: restore a recent backup into a scratch target, validate it
against what was recorded at backup time, replay erasures, measure the recovery time, clean
up. Run on a schedule, or from the UI with parameters."""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.common import schedule_webhook_delivery
from tasks.drill import drill


@flow(name="dr-drill", flow_run_name="drill-{policy}")
def dr_drill(policy: str, backup: str = "latest", drill_server: str | None = None,
             archive_wait: float = 0.0) -> dict[str, Any]:
    """``backup``: "latest" (the newest verified backup), "random:N" (a random verified
    backup of the last N days) or a backup id. ``drill_server``: a PostgreSQL server for the
    throw-away database (default: the source's). ``archive_wait``: seconds to wait for an
    archived backup's restore (otherwise the drill fails saying it was started)."""
    try:
        return drill(policy, backup, drill_server, archive_wait)
    finally:  # drill_completed or drill_failed: a failed delivery's retry
        schedule_webhook_delivery()
