"""Maintenance flows, each deployed from prefect.yaml. They never start heavy work on a
Saturday or a wedding date unless forced, and say so in their run."""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.common import schedule_webhook_delivery
from tasks.maintenance import (
    daily_analytics,
    deliver_webhooks,
    erasure_purge,
    gate,
    key_check,
    lifecycle_apply,
    lifecycle_plan,
    retention_apply,
    retention_plan,
    scrub,
    wal_continuity,
)


@flow(name="lifecycle")
def lifecycle(force: bool = False, dry_run: bool = False) -> dict[str, Any]:
    """Move backups to colder tiers as their policies' rules say (plan and moves shown as
    artifacts)."""
    allowed, why = gate(force)
    if not allowed:
        return {"skipped": why}
    rows, moves = lifecycle_plan()
    return {"plan": rows, "done": [] if dry_run else lifecycle_apply(moves)}


@flow(name="retention")
def retention(force: bool = False, dry_run: bool = False) -> dict[str, Any]:
    """Expire backups no rule keeps (plan and deletions shown as artifacts)."""
    allowed, why = gate(force)
    if not allowed:
        return {"skipped": why}
    rows, plans = retention_plan()
    return {"plan": rows, "done": [] if dry_run else retention_apply(plans)}


@flow(name="scrub")
def scrub_flow(force: bool = False, dry_run: bool = False) -> dict[str, Any]:
    """Re-read a share of all stored data, so every copy is read back within its policy's
    scrub cycle; repair from intact copies; report coverage; then the WAL continuity of
    every physical policy."""
    try:
        allowed, why = gate(force)
        if not allowed:
            return {"skipped": why}
        result = scrub(dry_run)
        if not dry_run:
            result["wal"] = wal_continuity()
        return result
    finally:  # a copy found not restorable is a verification_failed webhook
        schedule_webhook_delivery()


@flow(name="gdpr-erasure")
def gdpr_erasure(force: bool = False, dry_run: bool = False) -> dict[str, Any]:
    """Honour erasure requests in backups: file-tree backups are rewritten without the
    subjects (database backups are beyond use: every restore replays the erasure)."""
    try:
        allowed, why = gate(force)
        if not allowed:
            return {"skipped": why}
        return {"done": erasure_purge(dry_run)}
    finally:  # each rewritten backup is a backup_completed webhook
        schedule_webhook_delivery()


@flow(name="analytics")
def analytics(day: str | None = None) -> dict[str, Any]:
    """Daily numbers per policy, and keys due for rotation (light: runs every day,
    Saturdays included). Also the safety net of webhook retries: whatever is pending gets
    its webhook-delivery run, even if the process that emitted it died before scheduling
    one."""
    try:
        return {"analytics": daily_analytics(day), "keys_due": key_check()}
    finally:
        schedule_webhook_delivery()


@flow(name="webhook-delivery")
def webhook_delivery() -> dict[str, int]:
    """Retry the webhook deliveries that are due, then schedule the run for the next
    attempt, if any. No schedule of its own: a flow that emits an event schedules this
    run for the retry's time (wedding-day escalations, every 15 s, reach their endpoints
    within two minutes)."""
    try:
        return deliver_webhooks()
    finally:
        schedule_webhook_delivery()
