"""Storage-tier lifecycle: a pure plan of tier moves (with reasons), then an executor that
changes the object's real tier on its backend and the catalog together.

Per-policy rules (``lifecycle: [{after_days, tier}]``, by default HOT -> COLD after 30
days, COLD -> ARCHIVE after a year) apply to data objects by the backup's age; the rule with
the most days that applies wins, and objects only ever move to colder tiers. Each provider's
minimum storage duration is respected: an object leaves a tier only after it has been there
that long (moving earlier is charged as if it had stayed): each target says how long in its
``properties().min_storage_days``. Keys, indexes and manifests stay
where they were written (at most COLD), so listing, verifying and restoring never need an
archive retrieval to start.

The executor is idempotent: setting a tier an object already has is a no-op, and a run
killed between the backend and the catalog is finished by the next one. Each move reads the
catalog, changes the tier on the target, then records it: no transaction spans the
service's call.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from vowvault.catalog import audit
from vowvault.catalog.models import BackupJob, BackupPolicy, BackupStorage, Organization
from vowvault.domain import BackupStatus, CopyStatus, ObjectKind, Tier
from vowvault.engine import retention
from vowvault.engine.context import Context, log
from vowvault.engine.objects import target_secrets
from vowvault.errors import IntegrityError
from vowvault.repository import BackupLocation


@dataclass(frozen=True)
class StoredObject:
    id: str
    tier: Tier
    created_at: dt.datetime
    tier_changed_at: dt.datetime | None
    backup_created_at: dt.datetime
    min_stay: Mapping[Tier, int] = field(default_factory=dict)
    """Days an object must stay in a tier of its target before it leaves it without an
    early-deletion charge."""


@dataclass
class Move:
    id: str
    move: bool
    to: Tier | None
    reason: str


def plan_lifecycle(objects: list[StoredObject], rules: list[dict[str, Any]],
                   now: dt.datetime) -> list[Move]:
    """For each object: move (to which tier) or stay, and why (pure)."""
    out = []
    for o in objects:
        age = (now - o.backup_created_at).days
        due = [r for r in rules if age >= r["after_days"] and Tier(r["tier"]).rank > o.tier.rank]
        if not due:
            out.append(Move(o.id, False, None, f"{_days(age)} old: no rule moves it from "
                                               f"{o.tier.value}"))
            continue
        rule = max(due, key=lambda r: r["after_days"])
        target = Tier(rule["tier"])
        since = o.tier_changed_at or o.created_at
        stayed = (now - since).days
        minimum = o.min_stay.get(o.tier, 0)
        if stayed < minimum:
            out.append(Move(o.id, False, target, f"due for {target.value} (rule: after "
                                                  f"{rule['after_days']} days), but in "
                                                  f"{o.tier.value} only {stayed} of its "
                                                  f"{minimum} minimum days"))
            continue
        out.append(Move(o.id, True, target, f"{_days(age)} old: rule after {rule['after_days']} "
                                            f"days moves it to {target.value}"))
    return out


def plan(ctx: Context) -> list[tuple[str, Move]]:
    """The lifecycle plan of every live data object, with its policy's name."""
    now = ctx.clock()
    out: list[tuple[str, Move]] = []
    with ctx.catalog.read() as s:
        rows = s.execute(sa.select(BackupStorage, BackupJob.created_at, BackupPolicy.name,
                                   BackupPolicy.lifecycle_rules, BackupPolicy.storage_targets,
                                   Organization.slug, BackupJob.organization_id,
                                   BackupJob.policy_id)
                         .join(BackupJob, BackupJob.id == BackupStorage.backup_job_id)
                         .join(BackupPolicy, BackupPolicy.id == BackupJob.policy_id)
                         .join(Organization, Organization.id == BackupJob.organization_id)
                         .where(BackupStorage.object_kind == ObjectKind.DATA,
                                BackupStorage.status.in_([CopyStatus.STORED,
                                                          CopyStatus.VERIFIED]),
                                BackupJob.status == BackupStatus.COMPLETED)
                         .order_by(BackupJob.created_at)).all()
    by_policy: dict[str, tuple[list[dict[str, Any]], list[StoredObject]]] = {}
    backup_of: dict[str, str] = {}
    for obj, created, name, rules, targets, slug, org_id, policy_id in rows:
        location = BackupLocation(org_id, policy_id, obj.backup_job_id)
        if not ctx.rules.allows_storage(slug, obj.storage_url) or \
                not location.holds(obj.file_path):
            log.warning("object %s of backup %s (%s on %s) is not where its ids put it: "
                        "not moved", obj.id, obj.backup_job_id, obj.file_path,
                        obj.storage_url)
            continue
        secret = next((t.get("credentials_secret") for t in targets
                       if t["url"] == obj.storage_url), None)
        stays = ctx.backend(obj.storage_url, secret, org=slug).properties().min_storage_days
        entry = by_policy.setdefault(name, (rules, []))
        entry[1].append(StoredObject(str(obj.id), obj.storage_tier, obj.created_at,
                                     obj.tier_changed_at, created, stays))
        backup_of[str(obj.id)] = str(obj.backup_job_id)
    # A backup that retention is about to delete is not moved first: on a cloud's cold tiers
    # that would only add a transition fee and an early-deletion charge.
    doomed = {d.id for p in retention.plan(ctx) for d in p.deletions}
    for name, (rules, objects) in by_policy.items():
        for m in plan_lifecycle(objects, rules, now):
            if m.move and backup_of[m.id] in doomed:
                m = Move(m.id, False, m.to, f"not moved to {m.to.value if m.to else '-'}: "
                                            f"retention deletes its backup")
            out.append((name, m))
    return out


def execute(ctx: Context, moves: list[tuple[str, Move]]) -> list[dict[str, Any]]:
    done = []
    for policy, m in moves:
        if not m.move or m.to is None:
            continue
        with ctx.catalog.read() as s:
            obj = s.get(BackupStorage, uuid.UUID(m.id))
            assert obj is not None
            job = s.get(BackupJob, obj.backup_job_id)
            assert job is not None
            url, name, before = obj.storage_url, obj.file_path, obj.storage_tier
            secret = target_secrets(job).get(url)
            org = s.get(Organization, job.organization_id)
            assert org is not None
            slug, location = org.slug, BackupLocation(job.organization_id, job.policy_id,
                                                      job.id)
        if not location.holds(name):
            raise IntegrityError(f"object {m.id} is recorded as {name!r}, outside its "
                                 f"backup's {location.prefix}: not moved")
        backend = ctx.backend(url, secret, org=slug)
        backend.set_tier(name, m.to)  # the service first, then the record
        with ctx.catalog.session() as s:
            obj = s.get(BackupStorage, uuid.UUID(m.id))
            assert obj is not None
            obj.storage_tier = m.to
            obj.tier_changed_at = ctx.clock()
            obj.is_archived = backend.properties().archive_needs_restore and \
                m.to in (Tier.ARCHIVE, Tier.DEEP_ARCHIVE)
            audit.record(s, actor=ctx.settings.actor, action="storage.tier",
                         target_type="backup", target_id=obj.backup_job_id,
                         organization_id=obj.organization_id,
                         summary=f"{policy}: {name} {before.value} -> {m.to.value}",
                         before={"tier": before.value}, after={"tier": m.to.value})
        done.append({"policy": policy, "object": name, "from": before.value,
                     "to": m.to.value, "target": url})
    return done


def _days(n: int) -> str:
    return f"{n} day" if n == 1 else f"{n} days"
