"""One backup: snapshot → compress → encrypt → upload → verify → record.

The engine owns the job; the bytes belong to the data plane and the source:

- ``start`` reads the policy (one short transaction), takes a data key and wraps it (the
  key provider, outside any transaction), then records the job IN_PROGRESS with a row per
  object it is to write on each target (one more). It hands the source's snapshot
  (``sources``) and the copies to the data plane's pipeline (``repository.pipeline``).
- ``run_stage`` runs one of the pipeline's four concurrent stages; ``verify_stage`` reads
  every copy back and proves it (``repository.verify``; a source that proves its plaintext
  as it streams has its frames round-tripped before sealing and its records authenticated
  on the way back, not decoded twice: ``SourceDriver.proved_in_stream``), which no catalog
  transaction spans either.
- ``finish`` records the outcome in one transaction: COMPLETED only after every required
  copy was read back and proven; FAILED or CORRUPTED otherwise, with the objects written
  so far removed first.

``run_backup`` runs the stages in threads; the Prefect flow runs each as a task, with the
same code. The job carries its owner and a lease the heartbeat renews (``leases``); a job
whose process died is found by ``reaper.reap``, and a job taken from its process is never
recorded as done by it.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from vowvault import sources
from vowvault.catalog import audit
from vowvault.catalog.models import BackupJob, BackupPolicy, BackupStorage, WeddingDate
from vowvault.domain import (
    BackupStatus,
    BackupType,
    CopyHealth,
    CopyRole,
    CopyStatus,
    ObjectKind,
    Priority,
    SourceKind,
    Tier,
    VerificationStatus,
)
from vowvault.engine import auditkey, kek, objects, runs
from vowvault.engine.context import Context, Progress, log
from vowvault.engine.kek import KeyRecord
from vowvault.engine.leases import Lease, new_token, owner_fields
from vowvault.engine.reaper import reap
from vowvault.engine.targets import check as check_target
from vowvault.errors import (
    BoundaryError,
    ConfigError,
    IntegrityError,
    NotFound,
    SourceError,
    StorageError,
    TargetUnavailableError,
    Terminated,
    VowvaultError,
)
from vowvault.keys import new_dek
from vowvault.repository import BackupLocation, Copy
from vowvault.repository.layout import DATA, KEY, MANIFEST, tier_for
from vowvault.repository.manifest import MANIFEST_FORMAT, Manifest, ObjectEntry
from vowvault.repository.pipeline import STAGES, BackupPipeline, WriteResult, WriteSpec
from vowvault.repository.verify import CopyVerdict, verify_copy
from vowvault.repository.writer import remove_backup
from vowvault.scheduling import effective_priority, is_wedding_day, local_date
from vowvault.sources.base import Snapshot, SnapshotRequest, SourceDriver

_OBJECT_KINDS = {"key": ObjectKind.KEY, "data": ObjectKind.DATA, "index": ObjectKind.INDEX,
                 "manifest": ObjectKind.MANIFEST}


@dataclass(frozen=True)
class PolicyView:
    """The parts of a policy a run needs, detached from any session."""

    id: uuid.UUID
    name: str
    organization_id: uuid.UUID
    org_slug: str
    backup_type: BackupType
    source_kind: SourceKind
    source: dict[str, Any]
    targets: list[dict[str, Any]]
    key_provider: str
    retention_days: int
    timezone: str
    priority: Priority
    wedding_day_priority: bool
    max_retries: int
    full_every_days: int
    verify_max_age_days: int = 45
    org_name: str = ""

    @classmethod
    def of(cls, p: BackupPolicy) -> PolicyView:
        return cls(p.id, p.name, p.organization_id, p.organization.slug, p.backup_type,
                   p.source_kind, dict(p.source_config), list(p.storage_targets),
                   p.key_provider, p.retention_days, p.timezone, p.priority,
                   p.wedding_day_priority, p.max_retries, p.full_every_days,
                   p.verify_max_age_days, p.organization.name)

    def catalog_section(self) -> dict[str, Any]:
        """What a catalog rebuilt from storage needs and ids alone do not say (kept in
        every manifest, encrypted with it)."""
        return {"organization": self.org_slug, "organization_name": self.org_name,
                "policy": self.name, "source_kind": self.source_kind.value,
                "key_provider": self.key_provider}


@dataclass(frozen=True)
class Target:
    """Where one copy goes."""

    url: str
    tier: Tier
    required: bool
    role: CopyRole
    credentials_secret: str | None = None

    @classmethod
    def of_policy(cls, targets: list[dict[str, Any]]) -> list[Target]:
        return [cls(url=t["url"], tier=Tier(t.get("tier", "HOT")),
                    required=bool(t.get("required", True)),
                    role=CopyRole.PRIMARY if i == 0 else CopyRole.COPY,
                    credentials_secret=t.get("credentials_secret"))
                for i, t in enumerate(targets)]


@dataclass
class Result:
    """What a finished backup reports (small and serialisable)."""

    job_id: str
    policy: str
    status: str
    backup_type: str
    source_bytes: int
    stored_bytes: int
    duration_seconds: float
    stage_seconds: dict[str, float]
    targets: list[str]
    files: int | None = None
    tables: int | None = None
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class Prepared:
    """A job recorded IN_PROGRESS, with everything its data plane needs (plain values)."""

    job_id: uuid.UUID
    policy: PolicyView
    backup_type: BackupType
    parent: uuid.UUID | None
    targets: list[Target]
    dek: bytes
    key: KeyRecord
    wrapped: bytes
    rows: dict[tuple[str, str], uuid.UUID] = field(default_factory=dict)
    """(target URL, object kind) -> its backup_storage row."""
    warnings: list[str] = field(default_factory=list)
    """What was found before the first byte moved (an optional target unavailable)."""
    token: str = field(default_factory=new_token)
    """This process's claim on the job (``leases``)."""

    @property
    def location(self) -> BackupLocation:
        return BackupLocation(self.policy.organization_id, self.policy.id, self.job_id)


