"""Tasks of the maintenance flows: one core call each."""

from __future__ import annotations

import datetime as dt
from typing import Any

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NONE

from tasks.common import context
from vowvault.engine import maintenance


@task(name="wedding-day gate", cache_policy=NONE)
def gate(force: bool) -> tuple[bool, str]:
    from prefect.logging import get_run_logger

    allowed, why = maintenance.gate(context(), force)
    get_run_logger().info("maintenance %s: %s", "runs" if allowed else "skipped", why)
    return allowed, why


@task(name="plan", cache_policy=NONE)
def preview(kind: str) -> list[dict[str, Any]]:
    ctx = context()
    rows = {"lifecycle": maintenance.lifecycle_preview,
            "retention": maintenance.retention_preview,
            "gdpr": maintenance.pending_erasures}[kind](ctx)
    create_table_artifact(table=rows or [{"nothing": "to do"}], key=f"{kind}-plan",
                          description=f"{kind} plan (preview: nothing was changed)")
    return rows


@task(name="daily counts", cache_policy=NONE)
def counts(day: str | None) -> list[dict[str, Any]]:
    when = dt.date.fromisoformat(day) if day else dt.date.today() - dt.timedelta(days=1)
    rows = maintenance.daily_counts(context(), when)
    create_table_artifact(table=rows or [{"backups": 0}], key="daily-backups",
                          description=f"backups on {when}")
    return rows
