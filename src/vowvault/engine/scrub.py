"""Scrubbing: re-read a share of all stored data every day, so that every copy of every
backup is read back within its policy's ``scrub_cycle_days`` (restic's
``check --read-data-subset``), repair what is found wanting from the intact copies, and
report coverage.

The plan is pure (``plan_scrub``): per policy, every copy whose last check would be older
than the cycle by tomorrow, then the copies checked longest ago until the day's share of
the policy's stored bytes (all of them divided by the cycle) is reached, so the work spreads
evenly over the days (never a copy read back within the last day). Copies whose data sits
in an archive tier are not rehydrated for a scrub unless the policy asks
(``scrub_archived``); they are reported as not covered, by tier.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from vowvault.catalog.models import BackupJob, BackupPolicy, BackupStorage
from vowvault.domain import BackupStatus, CopyStatus, ObjectKind, Tier
from vowvault.engine import objects
from vowvault.engine.context import Context, log
from vowvault.engine.kek import org_keys
from vowvault.engine.lookup import check_policy
from vowvault.engine.repair import repair_backup
from vowvault.engine.verify import record, verify_stored

ARCHIVE_TIERS = (Tier.ARCHIVE, Tier.DEEP_ARCHIVE)


@dataclass(frozen=True)
class StoredCopy:
    """One copy of one backup: a target's objects of it."""

    backup_id: str
    url: str
    size: int
    checked_at: dt.datetime | None
    tier: Tier = Tier.HOT
    """The tier of its data object."""

    @property
    def archived(self) -> bool:
        return self.tier in ARCHIVE_TIERS


@dataclass
class ScrubPlan:
    policy: str
    cycle_days: int
    todo: list[StoredCopy] = field(default_factory=list)
    copies: list[StoredCopy] = field(default_factory=list)
    not_covered: dict[str, int] = field(default_factory=dict)
    """Tier -> bytes left out (archived data, not rehydrated for a scrub)."""

    def coverage(self, now: dt.datetime, checked: set[tuple[str, str]] | None = None
                 ) -> dict[str, Any]:
        """Bytes read back within the cycle (counting ``checked``, done this run)."""
        since = now - dt.timedelta(days=self.cycle_days)
        total = sum(c.size for c in self.copies)
        done = sum(c.size for c in self.copies
                   if (checked and (c.backup_id, c.url) in checked)
                   or (c.checked_at is not None and c.checked_at >= since))
        return {"policy": self.policy, "copies": len(self.copies), "stored_bytes": total,
                "checked_within_cycle_bytes": done,
                "coverage_percent": round(100.0 * done / total, 1) if total else 100.0,
                "cycle_days": self.cycle_days, "not_covered_by_tier": dict(self.not_covered)}


def plan_scrub(policy: str, copies: list[StoredCopy], *, cycle_days: int, now: dt.datetime,
               include_archived: bool = False) -> ScrubPlan:
    """Which copies to read back today (pure)."""
    plan = ScrubPlan(policy, cycle_days, copies=list(copies))
    eligible = []
    for c in copies:
        if c.archived and not include_archived:
            plan.not_covered[c.tier.value] = plan.not_covered.get(c.tier.value, 0) + c.size
        else:
            eligible.append(c)
    oldest_first = sorted(eligible, key=lambda c: (c.checked_at is not None,
                                                   c.checked_at or now, c.backup_id, c.url))
    due_before = now - dt.timedelta(days=max(cycle_days - 1, 0))
    budget = math.ceil(sum(c.size for c in eligible) / cycle_days) if cycle_days else 0
    spent = 0
    recent = now - dt.timedelta(days=1)
    for c in oldest_first:
        due = c.checked_at is None or c.checked_at <= due_before
        if not due and (spent >= budget or (c.checked_at and c.checked_at > recent)):
            break  # the day's share is read, or what is left was read back today
        plan.todo.append(c)
        spent += c.size
    return plan