class BackupRun:
    """One backup running in this process: the job, its source's snapshot, its pipeline."""

    def __init__(self, ctx: Context, prepared: Prepared, driver: SourceDriver,
                 snapshot: Snapshot, pipeline: BackupPipeline) -> None:
        self.ctx = ctx
        self.prepared = prepared
        self.job_id = prepared.job_id
        self.driver = driver
        self.snapshot = snapshot
        self.pipeline = pipeline
        self.progress: Progress = ctx.progress
        self.verdicts: list[CopyVerdict] = []
        self.dropped: list[str] = []
        """Optional copies that did not read back, removed."""
        self.verify_seconds = 0.0
        self.started = time.perf_counter()
        self.lease = Lease(ctx, BackupJob, self.job_id, prepared.token)

    def report(self, what: str, done: int, total: int | None) -> None:
        self.progress(what, done, total)

    def begin(self) -> None:
        self.lease.start()

    def end(self) -> None:
        self.lease.stop()

    @property
    def warnings(self) -> list[str]:
        return [*self.prepared.warnings, *self.snapshot.warnings,
                *self.pipeline.writer.warnings, *self.dropped]


# -- start ----------------------------------------------------------------------------------

def start(ctx: Context, policy_name: str, *, flow_run_id: str | None = None,
          attempt: int = 1, scheduled_at: dt.datetime | None = None) -> str:
    """Record the job (or, on a flow retry, start it again), take its data key, check the
    source's settings and the targets; register the run for its stages. Returns the job
    id."""
    reap(ctx, policy_name=policy_name)
    now = ctx.clock()
    with ctx.catalog.read() as s:
        policy = s.execute(sa.select(BackupPolicy).where(BackupPolicy.name == policy_name)
                           ).scalar_one_or_none()
        if policy is None:
            raise NotFound(f"no policy named {policy_name!r}; see `vowvault policies list`")
        if not policy.is_active:
            raise ConfigError(f"policy {policy_name} is deactivated; apply a policy file that "
                              f"lists it to reactivate it")
        view = PolicyView.of(policy)
        previous = None
        if flow_run_id:
            job = s.execute(sa.select(BackupJob).where(BackupJob.flow_run_id == flow_run_id)
                            ).scalar_one_or_none()
            previous = objects.read_stored(s, job) if job is not None else None
        job_id = previous.id if previous else uuid.uuid4()
        day = local_date(now, view.timezone)
        weddings = [str(w) for w in s.execute(sa.select(WeddingDate.wedding_id).where(
            WeddingDate.organization_id == view.organization_id,
            WeddingDate.wedding_date == day)).scalars()]
        backup_type, parent_id = _choose_parent(s, view, job_id, now)
        parent = objects.read_stored(s, parent_id) if parent_id else None
    today = [day] if weddings else []
    new_job = {"job_name": f"{view.name}-{now:%Y%m%dT%H%M%SZ}", "backup_type": backup_type,
               "priority": effective_priority(view.priority, view.wedding_day_priority, day,
                                              today),
               "scheduled_at": scheduled_at or now,
               "is_wedding_day_backup": view.wedding_day_priority and is_wedding_day(day,
                                                                                     today),
               "related_wedding_ids": weddings or None, "flow_run_id": flow_run_id,
               "created_at": now}
    driver = sources.driver(view.source_kind)
    try:  # the policy's rows are the tenant's: the service's rules decide
        within = ctx.rules.check_source(view.org_slug, view.source)
        for t in view.targets:
            ctx.rules.check_storage(view.org_slug, t["url"])
            if t.get("credentials_secret"):
                ctx.rules.check_secret(view.org_slug, t["credentials_secret"])
    except BoundaryError as exc:
        _refuse(ctx, view, job_id, previous is not None, exc, new_job,
                action="backup.refused")
        raise
    try:
        targets, warnings = _available_targets(ctx, view.org_slug,
                                               Target.of_policy(view.targets))
    except TargetUnavailableError as exc:
        _refuse(ctx, view, job_id, previous is not None, exc, new_job)
        raise
    copies = copies_of(ctx, view.org_slug, targets)
    password = _source_password(view.source)
    if previous is not None:
        objects.remove_objects(ctx, previous, reason="retried by its flow")
    key = kek.ensure_active_key(ctx, view.organization_id, view.key_provider)
    dek = new_dek()
    wrapped = kek.wrap(ctx, key, dek, job_id)
    parent_reader = objects.open_reader(ctx, parent) if parent is not None else None
    # What the parent takes files and index entries from (its index refers to theirs).
    parent_references = objects.open_references(ctx, parent.references, kinds=["index"]) \
        if parent is not None and parent.references else None
    prepared = Prepared(job_id, view, backup_type, parent_id, targets, dek, key, wrapped,
                        warnings=warnings)
    with ctx.catalog.session() as s:
        job = s.get(BackupJob, job_id) if previous else None
        if job is None:
            job = BackupJob(id=job_id, organization_id=view.organization_id,
                            policy_id=view.id, status=BackupStatus.SCHEDULED, **new_job)
            s.add(job)
            s.flush()
        job.backup_type = backup_type
        job.parent_job_id = parent_id
        job.retry_count = max(attempt - 1, 0)
        job.error_message = None
        record_started(ctx, s, job, prepared, driver, copies)
        audit.record(s, actor=ctx.settings.actor, action="backup.start", target_type="backup",
                     target_id=job_id, organization_id=view.organization_id,
                     summary=f"backup of {view.name} started ({backup_type.value})"
                     + (f", attempt {attempt}" if attempt > 1 else ""))
    request = SnapshotRequest(view.source, password, within, parent_reader,
                              backup_id=str(job_id), parent_references=parent_references)
    launch(ctx, prepared, driver, driver.snapshot(request), copies, request)
    log.info("backup %s of policy %s started: %s to %s", job_id, view.name, backup_type.value,
             ", ".join(t.url for t in targets))
    return str(job_id)


