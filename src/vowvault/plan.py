"""What the orchestrator should run, as plain data: one deployment plan per policy (two for
wedding-day-priority policies), the priority queues, and the concurrency limits.

``deployments/`` turns these plans into Prefect deployments; nothing here imports Prefect.

- Queues: one per priority, EMERGENCY first (Prefect: a lower number runs first).
- Wedding days: a ``wedding_day_priority`` policy gets a second deployment,
  ``<policy>-wedding-day``, one priority level up, holding exactly its runs on Saturdays and
  wedding-calendar dates (RRULE sets; see ``scheduling.wedding_day_split``); the main
  deployment keeps every other run. Both are plain schedules run by Prefect.
- Peak season: the policy's effective schedules already hold the extra peak crons.
- Concurrency: one limit per source database server (1 slot: never two backups on one
  database server at once) and one per storage target (a few slots), created before any
  deployment that uses them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from vowvault.domain import Priority
from vowvault.scheduling import effective_priority, wedding_day_split

QUEUE_PRIORITY = {Priority.EMERGENCY: 1, Priority.CRITICAL: 2, Priority.HIGH: 3,
                  Priority.NORMAL: 4, Priority.LOW: 5}
"""Work queue priorities: lower runs first."""

TARGET_SLOTS = 4
"""Backups writing to one storage target at once."""


def queue_name(priority: Priority) -> str:
    return priority.value.lower()


@dataclass(frozen=True)
class Schedule:
    kind: str  # "cron" or "rrule"
    expression: str
    timezone: str


@dataclass(frozen=True)
class DeploymentPlan:
    name: str
    policy: str
    queue: str
    priority: Priority
    schedules: list[Schedule]
    tags: list[str]
    description: str
    paused: bool
    limits: list[str]
    parameters: dict[str, Any] = field(default_factory=dict)


def source_limit(source: dict[str, Any]) -> str | None:
    """``vowvault-db-<host>-<port>`` for database sources: one backup per server at once."""
    if source.get("kind") != "postgres":
        return None
    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(str(source["dsn"]))
    host = str(info.get("host") or "local").replace("/", "_")
    return f"vowvault-db-{host}-{info.get('port') or 5432}"


def target_limit(url: str) -> str:
    """``vowvault-target-<scheme>-<hash>``: names reveal no bucket or path."""
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return f"vowvault-target-{urlsplit(url).scheme}-{digest}"


def limits_for(source: dict[str, Any], targets: Iterable[dict[str, Any]]) -> list[str]:
    names = [target_limit(t["url"]) for t in targets]
    db = source_limit(source)
    return sorted({*names, *([db] if db else [])})


def limit_slots(name: str) -> int:
    return 1 if name.startswith("vowvault-db-") else TARGET_SLOTS


def backup_deployments(policy: Any, org_slug: str, wedding_dates: Iterable[dt.date],
                       today: dt.date) -> list[DeploymentPlan]:
    """The deployments of one policy (a ``BackupPolicy`` row or anything with its fields)."""
    priority = Priority(policy.priority)
    tags = ["backup", f"org:{org_slug}", f"priority:{priority.value.lower()}",
            f"type:{policy.backup_type.value.lower()}"]
    if policy.vendor_type is not None:
        tags.append(f"vendor:{policy.vendor_type.value.lower()}")
    limits = limits_for(policy.source_config, policy.storage_targets)
    about = (policy.description or f"Backups of {policy.name}") + \
        f" ({policy.source_kind.value.lower()}, {policy.schedule_cron} {policy.timezone}" + \
        (f", x{policy.peak_season_multiplier} May-October" if len(policy.effective_schedules)
         > 1 else "") + ")"
    common = {"policy": policy.name, "tags": tags, "paused": not policy.is_active,
              "limits": limits, "parameters": {"policy": policy.name}}
    if not policy.wedding_day_priority:
        schedules = [Schedule("cron", c, policy.timezone) for c in policy.effective_schedules]
        return [DeploymentPlan(name=policy.name, queue=queue_name(priority), priority=priority,
                               schedules=schedules, description=about, **common)]
    split = wedding_day_split(policy.effective_schedules, wedding_dates, today)
    raised = effective_priority(priority, True, _next_saturday(today))
    return [
        DeploymentPlan(name=policy.name, queue=queue_name(priority), priority=priority,
                       schedules=[Schedule("rrule", split.regular, policy.timezone)],
                       description=about + "; wedding days run in " + policy.name
                       + "-wedding-day", **common),
        DeploymentPlan(name=f"{policy.name}-wedding-day", queue=queue_name(raised),
                       priority=raised,
                       schedules=[Schedule("rrule", split.wedding, policy.timezone)],
                       description=f"{policy.name} on Saturdays and wedding-calendar dates, "
                                   f"at {raised.value} priority",
                       **{**common, "tags": [*(t for t in tags if not t.startswith(
                           "priority:")), f"priority:{raised.value.lower()}", "wedding-day"]}),
    ]


def _next_saturday(day: dt.date) -> dt.date:
    return day + dt.timedelta(days=(5 - day.weekday()) % 7)


def maintenance_allowed(day: dt.date, wedding_dates: Iterable[dt.date],
                        force: bool = False) -> tuple[bool, str]:
    """Heavy maintenance never starts on a Saturday or a wedding date unless forced."""
    if force:
        return True, "forced"
    if day.weekday() == 5:
        return False, f"{day} is a Saturday: weddings come first (pass force=True to run)"
    if day in set(wedding_dates):
        return False, f"{day} is a wedding date: maintenance waits (pass force=True to run)"
    return True, "not a wedding day"