def plan(ctx: Context, policy: str | None = None) -> list[ScrubPlan]:
    now = ctx.clock()
    out = []
    with ctx.catalog.read() as s:
        check_policy(s, policy)
        for p in s.execute(sa.select(BackupPolicy).order_by(BackupPolicy.name)).scalars():
            if policy and p.name != policy:
                continue
            rows = s.execute(sa.select(BackupStorage).join(
                BackupJob, BackupJob.id == BackupStorage.backup_job_id).where(
                BackupJob.policy_id == p.id, BackupJob.deletion_date.is_(None),
                BackupJob.status.in_([BackupStatus.COMPLETED, BackupStatus.CORRUPTED]),
                BackupStorage.status.in_([CopyStatus.STORED, CopyStatus.VERIFIED]))).scalars()
            per: dict[tuple[str, str], dict[str, Any]] = {}
            for r in rows:
                c = per.setdefault((str(r.backup_job_id), r.storage_url),
                                   {"size": 0, "checked": r.checked_at, "tier": Tier.HOT})
                c["size"] += r.file_size_bytes
                if r.checked_at is None or (c["checked"] is not None
                                            and r.checked_at < c["checked"]):
                    c["checked"] = r.checked_at
                if r.object_kind == ObjectKind.DATA:
                    c["tier"] = r.storage_tier
            copies = [StoredCopy(b, url, c["size"], c["checked"], c["tier"])
                      for (b, url), c in per.items()]
            out.append(plan_scrub(p.name, copies, cycle_days=p.scrub_cycle_days, now=now,
                                  include_archived=p.scrub_archived))
    return out


def run(ctx: Context, plans: list[ScrubPlan] | None = None, *,
        dry_run: bool = False) -> dict[str, Any]:
    """Read back what the plans say; repair what is found wanting; report coverage."""
    plans = plan(ctx) if plans is None else plans
    now = ctx.clock()
    checked: set[tuple[str, str]] = set()
    found: list[dict[str, Any]] = []
    if not dry_run:
        for p in plans:
            for c in p.todo:
                outcome = _scrub_one(ctx, c)
                checked.add((c.backup_id, c.url))
                if outcome is not None:
                    found.append({"policy": p.policy, **outcome})
    return {"checked": len(checked), "bytes": sum(c.size for p in plans for c in p.todo),
            "found": found, "coverage": [p.coverage(now, checked) for p in plans],
            "planned": [{"policy": p.policy, "backup": c.backup_id, "copy": c.url,
                         "bytes": c.size} for p in plans for c in p.todo]}


def _scrub_one(ctx: Context, c: StoredCopy) -> dict[str, Any] | None:
    job_id = uuid.UUID(c.backup_id)
    with ctx.catalog.read() as s:
        job = s.get(BackupJob, job_id)
        assert job is not None
        stored = objects.read_stored(s, job)
        keys = org_keys(s, job.organization_id)
    report = verify_stored(ctx, stored, keys, references=False, only=[c.url])
    verdict = report.copies[0] if report.copies else None
    if verdict is None or verdict.ok or verdict.unreachable:
        record(ctx, report, job_id)
        if verdict is not None and verdict.unreachable:
            return {"backup": c.backup_id, "copy": c.url, "found": "unreachable",
                    "problem": verdict.problem, "repaired": False}
        return None
    log.warning("scrub: copy %s of backup %s is %s (%s): repairing", c.url, c.backup_id,
                verdict.health.value.lower(), verdict.problem)
    try:
        repaired = repair_backup(ctx, c.backup_id)
        ok = c.url in repaired.repaired
        problem = repaired.failed.get(c.url)
    except Exception as exc:  # reported in the scrub's result; the others go on
        ok, problem = False, str(exc)
    return {"backup": c.backup_id, "copy": c.url, "found": verdict.health.value.lower(),
            "problem": problem or verdict.problem, "repaired": ok}