def _refuse(ctx: Context, view: PolicyView, job_id: uuid.UUID, exists: bool,
            error: BaseException, fields: dict[str, Any], *,
            action: str = "backup.failed") -> None:
    """A backup that cannot start (a required target unavailable, a policy pointing where
    its organization may not) is recorded FAILED, so that listings, webhooks and the
    wedding-day escalation see it; a refusal is audited as ``backup.refused``."""
    message = one_line(error)
    now = ctx.clock()
    with ctx.catalog.session() as s:
        job = s.get(BackupJob, job_id) if exists else None
        if job is None:
            job = BackupJob(id=job_id, organization_id=view.organization_id,
                            policy_id=view.id, **fields)
            s.add(job)
        job.status, job.completed_at, job.error_message = BackupStatus.FAILED, now, message
        s.flush()
        audit.record(s, actor=ctx.settings.actor, action=action,
                     target_type="backup", target_id=job_id,
                     organization_id=view.organization_id,
                     summary=f"backup of {view.name} could not start: {message}")
    log.error("backup %s of %s could not start: %s", job_id, view.name, message)
    _notify(ctx, job_id, "backup_failed")


def _available_targets(ctx: Context, org: str, wanted: list[Target]
                       ) -> tuple[list[Target], list[str]]:
    """The targets a backup writes to: each must hold the repository marker the catalog
    knows (a new target gets one now). A required target that is unavailable stops the
    backup before anything is written; an optional one is left out, with a warning."""
    usable, warnings = [], []
    for target in wanted:
        state = check_target(ctx, target.url, target.credentials_secret, org=org,
                             first_use=True)
        if state.available:
            usable.append(target)
        elif target.required:
            state.raise_if_unavailable()
        else:
            warnings.append(f"optional copy {target.url} left out: {state.problem}")
    return usable, warnings


