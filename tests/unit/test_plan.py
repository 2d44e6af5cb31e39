"""Deployment plans: queues by priority, wedding-day deployments, limits, the maintenance
gate (pure logic)."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

from vowvault.domain import BackupType, Priority, SourceKind, VendorType
from vowvault.plan import (
    QUEUE_PRIORITY,
    backup_deployments,
    limit_slots,
    limits_for,
    maintenance_allowed,
)


def policy(**kw: object) -> SimpleNamespace:
    base = dict(name="vows", priority=Priority.NORMAL, backup_type=BackupType.FULL,
                vendor_type=VendorType.VENUE, source_kind=SourceKind.POSTGRES_LOGICAL,
                source_config={"kind": "postgres", "dsn": "postgresql://b@db1:5433/hall"},
                storage_targets=[{"url": "s3://bucket/x"}, {"url": "file:///nas"}],
                description=None, schedule_cron="0 1 * * *", timezone="Europe/London",
                effective_schedules=["0 1 * * *"], peak_season_multiplier=1,
                wedding_day_priority=False, is_active=True)
    base.update(kw)
    return SimpleNamespace(**base)


def test_queues_run_emergency_first() -> None:
    assert sorted(QUEUE_PRIORITY, key=QUEUE_PRIORITY.get) == [
        Priority.EMERGENCY, Priority.CRITICAL, Priority.HIGH, Priority.NORMAL, Priority.LOW]


def test_one_deployment_with_tags_limits_and_schedules() -> None:
    (plan,) = backup_deployments(policy(), "grand-hall", [], dt.date(2026, 6, 1))
    assert (plan.name, plan.queue, plan.paused) == ("vows", "normal", False)
    assert {"org:grand-hall", "vendor:venue", "priority:normal", "type:full"} <= set(plan.tags)
    assert plan.limits[0] == "vowvault-db-db1-5433" and len(plan.limits) == 3
    assert [s.expression for s in plan.schedules] == ["0 1 * * *"]
    assert "bucket" not in " ".join(plan.limits)  # names reveal no bucket or path
    assert limit_slots(plan.limits[0]) == 1 and limit_slots(plan.limits[1]) > 1


def test_wedding_day_policy_gets_a_second_deployment_one_level_up() -> None:
    plans = backup_deployments(policy(wedding_day_priority=True, priority=Priority.HIGH),
                               "grand-hall", [dt.date(2026, 6, 12)], dt.date(2026, 6, 1))
    assert [(p.name, p.queue) for p in plans] == [("vows", "high"),
                                                  ("vows-wedding-day", "critical")]
    assert all(s.kind == "rrule" for p in plans for s in p.schedules)
    assert "RDATE:20260612T010000" in plans[1].schedules[0].expression
    assert "EXDATE:20260612T010000" in plans[0].schedules[0].expression


def test_deactivated_policies_are_paused() -> None:
    (plan,) = backup_deployments(policy(is_active=False), "o", [], dt.date(2026, 6, 1))
    assert plan.paused


def test_directory_sources_hold_no_database_limit() -> None:
    assert limits_for({"kind": "directory", "path": "/p"}, [{"url": "file:///b"}]) == [
        limits_for({}, [{"url": "file:///b"}])[0]]


def test_maintenance_never_on_a_wedding_day_unless_forced() -> None:
    saturday, friday = dt.date(2026, 6, 13), dt.date(2026, 6, 12)
    assert not maintenance_allowed(saturday, [])[0]
    assert not maintenance_allowed(friday, [friday])[0]
    assert maintenance_allowed(friday, [])[0]
    assert maintenance_allowed(saturday, [], force=True) == (True, "forced")


def test_deployments_get_no_secret_from_the_environment() -> None:
    import pytest
    import typer

    from vowvault.cli.orchestration import deployment_env

    env = {"VOWVAULT_HOME": "/srv/vv", "VOWVAULT_KEK_LUMIERE": "c2VjcmV0",
           "VOWVAULT_DATABASE_URL": "postgresql://vv@db/catalog", "AWS_SECRET_ACCESS_KEY": "x",
           "VOWVAULT_ACTOR": "alice"}
    assert deployment_env(env, "/home") == {"VOWVAULT_HOME": "/srv/vv",
                                            "VOWVAULT_DATABASE_URL":
                                                "postgresql://vv@db/catalog"}
    with pytest.raises(typer.BadParameter, match="pgpass"):
        deployment_env({"VOWVAULT_DATABASE_URL": "postgresql://vv:pw@db/c"}, "/home")


def test_wedding_day_deployment_is_tagged_with_its_priority() -> None:
    plans = backup_deployments(policy(wedding_day_priority=True), "o", [], dt.date(2026, 6, 1))
    assert "priority:normal" in plans[0].tags
    assert "priority:high" in plans[1].tags and "priority:normal" not in plans[1].tags
