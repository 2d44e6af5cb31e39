"""Disaster-recovery drill: restore a recent backup into a scratch target, validate it,
measure the recovery time, clean up. Run on a schedule, or from the UI with parameters."""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.drill import drill


@flow(name="dr-drill", flow_run_name="drill-{policy}")
def dr_drill(policy: str, backup: str = "latest",
             drill_server: str | None = None) -> dict[str, Any]:
    """``backup``: a backup id, or "latest" (the newest verified one)."""
    return drill(policy, backup, drill_server)