def copies_of(ctx: Context, org: str, targets: list[Target]) -> list[Copy]:
    return [Copy(t.url, ctx.backend(t.url, t.credentials_secret, org=org), t.required, t.tier,
                 check_target(ctx, t.url, t.credentials_secret, org=org).marker)
            for t in targets]


def record_started(ctx: Context, s: Session, job: BackupJob, prepared: Prepared,
                    driver: SourceDriver, copies: list[Copy]) -> None:
    """The job IN_PROGRESS with its key, and a PENDING row for every object it is to write
    on every target (so that whatever happens next, the catalog knows where to clean up).
    Rows of an earlier attempt of the same job are replaced."""
    now = ctx.clock()
    s.execute(sa.delete(BackupStorage).where(BackupStorage.backup_job_id == job.id))
    job.encryption_key_id = prepared.key.id
    job.wrapped_dek = prepared.wrapped
    job.status = BackupStatus.IN_PROGRESS
    job.started_at = now
    for column, value in owner_fields(s, ctx, prepared.token).items():
        setattr(job, column, value)
    job.format_version = MANIFEST_FORMAT
    location = prepared.location
    for target, copy in zip(prepared.targets, copies, strict=True):
        provider = copy.backend.properties().provider
        for kind in (KEY, *driver.objects, MANIFEST):
            row_id = uuid.uuid4()
            s.add(BackupStorage(
                id=row_id, organization_id=job.organization_id, backup_job_id=job.id,
                storage_provider=provider, storage_url=target.url, copy_role=target.role,
                object_kind=_OBJECT_KINDS[kind], storage_tier=tier_for(kind, target.tier),
                file_path=location.name(kind), file_size_bytes=0, is_encrypted=True,
                encryption_key_id=prepared.key.key_ref, status=CopyStatus.PENDING,
                created_at=now))
            prepared.rows[(target.url, kind)] = row_id


def launch(ctx: Context, prepared: Prepared, driver: SourceDriver, snapshot: Snapshot,
           copies: list[Copy], request: SnapshotRequest | None = None) -> BackupRun:
    """Hand a recorded job to the data plane and register it for its stages."""
    location = prepared.location
    spec = WriteSpec(location, prepared.dek,
                     prepared.key.key_object(prepared.job_id, prepared.wrapped).to_bytes(),
                     ctx.frame_size, ctx.workers, ctx.queue_depth,
                     round_trip=driver.proved_in_stream)
    view = prepared.policy

    def describe(found: dict[str, ObjectEntry]) -> Manifest:
        return Manifest(
            backup_id=prepared.job_id, organization_id=view.organization_id,
            policy_id=view.id, policy=view.name, backup_type=prepared.backup_type.value,
            created_at=ctx.clock().isoformat(),
            parent=str(prepared.parent) if prepared.parent else None,
            references=tuple(sorted(_references(prepared, snapshot))),
            source=dict(snapshot.info), objects=found,
            sections={**snapshot.sections, "catalog": view.catalog_section()})

    run = BackupRun(ctx, prepared, driver, snapshot,
                    BackupPipeline(spec, snapshot, copies, describe))
    if request is not None:
        request.progress = run.report
        request.progress_totals = bool(getattr(ctx.progress, "shows_totals", True))
    runs.register(str(prepared.job_id), run)
    run.begin()
    return run


