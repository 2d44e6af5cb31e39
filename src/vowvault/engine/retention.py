"""Retention: which backups to keep, as a pure plan with a reason for every backup, then an
executor that deletes what the plan says, crash-safe and idempotent.

Rules (per policy), any of which keeps a backup:

- it is within ``retention_days`` of now;
- ``keep_last`` newest; the newest of each of the ``keep_daily`` newest days, ``keep_weekly``
  weeks, ``keep_monthly`` months, ``keep_yearly`` years (in the policy's timezone);
- the ``min_verified_backups`` newest backups proven restorable within the policy's
  ``verify_max_age_days``, always; and the newest restorable backup, always;
- a legal hold on the backup, or the policy's legal hold (``legal_hold_years`` from now);
- a running restore or drill is reading it;
- a kept backup depends on it (incremental parent, or holder of unchanged files).

Backups are ordered by wall-clock completion time. Only COMPLETED backups count towards the
keep-N rules; failed, corrupted and cancelled ones are cleared after ``retention_days``
(unless a kept backup needs them).

Nothing of a policy is deleted while one of its targets is unavailable (its repository
marker missing, or it does not answer): a copy out of sight may be the only good one, and
the backups there may be all that is left. The plan says so and keeps everything.

The executor deletes a backup in three steps, each committed: (1) the job becomes EXPIRED
and its objects DELETING, so nothing restores from it any more; (2) its objects are deleted
from every copy; (3) its rows become DELETED and the job gets its ``deletion_date``. Killed
at any point and run again, it finishes what was started (step 1 is what the plan finds)
and never touches a kept backup.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from vowvault.catalog import audit
from vowvault.catalog.models import (
    BackupJob,
    BackupPolicy,
    BackupStorage,
    Organization,
    RecoveryJob,
)
from vowvault.domain import BackupStatus, BackupType, CopyStatus, RecoveryStatus, SourceKind
from vowvault.engine import objects
from vowvault.engine.context import Context, log
from vowvault.engine.lookup import check_policy
from vowvault.errors import VowvaultError


@dataclass(frozen=True)
class Candidate:
    id: str
    completed_at: dt.datetime
    status: str
    verified: bool = True
    legal_hold: bool = False
    depends_on: frozenset[str] = frozenset()
    in_use: bool = False
    pending_deletion: bool = False
    verified_at: dt.datetime | None = None


@dataclass(frozen=True)
class Rules:
    days: int = 30
    keep_last: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    min_verified: int = 1
    hold_years: int = 0
    timezone: str = "UTC"
    verify_max_age_days: int = 45


@dataclass
class Decision:
    id: str
    keep: bool
    reasons: list[str] = field(default_factory=list)
    completed_at: dt.datetime | None = None
    wal: str | None = None
    """For archived WAL (a TRANSACTION_LOG job): the files it holds, as ranges."""


@dataclass(frozen=True)
class WalJob:
    """Archived WAL as retention sees it: one archiver pass (a TRANSACTION_LOG job)."""

    id: str
    completed_at: dt.datetime
    segments: tuple[int, ...]
    """Segment numbers (``wal.segno``) of the segments it holds; history files aside."""
    label: str
    legal_hold: bool = False
    pending_deletion: bool = False


def plan_wal_retention(jobs: list[WalJob], kept_bases: list[tuple[str, int]],
                       rules: Rules, now: dt.datetime) -> list[Decision]:
    """Archived WAL follows the base backups (pure). A kept base backup needs the WAL from
    the segment it stops in up to the segment the next kept one stops in (an instant
    before the next one's end is reached only from the earlier one), the newest kept one
    everything after it; a job is kept while any of its segments is needed (a job holding
    only history files, while any WAL is kept), or on a legal hold. With no kept base
    backup at all, all WAL is kept (a base backup may be under way)."""
    stops = sorted(kept_bases, key=lambda b: b[1])
    spans = [(stop, stops[i + 1][1] if i + 1 < len(stops) else None, base)
             for i, (base, stop) in enumerate(stops)]
    out = []
    any_needed = False
    for job in sorted(jobs, key=lambda j: (j.completed_at, j.id), reverse=True):
        d = Decision(job.id, False, [], job.completed_at, job.label)
        if job.pending_deletion:
            d.reasons.append("deletion already under way")
            out.append(d)
            continue
        if job.legal_hold:
            d.keep = True
            d.reasons.append("legal hold on the WAL")
        if rules.hold_years and now - job.completed_at < dt.timedelta(days=365 * rules.hold_years):
            d.keep = True
            d.reasons.append(f"policy legal hold ({rules.hold_years} years)")
        if not stops:
            d.keep = True
            d.reasons.append("no base backup is kept yet: all WAL is")
        users = [base for lo, hi, base in spans
                 if any(seg >= lo and (hi is None or seg <= hi) for seg in job.segments)]
        if users:
            d.keep = True
            more = f" and {len(users) - 1} more" if len(users) > 1 else ""
            d.reasons.append(f"WAL needed by kept base backup {users[-1][:8]}{more}")
        any_needed = any_needed or bool(users)
        out.append(d)
    for d, job in zip(out, sorted(jobs, key=lambda j: (j.completed_at, j.id), reverse=True),
                      strict=True):
        if not job.segments and not job.pending_deletion and stops and any_needed:
            d.keep = True
            d.reasons.append("history files, kept while any WAL is")
        if not d.keep and not d.reasons:
            d.reasons.append("WAL no kept base backup needs")
    return out


def plan_retention(backups: list[Candidate], rules: Rules, now: dt.datetime) -> list[Decision]:
    """Keep or delete each backup, with every reason (pure)."""
    tz = ZoneInfo(rules.timezone)
    ordered = sorted(backups, key=lambda b: (b.completed_at, b.id), reverse=True)
    decisions = {b.id: Decision(b.id, False, [], b.completed_at) for b in ordered}

    def keep(b: Candidate, reason: str) -> None:
        decisions[b.id].keep = True
        decisions[b.id].reasons.append(reason)

    live = [b for b in ordered if b.status == BackupStatus.COMPLETED.value
            and not b.pending_deletion]
    for b in ordered:
        age = now - b.completed_at
        if b.pending_deletion:
            decisions[b.id].reasons.append("deletion already under way")
            continue
        if b.legal_hold:
            keep(b, "legal hold on the backup")
        if rules.hold_years and age < dt.timedelta(days=365 * rules.hold_years):
            keep(b, f"policy legal hold ({rules.hold_years} years)")
        if b.in_use:
            keep(b, "a running restore or drill is reading it")
        if b.status == BackupStatus.COMPLETED.value and age < dt.timedelta(days=rules.days):
            keep(b, f"within {rules.days} days")
    for b in live[:rules.keep_last]:
        keep(b, "keep-last")
    buckets = (("daily", rules.keep_daily, lambda d: f"{d:%Y-%m-%d}"),
               ("weekly", rules.keep_weekly, lambda d: "{}-W{:02d}".format(*d.isocalendar())),
               ("monthly", rules.keep_monthly, lambda d: f"{d:%Y-%m}"),
               ("yearly", rules.keep_yearly, lambda d: f"{d:%Y}"))
    for name, count, key in buckets:
        seen: list[str] = []
        for b in live:
            period = key(b.completed_at.astimezone(tz))
            if period in seen:
                continue
            if len(seen) >= count:
                break
            seen.append(period)
            keep(b, f"keep-{name} {period}")
    fresh = now - dt.timedelta(days=rules.verify_max_age_days)
    proven = [b for b in live if b.verified and (b.verified_at is None or b.verified_at >= fresh)]
    for b in proven[:rules.min_verified]:
        keep(b, "among the newest backups proven restorable")
    if live:
        keep(live[0], "the newest restorable backup")
    # Whatever a kept backup needs is kept too (transitively).
    by_id = {b.id: b for b in ordered}
    needed_by: dict[str, list[str]] = {}
    pending = [b.id for b in ordered if decisions[b.id].keep]
    while pending:
        current = pending.pop()
        for dep in by_id[current].depends_on:
            if dep not in decisions:
                continue
            needed_by.setdefault(dep, []).append(current)
            if not decisions[dep].keep:
                decisions[dep].keep = True
                pending.append(dep)
    for dep, users in needed_by.items():
        newest = max(users, key=lambda u: by_id[u].completed_at)
        more = f" and {len(users) - 1} more" if len(users) > 1 else ""
        decisions[dep].reasons.append(f"needed by kept backup {newest[:8]}{more}")
    for d in decisions.values():
        if not d.keep and not d.reasons:
            d.reasons.append("no rule keeps it")
    return [decisions[b.id] for b in ordered]


@dataclass
class PolicyPlan:
    policy: str
    decisions: list[Decision]
    held: str | None = None
    """Why nothing of this policy is deleted this time (a target unavailable)."""

    @property
    def deletions(self) -> list[Decision]:
        return [d for d in self.decisions if not d.keep]


def plan(ctx: Context, policy: str | None = None) -> list[PolicyPlan]:
    """The retention plan of every policy (or one), from the catalog; a policy with a target
    that is unavailable now keeps everything."""
    from vowvault.engine import targets

    now = ctx.clock()
    out = []
    where: dict[str, tuple[str, dict[str, str | None]]] = {}
    with ctx.catalog.read() as s:
        check_policy(s, policy)
        in_use = set(s.execute(sa.select(RecoveryJob.backup_job_id).where(
            RecoveryJob.status.in_([RecoveryStatus.PENDING, RecoveryStatus.IN_PROGRESS,
                                    RecoveryStatus.VALIDATING]))).scalars())
        policies = s.execute(sa.select(BackupPolicy).order_by(BackupPolicy.name)).scalars()
        for p in policies:
            if policy and p.name != policy:
                continue
            rules = Rules(p.retention_days, p.keep_last, p.keep_daily, p.keep_weekly,
                          p.keep_monthly, p.keep_yearly, p.min_verified_backups,
                          p.legal_hold_years, p.timezone, p.verify_max_age_days)
            # Archived WAL (TRANSACTION_LOG jobs) follows the base backups that need it
            # (``plan_wal_retention``), not these rules.
            jobs = list(s.execute(sa.select(BackupJob).where(
                BackupJob.policy_id == p.id, BackupJob.deletion_date.is_(None),
                BackupJob.backup_type != BackupType.TRANSACTION_LOG,
                BackupJob.status != BackupStatus.IN_PROGRESS,
                BackupJob.status != BackupStatus.SCHEDULED)).scalars())
            candidates = [Candidate(
                id=str(j.id), completed_at=j.completed_at or j.created_at,
                status=j.status.value, verified=j.verification_status is not None
                and j.verification_status.value == "VERIFIED", legal_hold=j.legal_hold,
                depends_on=frozenset([*(j.source_info or {}).get("references", []),
                                      *([str(j.parent_job_id)] if j.parent_job_id else [])]),
                in_use=j.id in in_use,
                pending_deletion=j.status == BackupStatus.EXPIRED,
                verified_at=j.verified_at) for j in jobs]
            # The targets holding this policy's backups (those in the policy and any it
            # wrote to before): each must be in sight before anything is deleted.
            secrets = {t["url"]: t.get("credentials_secret") for t in p.storage_targets}
            slug = p.organization.slug
            where[p.name] = (slug, {url: secrets.get(url) for url in s.execute(
                sa.select(BackupStorage.storage_url).distinct().where(
                    BackupStorage.backup_job_id.in_([j.id for j in jobs]),
                    BackupStorage.status != CopyStatus.DELETED)).scalars()
                if ctx.rules.allows_storage(slug, url)})
            decided = plan_retention(candidates, rules, now)
            if p.source_kind == SourceKind.POSTGRES_PHYSICAL:
                decided += _wal_decisions(s, p.id, jobs, decided, rules, now)
            out.append(PolicyPlan(p.name, decided))
    for pp in out:
        org, urls = where[pp.policy]
        down = [state for url, secret in urls.items()
                if not (state := targets.check(ctx, url, secret, org=org)).available]
        if down:
            pp.held = "; ".join(s.problem or s.url for s in down)
            for d in pp.decisions:
                if not d.keep:
                    d.keep = True
                    d.reasons = [f"kept while a target is unavailable ({pp.held})"]
    return out


def _wal_decisions(s: Any, policy_id: uuid.UUID, jobs: list[BackupJob],
                   decided: list[Decision], rules: Rules, now: dt.datetime) -> list[Decision]:
    from vowvault.engine import wal

    kept = {d.id for d in decided if d.keep}
    bases = [(str(j.id), wal.stop_segno(j.source_info or {})) for j in jobs
             if str(j.id) in kept and j.backup_type == BackupType.FULL
             and j.status == BackupStatus.COMPLETED]
    rows = s.execute(sa.select(BackupJob).where(
        BackupJob.policy_id == policy_id, BackupJob.deletion_date.is_(None),
        BackupJob.backup_type == BackupType.TRANSACTION_LOG,
        BackupJob.status.in_([BackupStatus.COMPLETED, BackupStatus.EXPIRED]))).scalars()
    found = []
    for j in rows:
        info = j.source_info or {}
        ranges = info.get("ranges", [])
        found.append(WalJob(
            str(j.id), j.completed_at or j.created_at,
            tuple(n for first, last in ranges
                  for n in range(wal.segno(first), wal.segno(last) + 1)),
            ", ".join(f"{a}..{b[8:]}" for a, b in ranges) or "history "
            + ", ".join(info.get("history", [])),
            j.legal_hold, j.status == BackupStatus.EXPIRED))
    return plan_wal_retention(found, bases, rules, now)


class Crash(Exception):
    """Raised by tests at an executor step to prove it can be re-run."""


def _step(name: str) -> None:
    """A seam between the executor's steps (tests crash here)."""


def execute(ctx: Context, plans: list[PolicyPlan]) -> list[dict[str, Any]]:
    """Delete what the plans say (idempotent, resumable); return what was done. A backup
    on a target that has become unavailable since the plan was made is left for the next
    run (``held`` in what is returned)."""
    from vowvault.engine import wal

    done = []
    for p in plans:
        for d in p.deletions:
            if d.wal is not None:
                done.append(wal.expire(ctx, uuid.UUID(d.id), p.policy, "; ".join(d.reasons)))
            else:
                done.append(delete_backup(ctx, uuid.UUID(d.id), p.policy,
                                          "; ".join(d.reasons)))
    return done


def delete_backup(ctx: Context, job_id: uuid.UUID, policy: str, reason: str
                  ) -> dict[str, Any]:
    """Delete one backup in the executor's three steps (see the module's docstring), unless
    one of its targets is unavailable now."""
    from vowvault.engine import targets

    with ctx.catalog.read() as s:
        job = s.get(BackupJob, job_id)
        assert job is not None
        before = objects.read_stored(s, job)
    down = [state.problem for t in objects.allowed(ctx, before, before.all_targets)
            if not (state := targets.check(ctx, t.url, t.secret, org=before.org_slug)
                    ).available]
    if down:  # its objects there would be left behind, or the only good ones
        log.warning("backup %s of %s not deleted now: %s", job_id, policy, down[0])
        return {"backup": str(job_id), "policy": policy, "reason": reason,
                "held": down[0], "copies": []}
    now = ctx.clock()
    with ctx.catalog.session() as s:  # step 1: nothing restores from it any more
        job = s.get(BackupJob, job_id)
        assert job is not None
        job.status = BackupStatus.EXPIRED
        s.execute(sa.update(BackupStorage).where(
            BackupStorage.backup_job_id == job_id,
            BackupStorage.status != CopyStatus.DELETED).values(status=CopyStatus.DELETING))
        stored = objects.read_stored(s, job)
        org_id = job.organization_id
    _step("expired")
    for target in objects.allowed(ctx, stored, stored.all_targets):  # step 2: every copy
        objects.remove_from(ctx, stored, target)
        _step("deleted-one-copy")
    with ctx.catalog.session() as s:  # step 3: the record says it is gone
        s.execute(sa.update(BackupStorage).where(
            BackupStorage.backup_job_id == job_id).values(status=CopyStatus.DELETED,
                                                           deletion_date=now))
        job = s.get(BackupJob, job_id)
        assert job is not None
        job.deletion_date = now
        audit.record(s, actor=ctx.settings.actor, action="backup.expired",
                     target_type="backup", target_id=job_id, organization_id=org_id,
                     summary=f"backup of {policy} deleted by retention: {reason}")
    return {"backup": str(job_id), "policy": policy, "reason": reason,
            "copies": sorted(t.url for t in stored.all_targets)}


def sweep_orphans(ctx: Context, remove: bool = False) -> list[dict[str, str]]:
    """Objects on the targets that no live catalog row accounts for (a crashed run's
    leftovers, a deleted backup's remains): reported, or removed with ``remove``. Only
    names of vowvault's own layout (``org/policy/backup/...``, ids a catalog derives) are
    candidates, and only under an organization whose policies name the target and whose
    storage it is; anything else on a target is never touched."""
    with ctx.catalog.read() as s:
        known = {(r.storage_url, r.file_path) for r in s.execute(sa.select(BackupStorage).where(
            BackupStorage.status.in_([CopyStatus.PENDING, CopyStatus.STORED,
                                      CopyStatus.VERIFIED]))).scalars()}
        running = {str(j) for j in s.execute(sa.select(BackupJob.id).where(
            BackupJob.status == BackupStatus.IN_PROGRESS)).scalars()}
        urls: dict[str, dict[str, tuple[str, str | None]]] = {}
        """URL -> organization id -> (its slug, the credentials its policy names)."""
        for targets, org_id, slug in s.execute(
                sa.select(BackupPolicy.storage_targets, Organization.id, Organization.slug)
                .join(Organization, Organization.id == BackupPolicy.organization_id)):
            for t in targets:
                if ctx.rules.allows_storage(slug, t["url"]):
                    urls.setdefault(t["url"], {}).setdefault(
                        str(org_id), (slug, t.get("credentials_secret")))
    found = []
    for url, orgs in sorted(urls.items()):
        slug, secret = next(iter(orgs.values()))
        backend = ctx.backend(url, secret, org=slug)
        try:
            listed = list(backend.list(""))
        except VowvaultError as exc:
            log.warning("cannot list %s: %s", url, exc)
            continue
        orphans = [o.name for o in listed if (url, o.name) not in known
                   and _layout_org(o.name) in orgs
                   and not any(f"/{r}/" in f"/{o.name}" for r in running)]
        for name in orphans:
            found.append({"target": url, "object": name})
        if remove and orphans:
            backend.delete(orphans)
    return found


def _layout_org(name: str) -> str | None:
    """The organization id of an object name in vowvault's layout, else None."""
    parts = name.split("/")
    if len(parts) < 4 or any(p in ("", ".", "..") for p in parts):
        return None
    try:
        org = uuid.UUID(parts[0])
        if parts[1] != "adhoc":
            uuid.UUID(parts[1])
        uuid.UUID(parts[2])
    except ValueError:
        return None
    return str(org) if parts[0] == str(org) else None
