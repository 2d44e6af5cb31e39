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


@task(name="key rotation check", cache_policy=NONE)
def key_check() -> list[dict[str, Any]]:
    """Report active keys older than the rotation period: as an artifact and as a Prefect
    event (``vowvault.key.rotation-due``) that automations can turn into alerts."""
    from prefect.events import emit_event
    from prefect.logging import get_run_logger

    from vowvault.engine.keyring import key_status

    due = [k for k in key_status(context()) if k["rotation_due"]]
    for k in due:
        get_run_logger().warning("key of %s (v%s) is %s days old: run `vowvault keys rotate "
                                 "%s`", k["organization"], k["version"], k["age_days"],
                                 k["organization"])
        emit_event(event="vowvault.key.rotation-due",
                   resource={"prefect.resource.id": f"vowvault.organization.{k['organization']}",
                             "vowvault.key.version": str(k["version"])},
                   payload={"age_days": k["age_days"]})
    create_table_artifact(table=due or [{"keys due for rotation": 0}], key="keys-due",
                          description="key-encryption keys past their 90-day rotation")
    return due