def _references(prepared: Prepared, snapshot: Snapshot) -> set[str]:
    return {r for r in snapshot.references if r != str(prepared.job_id)}


def _source_password(source: dict[str, Any]) -> str | None:
    if source.get("kind") != "postgres":
        return None
    if source.get("password_env"):
        value = os.environ.get(source["password_env"])
        if value is None:
            raise ConfigError(f"environment variable {source['password_env']} (the source "
                              f"database password) is not set")
        return value
    if source.get("password_secret"):
        from vowvault.secrets import resolve

        return resolve(source["password_secret"])
    return None


def _choose_parent(s: Session, view: PolicyView, job_id: uuid.UUID,
                   now: dt.datetime) -> tuple[BackupType, uuid.UUID | None]:
    """An incremental backup builds on the newest backup of its chain, a differential one on
    the chain's full backup. A chain starts with a full backup, and starts again when its
    full backup is ``full_every_days`` old, so that retention can let old chains go and a
    restore never reads a chain longer than that."""
    if view.backup_type not in (BackupType.INCREMENTAL, BackupType.DIFFERENTIAL):
        return view.backup_type, None
    # Only a parent proven restorable lately: what a new backup refers to is never read
    # back by its own verification.
    fresh = now - dt.timedelta(days=view.verify_max_age_days)
    usable = sa.select(BackupJob).where(
        BackupJob.policy_id == view.id, BackupJob.status == BackupStatus.COMPLETED,
        BackupJob.verification_status == VerificationStatus.VERIFIED, BackupJob.id != job_id,
        BackupJob.verified_at >= fresh,
        BackupJob.deletion_date.is_(None)).order_by(BackupJob.completed_at.desc()).limit(1)
    full = s.execute(usable.where(BackupJob.backup_type == BackupType.FULL)
                     ).scalar_one_or_none()
    if full is None or full.completed_at is None or \
            full.completed_at <= now - dt.timedelta(days=view.full_every_days):
        return BackupType.FULL, None
    parent = full if view.backup_type == BackupType.DIFFERENTIAL else \
        s.execute(usable).scalar_one()
    if parent.id != full.id:
        # An incremental's references reach back to the chain's full backup through its
        # parent's index: every backup of the chain must be proven lately.
        stale = s.execute(sa.select(sa.func.count()).where(
            BackupJob.policy_id == view.id, BackupJob.deletion_date.is_(None),
            BackupJob.completed_at >= full.completed_at, BackupJob.completed_at <=
            parent.completed_at, BackupJob.status == BackupStatus.COMPLETED,
            sa.or_(BackupJob.verified_at.is_(None), BackupJob.verified_at < fresh))).scalar()
        if stale:
            return BackupType.FULL, None
    return view.backup_type, parent.id


# -- the stages -----------------------------------------------------------------------------

def run_stage(job_id: str, stage: str, progress: Progress | None = None) -> dict[str, Any]:
    """Run one stage to its end. A stage stopped because another failed returns normally;
    the stage that failed raises (and stops the others)."""
    run: BackupRun = runs.get(job_id)
    if progress is not None:
        run.progress = progress
    ok = run.pipeline.run_stage(stage)
    return {"stage": stage, "aborted": not ok}


