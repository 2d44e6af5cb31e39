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


@task(name="erasure purge", cache_policy=NONE)
def erasure_purge(dry_run: bool) -> list[dict[str, Any]]:
    """Rewrite file-tree backups without the subjects of pending erasure requests."""
    from vowvault.engine import erasure

    ctx = context()
    done: list[dict[str, Any]] = []
    for req in maintenance.pending_erasures(ctx):
        for row in erasure.purge(ctx, req["ref"], dry_run=dry_run):
            done.append({"subject": req["ref"], **row})
    create_table_artifact(table=done or [{"backups rewritten": 0}], key="gdpr-erasure",
                          description="erasure: " + ("plan" if dry_run else "done"))
    return done


@task(name="lifecycle plan", cache_policy=NONE)
def lifecycle_plan() -> tuple[list[dict[str, Any]], list[Any]]:
    """The plan as an artifact (rows) and as the engine's moves, for `lifecycle apply`."""
    from vowvault.engine import lifecycle

    moves = lifecycle.plan(context())
    rows = [{"policy": p, "object": m.id, "move": m.move,
             "to": m.to.value if m.to else "", "why": m.reason} for p, m in moves]
    create_table_artifact(table=rows or [{"objects": 0}], key="lifecycle-plan",
                          description="tier moves planned")
    return rows, moves


@task(name="lifecycle apply", cache_policy=NONE)
def lifecycle_apply(moves: list[Any]) -> list[dict[str, Any]]:
    """Carry out exactly the plan shown, as `vowvault lifecycle` does."""
    from vowvault.engine import lifecycle

    done = lifecycle.execute(context(), moves)
    create_table_artifact(table=done or [{"moved": 0}], key="lifecycle-done",
                          description="tier moves made")
    return done


@task(name="retention plan", cache_policy=NONE)
def retention_plan() -> tuple[list[dict[str, Any]], list[Any]]:
    """The plan as an artifact (rows) and as the engine's plans, for `retention apply`."""
    from vowvault.engine import retention

    plans = retention.plan(context())
    rows = [{"policy": p.policy, "backup": d.id, "keep": d.keep,
             "completed": d.completed_at.isoformat() if d.completed_at else "",
             "why": "; ".join(d.reasons)} for p in plans for d in p.decisions]
    create_table_artifact(table=rows or [{"backups": 0}], key="retention-plan",
                          description="keep or delete, with reasons")
    return rows, plans


@task(name="retention apply", cache_policy=NONE)
def retention_apply(plans: list[Any]) -> list[dict[str, Any]]:
    """Carry out exactly the plan shown."""
    from vowvault.engine import retention

    done = retention.execute(context(), plans)
    create_table_artifact(table=done or [{"deleted": 0}], key="retention-done",
                          description="backups deleted")
    return done


@task(name="daily analytics", cache_policy=NONE)
def daily_analytics(day: str | None) -> dict[str, Any]:
    """Yesterday's numbers per policy into backup_analytics; tables as artifacts."""
    from vowvault.engine import analytics

    ctx = context()
    when = dt.date.fromisoformat(day) if day else ctx.clock().date() - dt.timedelta(days=1)
    result = analytics.run_daily(ctx, when)
    table = result["table"]
    shown = [] if table.empty else [
        {k: (None if v != v else v) for k, v in row.items()}  # NaN -> None
        for row in table[["organization", "policy", "total_jobs", "successful_jobs",
                          "success_rate_percent", "expected_runs", "compliance_percentage",
                          "stored_bytes", "duration_p50_seconds", "throughput_p50_mib_s",
                          "drills_run", "drills_passed", "key_age_days"]]
        .to_dict("records")]
    create_table_artifact(table=shown or [{"policies": 0}], key="daily-analytics",
                          description=f"backups on {when}, per policy")
    forecast = [{"tier": t, "bytes_now": result["today"].get(t, 0), "bytes_in_90_days": v}
                for t, v in result["forecast_90_days"].items()]
    create_table_artifact(table=forecast or [{"stored": 0}], key="capacity-forecast",
                          description="storage per tier now and in 90 days (linear fit of "
                                      "the last 30 days)")
    from vowvault.engine import wal

    archives = wal.health_of_all(ctx)
    if archives:
        create_table_artifact(table=archives, key="wal-archive-health",
                              description="continuous archiving: lag (s), spool, pg_wal, "
                                          "alerts")
    return {"day": str(when), "rows": result["rows"], "forecast": forecast,
            "wal": archives}


@task(name="key rotation check", cache_policy=NONE)
def key_check() -> list[dict[str, Any]]:
    """Report active keys older than the rotation period: as an artifact, a webhook
    (``key_rotation_due``, once per key version) and a Prefect event
    (``vowvault.key.rotation-due``) that automations can turn into alerts."""
    from prefect.events import emit_event
    from prefect.logging import get_run_logger

    from vowvault.engine.keyring import notify_rotation_due

    due = notify_rotation_due(context())
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


@task(name="deliver webhooks", cache_policy=NONE)
def deliver_webhooks() -> dict[str, int]:
    """What is due by the run's scheduled time: the run scheduled for a retry makes it even
    if it starts a moment before that time by this machine's clock."""
    from prefect.runtime import flow_run

    from vowvault.engine.webhooks import deliver_pending

    scheduled = flow_run.scheduled_start_time
    due_by = dt.datetime.fromisoformat(scheduled.isoformat()) if scheduled else None
    return deliver_pending(context(), due_by=due_by)


@task(name="scrub", cache_policy=NONE)
def scrub(dry_run: bool) -> dict[str, Any]:
    """Read back today's share of stored data, repair what is wanting; coverage as an
    artifact."""
    from vowvault.engine import scrub as engine

    ctx = context()
    result = engine.run(ctx, engine.plan(ctx), dry_run=dry_run)
    create_table_artifact(table=[{k: v for k, v in c.items() if k != "not_covered_by_tier"}
                                 | {"not covered (archived)": ", ".join(
                                     f"{t} {b}" for t, b in c["not_covered_by_tier"].items())
                                    or "-"} for c in result["coverage"]]
                          or [{"policies": 0}], key="scrub-coverage",
                          description="stored data read back within each policy's cycle")
    if result["found"]:
        create_table_artifact(table=result["found"], key="scrub-found",
                              description="copies found wanting (and whether repaired)")
    return {k: v for k, v in result.items() if k != "planned"}


@task(name="wal continuity", cache_policy=NONE)
def wal_continuity() -> list[dict[str, Any]]:
    """Every archived WAL file the kept base backups of each physical policy need, read
    back (``vowvault wal verify``); a gap raises its own wal_gap event."""
    from vowvault.engine import wal

    rows = wal.verify_all(context())
    if rows:
        create_table_artifact(table=rows, key="wal-continuity",
                              description="archived WAL read back per physical policy")
    return rows