def verify_stage(job_id: str) -> dict[str, Any]:
    """Read every object of every live copy back; skipped when the stages failed."""
    run: BackupRun = runs.get(job_id)
    if run.pipeline.abort.failed:
        return {"skipped": True}
    t0 = time.perf_counter()
    try:
        result = run.pipeline.result
        assert result is not None
        wrapped = run.prepared.wrapped
        run.verdicts = [
            verify_copy(copy, run.prepared.location, run.prepared.dek,
                        expected_manifest_sha=result.manifest_sha256,
                        key_opens=lambda key: key.wrapped_dek == wrapped,
                        deep_check=lambda reader, deep=(i == 0): run.driver.check(reader,
                                                                                  deep=deep),
                        decode=not (run.driver.proved_in_stream
                                    and run.snapshot.proved))
            for i, copy in enumerate(result.live())]
        _judge_copies(run, result)
    except BaseException as exc:
        run.pipeline.abort.fail(exc)
        raise
    finally:
        run.verify_seconds = time.perf_counter() - t0
    return {"skipped": False, "copies": len(run.verdicts)}


def _judge_copies(run: BackupRun, result: WriteResult) -> None:
    """A required copy that does not read back intact fails the backup (CORRUPTED when it
    read back wrong); an optional one is dropped with a warning and its objects removed."""
    by_url = {o.copy.url: o for o in result.copies}
    for verdict in run.verdicts:
        if verdict.ok:
            continue
        outcome = by_url[verdict.url]
        if outcome.copy.required:
            if verdict.unreachable:
                raise StorageError(f"required copy {verdict.url} could not be read back: "
                                   f"{verdict.problem}")
            raise IntegrityError(f"copy {verdict.url} does not read back intact: "
                                 f"{verdict.problem}")
        outcome.failed = verdict.problem or "verification failed"
        run.dropped.append(f"optional copy {verdict.url} failed: {outcome.failed}")
        log.warning("optional copy %s does not read back: %s", verdict.url, verdict.problem)
        try:
            remove_backup(outcome.copy.backend, run.prepared.location)
        except VowvaultError as exc:
            log.warning("could not remove the bad copy on %s: %s", verdict.url, exc)
    if not any(v.ok for v in run.verdicts):
        raise StorageError("no copy of the backup could be read back")


# -- finish ---------------------------------------------------------------------------------

def finish(job_id: str) -> Result:
    """Record the outcome: COMPLETED with every number, or FAILED / CORRUPTED with the
    objects removed. Raises the root cause when the backup did not complete."""
    run: BackupRun = runs.get(job_id)
    run.end()
    try:
        if run.pipeline.abort.failed:
            error = run.pipeline.abort.error or RuntimeError("backup stopped")
            return _record_failure(run, error)
        try:
            return _record_success(run)
        except JobLost:
            discard(run.ctx, run.job_id, reason="taken from this process")
            raise
        except BaseException as exc:  # an interrupt while recording: record the failure
            return _record_failure(run, exc)
    finally:
        runs.forget(job_id)


def _record_success(run: BackupRun) -> Result:
    ctx, prepared = run.ctx, run.prepared
    result = run.pipeline.result
    assert result is not None
    now = ctx.clock()
    data = result.objects.get(DATA)
    source_bytes = data.plaintext_size if data else 0
    stored = sum(e.stored_size for e in result.objects.values())
    stages = {**result.stage_seconds, "verify": round(run.verify_seconds, 3)}
    wall = time.perf_counter() - run.started
    live = [o.copy.url for o in result.copies if o.failed is None]
    info = {**run.snapshot.info, "references": sorted(_references(prepared, run.snapshot)),
            "warnings": run.warnings}
    with ctx.catalog.session() as s:
        job = s.get(BackupJob, prepared.job_id)
        assert job is not None
        _still_ours(job, prepared)
        t0 = time.perf_counter()
        job.status = BackupStatus.COMPLETED
        job.completed_at = job.verified_at = now
        job.verification_status = VerificationStatus.VERIFIED
        job.source_bytes, job.stored_bytes = source_bytes, stored
        job.actual_size_gb = Decimal(source_bytes / 1e9).quantize(Decimal("0.01"))
        job.compression_ratio = _ratio(data.stored_size if data else 0, source_bytes)
        job.file_count = run.snapshot.info.get("files")
        job.source_info = info
        job.manifest_sha256 = result.manifest_sha256
        job.expires_at = now + dt.timedelta(days=prepared.policy.retention_days)
        job.error_message = "; ".join(run.warnings) or None
        for outcome in result.copies:
            for (url, kind), row_id in prepared.rows.items():
                if url != outcome.copy.url:
                    continue
                values: dict[str, Any] = {
                    "status": CopyStatus.FAILED, "problem": outcome.failed,
                    "checked_at": now} if outcome.failed else {
                    "status": CopyStatus.VERIFIED, "verified_at": now, "checked_at": now,
                    "health": CopyHealth.INTACT,
                    "file_size_bytes": outcome.stored.get(kind, 0)}
                s.execute(sa.update(BackupStorage).where(BackupStorage.id == row_id)
                          .values(**values))
        stages["record"] = round(time.perf_counter() - t0, 3)
        job.stage_durations = {**stages, "wall": round(wall, 3)}
        audit.record(s, actor=ctx.settings.actor, action="backup.completed",
                     target_type="backup", target_id=prepared.job_id,
                     organization_id=prepared.policy.organization_id,
                     summary=f"backup of {prepared.policy.name} completed and verified: "
                             f"{source_bytes} bytes, {stored} stored",
                     after={"source_bytes": source_bytes, "stored_bytes": stored,
                            "targets": live})
    auditkey.anchor(ctx, [o.copy.backend for o in result.copies if o.failed is None])
    log.info("backup %s completed: %s bytes read, %s stored, verified on %d %s in %.1f s",
             prepared.job_id, source_bytes, stored, len(live),
             "copy" if len(live) == 1 else "copies", wall)
    _notify(ctx, prepared.job_id, "backup_completed")
    return Result(str(prepared.job_id), prepared.policy.name, BackupStatus.COMPLETED.value,
                  prepared.backup_type.value, source_bytes, stored, round(wall, 3), stages,
                  live, files=run.snapshot.info.get("files"),
                  tables=run.snapshot.info.get("tables"), warnings=run.warnings)


class JobLost(VowvaultError):
    """The job was taken from this process (reaped) before it could record its result."""


def _still_ours(job: BackupJob, prepared: Prepared) -> None:
    if job.owner_token != prepared.token or job.status != BackupStatus.IN_PROGRESS:
        raise JobLost(f"backup {prepared.job_id} was taken from this process before it could "
                      f"record its result ({job.status.value}: {job.error_message}); "
                      f"nothing was recorded as done")


def _ratio(stored: int, source: int) -> Decimal | None:
    """Stored / read bytes of the data object. Framing overhead (about 50 bytes) can make a
    tiny backup's ratio huge: it is capped at 9.9999, the column's range (the report's
    DECIMAL(5,4))."""
    if not source:
        return None
    return min(Decimal(stored / source), Decimal("9.9999")).quantize(Decimal("0.0001"))


def _record_failure(run: BackupRun, error: BaseException) -> Result:
    ctx, prepared = run.ctx, run.prepared
    status = BackupStatus.CORRUPTED if isinstance(error, IntegrityError) else \
        BackupStatus.FAILED
    message = "terminated (SIGTERM)" if isinstance(error, Terminated) else \
        "interrupted (Ctrl-C)" if isinstance(error, KeyboardInterrupt) else one_line(error)
    discard(ctx, prepared.job_id, reason=message)
    with ctx.catalog.session() as s:
        job = s.get(BackupJob, prepared.job_id)
        assert job is not None
        if job.owner_token != prepared.token or job.status != BackupStatus.IN_PROGRESS:
            log.error("backup %s failed (%s) after it was taken from this process: %s",
                      prepared.job_id, message, job.error_message)
            raise JobLost(f"backup {prepared.job_id} was taken from this process: "
                          f"{job.error_message}") from error
        job.status = status
        job.completed_at = ctx.clock()
        job.error_message = message
        if status == BackupStatus.CORRUPTED:
            job.verification_status = VerificationStatus.FAILED
        job.stage_durations = {"wall": round(time.perf_counter() - run.started, 3)}
        audit.record(s, actor=ctx.settings.actor, action=f"backup.{status.value.lower()}",
                     target_type="backup", target_id=prepared.job_id,
                     organization_id=prepared.policy.organization_id,
                     summary=f"backup of {prepared.policy.name} {status.value.lower()}: "
                             f"{message}")
    log.error("backup %s %s: %s", prepared.job_id, status.value.lower(), message)
    _notify(ctx, prepared.job_id, "verification_failed" if status == BackupStatus.CORRUPTED
            else "backup_failed")
    if isinstance(error, VowvaultError | KeyboardInterrupt | SystemExit):
        raise error  # an interrupt stays an interrupt, recorded as FAILED and cleaned up
    raise SourceError(message) from error


def abandon(job_id: str, error: BaseException) -> None:
    """A run stopped from outside its stages (its flow interrupted or terminated): the
    stages are stopped, what they wrote is removed and the job recorded FAILED. Does
    nothing for a job that is no longer running here."""
    if job_id not in runs.running():
        return
    run: BackupRun = runs.get(job_id)
    if not run.pipeline.stop(error):
        log.warning("backup %s: stages still running after the stop; cleaning up anyway",
                    job_id)
    try:
        finish(job_id)
    except BaseException as exc:
        if exc is not error and not isinstance(exc, VowvaultError | KeyboardInterrupt):
            raise


def discard(ctx: Context, job_id: uuid.UUID, *, reason: str) -> None:
    """Remove whatever objects a job wrote, on every target it used, then mark their rows
    DELETED (rows stay, so that the catalog tells what happened; a target that could not
    be cleaned keeps its rows for the reaper or the orphan sweep)."""
    with ctx.catalog.read() as s:
        stored = objects.read_stored(s, job_id)
    failed = objects.remove_objects(ctx, stored, reason=reason)
    with ctx.catalog.session() as s:
        s.execute(sa.update(BackupStorage).where(
            BackupStorage.backup_job_id == job_id,
            BackupStorage.status != CopyStatus.DELETED,
            BackupStorage.storage_url.not_in(failed))
            .values(status=CopyStatus.DELETED, deletion_date=ctx.clock()))


def _notify(ctx: Context, job_id: uuid.UUID, event: str) -> None:
    """The event for the organization's webhooks; a failed wedding-day backup escalates."""
    from vowvault.engine import webhooks

    with ctx.catalog.read() as s:
        job = s.get(BackupJob, job_id)
        assert job is not None
        payload = webhooks.backup_payload(s, job, event)
        escalate = event != "backup_completed" and job.is_wedding_day_backup
        org_id = job.organization_id
    webhooks.emit(ctx, org_id, event, payload, escalation=escalate)


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else error.__class__.__name__)[:1000]


def run_backup(ctx: Context, policy_name: str, **kw: Any) -> Result:
    """The whole backup in this process: stages in threads, then verify and record."""
    job_id = start(ctx, policy_name, **kw)
    run_in_process(job_id)
    return finish(job_id)


def run_in_process(job_id: str) -> None:
    """A started run's stages in threads, then its verification; a failure of either is
    kept in the run's abort for ``finish`` to record."""
    run: BackupRun = runs.get(job_id)
    try:
        run.pipeline.run()
    except BaseException as exc:
        run.pipeline.abort.fail(exc)
    if not run.pipeline.abort.failed:
        try:
            verify_stage(job_id)
        except BaseException as exc:
            run.pipeline.abort.fail(exc)


def concurrency_limits(ctx: Context, policy_name: str) -> list[str]:
    """The global concurrency limits a backup of this policy holds while it runs."""
    from vowvault.plan import limits_for

    with ctx.catalog.read() as s:
        policy = s.execute(sa.select(BackupPolicy).where(BackupPolicy.name == policy_name)
                           ).scalar_one_or_none()
        if policy is None:
            raise NotFound(f"no policy named {policy_name!r}")
        return limits_for(policy.source_config, policy.storage_targets)


__all__ = [
    "STAGES",
    "BackupRun",
    "PolicyView",
    "Prepared",
    "Result",
    "Target",
    "abandon",
    "copies_of",
    "discard",
    "finish",
    "launch",
    "record_started",
    "run_backup",
    "run_in_process",
    "run_stage",
    "start",
    "verify_stage",
]
