"""One backup: snapshot → compress → encrypt → upload → verify → record.

The first four steps are stages running concurrently, connected by bounded channels of
frames (``pipeline``), so a backup moves at the speed of its slowest stage and holds at most
``Context.memory_bound()`` bytes of data whatever its size. ``run_backup`` runs them in
threads; the Prefect flow runs each as a task through ``start`` / ``run_stage`` /
``finish``, with the same code.

The catalog follows the job: SCHEDULED → IN_PROGRESS (with a heartbeat) → COMPLETED only
after every required copy was read back and proven; FAILED or CORRUPTED otherwise, with the
objects written so far removed. A job whose process died is found by ``reap``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from array import array
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from vowvault.catalog import audit
from vowvault.catalog.enums import (
    BackupStatus,
    BackupType,
    CopyRole,
    CopyStatus,
    ObjectKind,
    Priority,
    SourceKind,
    Tier,
    VerificationStatus,
)
from vowvault.catalog.models import (
    BackupJob,
    BackupPolicy,
    BackupStorage,
    Organization,
    WeddingDate,
)
from vowvault.codec import frames as codec
from vowvault.engine import keyring
from vowvault.engine import verify as verifier
from vowvault.engine.context import Context, Progress, log
from vowvault.engine.keyring import active_key, data_key
from vowvault.engine.objects import (
    KEY_OBJECT_FORMAT,
    object_name,
    pack_lengths,
    prefix,
    read_object,
    target_secrets,
)
from vowvault.engine.pipeline import Abort, Aborted, Channel, Item, StageClock, run_threads
from vowvault.errors import (
    ConfigError,
    IntegrityError,
    NotFound,
    SourceError,
    StorageError,
    VowvaultError,
)
from vowvault.keys import new_dek
from vowvault.scheduling import effective_priority, is_wedding_day, local_date
from vowvault.sources.directory import DirectorySnapshot, parse_index

STAGES = ("snapshot", "compress", "encrypt", "upload")


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

    @classmethod
    def of(cls, p: BackupPolicy) -> PolicyView:
        return cls(p.id, p.name, p.organization_id, p.organization.slug, p.backup_type,
                   p.source_kind, dict(p.source_config), list(p.storage_targets),
                   p.key_provider, p.retention_days, p.timezone, p.priority,
                   p.wedding_day_priority, p.max_retries, p.full_every_days)


@dataclass
class ObjectStats:
    plaintext_size: int = 0
    sha256: Any = field(default_factory=hashlib.sha256)
    stored_size: int = 0
    lengths: array[int] = field(default_factory=lambda: array("I"))

    def describe(self, frame_size: int) -> dict[str, Any]:
        return {"plaintext_size": self.plaintext_size, "sha256": self.sha256.hexdigest(),
                "stored_size": self.stored_size, "frame_size": frame_size,
                "frames": len(self.lengths), "frame_lengths": pack_lengths(self.lengths)}


@dataclass
class Target:
    url: str
    tier: Tier
    required: bool
    role: CopyRole
    credentials_secret: str | None = None
    failed: str | None = None
    rows: dict[str, uuid.UUID] = field(default_factory=dict)


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


class BackupRun:
    """The state of one running backup, shared by its stages."""

    def __init__(self, ctx: Context, job_id: uuid.UUID, policy: PolicyView, dek: bytes,
                 wrapped: bytes, key_row: tuple[uuid.UUID, str, int, str],
                 targets: list[Target], parent: tuple[uuid.UUID, str] | None,
                 backup_type: BackupType, source_password: str | None) -> None:
        self.ctx = ctx
        self.job_id = job_id
        self.policy = policy
        self.dek = dek
        self.wrapped = wrapped
        self.key_id, self.key_provider, self.key_version, self.key_ref = key_row
        self.targets = targets
        self.parent = parent
        self.backup_type = backup_type
        self.source_password = source_password
        self.abort = Abort()
        depth = ctx.queue_depth
        self.ch_frames = Channel(self.abort, depth)
        self.ch_compressed = Channel(self.abort, depth)
        self.ch_sealed = Channel(self.abort, depth)
        self.stats: dict[str, ObjectStats] = {}
        self.clocks = {s: StageClock() for s in STAGES}
        self.compress_cpu = 0.0
        self.verify_seconds = 0.0
        self.started = time.perf_counter()
        self.source_info: dict[str, Any] = {}
        self.manifest_sha256: str | None = None
        self.snapshot: DirectorySnapshot | None = None
        self.references: set[str] = set()
        self.warnings: list[str] = []
        self._stop_heartbeat = threading.Event()
        self._heartbeat = threading.Thread(target=self._beat, daemon=True,
                                           name=f"vowvault-heartbeat-{job_id}")
        self.progress: Progress = ctx.progress

    @property
    def prefix(self) -> str:
        return prefix(self.policy.organization_id, self.policy.id, self.job_id)

    def name(self, kind: str) -> str:
        return self.prefix + kind

    def backend(self, target: Target) -> Any:
        return self.ctx.backend(target.url, target.credentials_secret)

    def live_targets(self) -> list[Target]:
        return [t for t in self.targets if t.failed is None]

    def _beat(self) -> None:
        while not self._stop_heartbeat.wait(self.ctx.heartbeat_seconds):
            try:
                with self.ctx.catalog.session() as s:
                    s.execute(sa.update(BackupJob).where(BackupJob.id == self.job_id)
                              .values(heartbeat_at=self.ctx.clock()))
            except Exception as exc:  # the backup goes on; the reaper is patient
                log.warning("heartbeat of backup %s not recorded: %s", self.job_id, exc)

    # -- stage 1: snapshot ------------------------------------------------------------
    def stage_snapshot(self) -> None:
        clock = self.clocks["snapshot"]
        with ExitStack() as stack:
            for kind, chunks in self._source_streams(stack):
                stats = self.stats.setdefault(kind, ObjectStats())
                frames = codec.frame_plaintext(chunks, self.ctx.frame_size)
                index = 0
                while True:
                    with clock:
                        nxt = next(frames, None)
                        if nxt is None:
                            break
                        frame, final = nxt
                        stats.sha256.update(frame)
                        stats.plaintext_size += len(frame)
                    self.ch_frames.put(Item(kind, index, frame, final))
                    index += 1
        self.ch_frames.close()

    def _source_streams(self, stack: ExitStack) -> Iterator[tuple[str, Iterator[bytes]]]:
        src = self.policy.source
        if self.policy.source_kind == SourceKind.POSTGRES_LOGICAL:
            from vowvault.sources.pgarchive import ArchiveTap
            from vowvault.sources.postgres import PostgresSource

            source = PostgresSource(src["dsn"], self.source_password)
            info = source.describe()
            total = info["size_bytes"]
            self.source_info.update(kind="postgres", **{k: v for k, v in info.items()
                                                        if k != "settings"})
            tap = ArchiveTap()
            stream = stack.enter_context(source.dump())

            # The tap parses in its own thread, beside the one reading pg_dump's pipe
            # and hashing (which spends most of its time outside the GIL).
            feed = Channel(self.abort, 64)

            def run_tap() -> None:
                try:
                    for chunk in feed:
                        tap.feed(chunk)
                except Aborted:
                    return  # the backup failed elsewhere; its error is reported there

            tapper = threading.Thread(target=run_tap, daemon=True, name="vowvault-tap")
            tapper.start()

            def tapped() -> Iterator[bytes]:
                done = 0
                try:
                    for chunk in stream:
                        feed.put(chunk)
                        done += len(chunk)
                        self.progress("dump", done, total)
                        yield chunk
                finally:
                    if not self.abort.failed:
                        feed.close()
                tapper.join()
                summary = tap.finish()
                if summary.error:
                    self.warnings.append(f"per-table checksums unavailable: {summary.error}")
                self.database = {"summary": summary.to_json(), "settings": info["settings"]}
                self.source_info["tables"] = len(summary.tables)
                self.source_info["rows"] = sum(t.rows for t in summary.tables)

            yield "data", tapped()
            return
        if self.policy.source_kind != SourceKind.DIRECTORY:
            raise ConfigError(f"{self.policy.source_kind.value} backups are not implemented")
        parent_entries = self._parent_entries() if self.parent else None
        snap = DirectorySnapshot(Path(src["path"]), exclude=src.get("exclude") or [],
                                 one_file_system=src.get("one_file_system", True),
                                 parent=parent_entries,
                                 strict=src.get("on_unreadable", "fail") != "warn")
        self.snapshot = snap
        _files, total = snap.estimate()
        done = 0

        def progress(n: int) -> None:
            nonlocal done
            done += n
            self.progress("read", done, total)

        snap.progress = progress
        yield "data", snap.data()
        report = snap.report
        self.references = {r for r in snap.references if r != str(self.job_id)}
        self.source_info.update(kind="directory", path=src["path"], files=report.files,
                                dirs=report.dirs, symlinks=report.symlinks,
                                files_unchanged=report.files_unchanged,
                                bytes_referenced=report.bytes_referenced,
                                unreadable=report.unreadable, skipped=report.skipped)
        if report.unreadable:
            self.warnings.append(f"{len(report.unreadable)} unreadable files not backed up: "
                                 + "; ".join(report.unreadable[:5]))
        yield "index", snap.index_lines()

    def _parent_entries(self) -> Iterator[Any]:
        assert self.parent is not None
        parent_id, _ = self.parent
        with self.ctx.catalog.session() as s:
            job = s.get(BackupJob, parent_id)
            org = s.get(Organization, self.policy.organization_id)
            assert job is not None and org is not None
            dek = data_key(self.ctx, s, org, job.encryption_key_id, job.wrapped_dek, job.id)
            from vowvault.engine.objects import copies

            available = copies(self.ctx, s, job)
            name = object_name(job, "index")
        if not available:
            raise StorageError(f"parent backup {parent_id} has no readable copy")
        entries = parse_index(read_object(available[0].backend, name, dek, parent_id, "index"))
        for entry in entries:
            if entry.type == "file" and entry.backup is None:
                entry.backup = str(parent_id)
            yield entry

    # -- stage 2: compress --------------------------------------------------------------
    def stage_compress(self) -> None:
        workers = self.ctx.workers

        def work(data: bytes) -> tuple[bytes, float]:
            t0 = time.perf_counter()
            out = codec.compress(data)
            return out, time.perf_counter() - t0

        pending: deque[Any] = deque()
        with ThreadPoolExecutor(workers, thread_name_prefix="vowvault-zstd") as pool:
            for item in self.ch_frames:
                pending.append((item, pool.submit(work, item.data)))
                while len(pending) > workers:
                    self._emit_compressed(*pending.popleft())
            while pending:
                self._emit_compressed(*pending.popleft())
        self.ch_compressed.close()

    def _emit_compressed(self, item: Item, future: Any) -> None:
        data, seconds = future.result()
        self.compress_cpu += seconds
        self.ch_compressed.put(Item(item.obj, item.index, data, item.final))

    # -- stage 3: encrypt ---------------------------------------------------------------
    def stage_encrypt(self) -> None:
        clock = self.clocks["encrypt"]
        sealers: dict[str, codec.Sealer] = {}
        for item in self.ch_compressed:
            with clock:
                sealer = sealers.get(item.obj)
                if sealer is None:
                    sealer = sealers[item.obj] = codec.Sealer(self.dek, self.job_id, item.obj,
                                                              self.ctx.frame_size)
                record = sealer.seal(item.index, item.data, item.final)
                stats = self.stats[item.obj]
                stats.lengths.append(len(record) - codec.RECORD_LEN.size)
                if item.index == 0:
                    record = sealer.header + record
                stats.stored_size += len(record)
            self.ch_sealed.put(Item(item.obj, item.index, record, item.final))
        self.ch_sealed.close()

    # -- stage 4: upload ----------------------------------------------------------------
    def stage_upload(self) -> None:
        clock = self.clocks["upload"]
        with clock:
            self._save_small("key", self._key_object(), ObjectKind.KEY)
        writers: dict[str, _Writers] = {}
        for item in self.ch_sealed:
            if item.index == 0:
                writers[item.obj] = _Writers(self, item.obj)
            with clock:
                writers[item.obj].put(item.data)
            if item.final:
                with clock:
                    writers.pop(item.obj).finish()
        with clock:
            manifest = json.dumps(self._manifest(), sort_keys=True).encode()
            self.manifest_sha256 = hashlib.sha256(manifest).hexdigest()
            sealer = codec.Sealer(self.dek, self.job_id, "manifest", self.ctx.frame_size)
            records = [sealer.header]
            for i, (frame, final) in enumerate(codec.frame_plaintext([manifest],
                                                                       self.ctx.frame_size)):
                records.append(sealer.seal(i, codec.compress(frame), final))
            self._save_small("manifest", b"".join(records), ObjectKind.MANIFEST)

    def _key_object(self) -> bytes:
        import base64

        return json.dumps({
            "format": KEY_OBJECT_FORMAT, "backup_id": str(self.job_id),
            "organization_id": str(self.policy.organization_id),
            "kek": {"provider": self.key_provider, "key_ref": self.key_ref,
                    "version": self.key_version},
            "algorithm": "AES-256-GCM", "wrapped_dek": base64.b64encode(self.wrapped).decode(),
        }, sort_keys=True).encode()

    def _save_small(self, kind: str, data: bytes, object_kind: ObjectKind) -> None:
        for target in self.live_targets():
            row_id = self._storage_row(target, kind, object_kind)
            try:
                info = self.backend(target).save(self.name(kind), [data],
                                                 tier=_small_tier(target.tier))
            except VowvaultError as exc:
                self._target_failed(target, exc)
                continue
            self._stored(row_id, info.size)

    def _storage_row(self, target: Target, kind: str, object_kind: ObjectKind) -> uuid.UUID:
        row_id = uuid.uuid4()
        with self.ctx.catalog.session() as s:
            s.add(BackupStorage(
                id=row_id, organization_id=self.policy.organization_id,
                backup_job_id=self.job_id,
                storage_provider=self.backend(target).properties().provider,
                storage_url=target.url, copy_role=target.role,
                object_kind=object_kind, storage_tier=_small_tier(target.tier)
                if object_kind != ObjectKind.DATA else target.tier,
                file_path=self.name(kind), file_size_bytes=0, is_encrypted=True,
                encryption_key_id=self.key_ref, status=CopyStatus.PENDING,
                created_at=self.ctx.clock()))
        target.rows[kind] = row_id
        return row_id

    def _stored(self, row_id: uuid.UUID, size: int) -> None:
        with self.ctx.catalog.session() as s:
            s.execute(sa.update(BackupStorage).where(BackupStorage.id == row_id)
                      .values(status=CopyStatus.STORED, file_size_bytes=size))

    def _target_failed(self, target: Target, exc: BaseException) -> None:
        target.failed = str(exc)
        if target.required:
            raise exc
        self.warnings.append(f"optional copy {target.url} failed: {exc}")
        log.warning("optional copy %s failed: %s", target.url, exc)

    def _manifest(self) -> dict[str, Any]:
        manifest: dict[str, Any] = {
            "format": codec.FORMAT_VERSION,
            "backup_id": str(self.job_id),
            "organization_id": str(self.policy.organization_id),
            "policy_id": str(self.policy.id),
            "policy": self.policy.name,
            "backup_type": self.backup_type.value,
            "created_at": self.ctx.clock().isoformat(),
            "parent": str(self.parent[0]) if self.parent else None,
            "references": sorted(self.references),
            "source": {k: v for k, v in self.source_info.items()},
            "objects": {k: s.describe(self.ctx.frame_size) for k, s in self.stats.items()},
        }
        database = getattr(self, "database", None)
        if database:
            manifest["database"] = database
        return manifest


class _Writers:
    """The same object written to every live target at once, each by its own thread."""

    def __init__(self, run: BackupRun, kind: str) -> None:
        self.run, self.kind = run, kind
        self.slots: list[tuple[Target, Channel, Abort, threading.Thread, dict[str, Any]]] = []
        object_kind = ObjectKind.DATA if kind == "data" else ObjectKind.INDEX
        for target in run.live_targets():
            row_id = run._storage_row(target, kind, object_kind)
            own = Abort()
            channel = _FanChannel(run.abort, own, run.ctx.queue_depth)
            result: dict[str, Any] = {"row": row_id}
            backend = run.backend(target)
            tier = target.tier if kind == "data" else _small_tier(target.tier)

            def write(backend: Any = backend, channel: Channel = channel,
                      result: dict[str, Any] = result, own: Abort = own,
                      tier: Tier = tier) -> None:
                try:
                    result["info"] = backend.save(run.name(kind), iter(channel), tier=tier)
                except BaseException as exc:
                    own.fail(exc)

            thread = threading.Thread(target=write, daemon=True,
                                      name=f"vowvault-upload-{kind}-{len(self.slots)}")
            thread.start()
            self.slots.append((target, channel, own, thread, result))

    def put(self, data: bytes) -> None:
        for target, channel, own, _t, _r in self.slots:
            if target.failed is not None:
                continue
            try:
                channel.put(data)
            except Aborted:
                if self.run.abort.failed:
                    raise
                self.run._target_failed(target, own.error or StorageError("upload stopped"))

    def finish(self) -> None:
        for target, channel, own, thread, result in self.slots:
            if target.failed is None:
                try:
                    channel.close()
                except Aborted:
                    if self.run.abort.failed:
                        raise
            thread.join()
            if target.failed is not None:
                continue
            if own.error is not None:
                self.run._target_failed(target, own.error)
                continue
            self.run._stored(result["row"], result["info"].size)


class _FanChannel(Channel):
    """A channel to one target's writer: stops on the run's abort or the writer's."""

    def __init__(self, run_abort: Abort, own: Abort, maxsize: int) -> None:
        super().__init__(_Either(run_abort, own), maxsize)


class _Either(Abort):
    def __init__(self, a: Abort, b: Abort) -> None:
        super().__init__()
        self.a, self.b = a, b

    def check(self) -> None:
        self.a.check()
        self.b.check()


def _small_tier(tier: Tier) -> Tier:
    """Key, index and manifest stay readable without an archive restore (COLD is still
    instantly readable on every provider)."""
    return tier if tier.rank <= Tier.COLD.rank else Tier.COLD


_RUNS: dict[str, BackupRun] = {}
_RUNS_LOCK = threading.Lock()


def start(ctx: Context, policy_name: str, *, flow_run_id: str | None = None,
          attempt: int = 1, scheduled_at: dt.datetime | None = None) -> str:
    """Create (or, on a flow retry, reset) the job, take keys, check the source and the
    targets; register the run for its stages. Returns the job id."""
    from vowvault.engine.reaper import reap

    reap(ctx, policy_name=policy_name)
    now = ctx.clock()
    with ctx.catalog.session() as s:
        policy = s.execute(sa.select(BackupPolicy).where(BackupPolicy.name == policy_name)
                           ).scalar_one_or_none()
        if policy is None:
            raise NotFound(f"no policy named {policy_name!r}; see `vowvault policies list`")
        if not policy.is_active:
            raise ConfigError(f"policy {policy_name} is deactivated; apply a policy file that "
                              f"lists it to reactivate it")
        view = PolicyView.of(policy)
        org = policy.organization
        job = None
        if flow_run_id:
            job = s.execute(sa.select(BackupJob).where(BackupJob.flow_run_id == flow_run_id)
                            ).scalar_one_or_none()
        if job is not None:
            _cleanup(ctx, s, job, reason="retried by its flow")
        else:
            day = local_date(now, view.timezone)
            weddings = [str(w) for w in s.execute(sa.select(WeddingDate.wedding_id).where(
                WeddingDate.organization_id == org.id, WeddingDate.wedding_date == day))
                .scalars()]
            wedding_day = view.wedding_day_priority and is_wedding_day(day, [day] if weddings
                                                                        else [])
            job = BackupJob(
                id=uuid.uuid4(), organization_id=org.id, policy_id=policy.id,
                job_name=f"{policy.name}-{now:%Y%m%dT%H%M%SZ}",
                backup_type=view.backup_type, status=BackupStatus.SCHEDULED,
                priority=effective_priority(view.priority, view.wedding_day_priority, day,
                                            [day] if weddings else []),
                scheduled_at=scheduled_at or now, is_wedding_day_backup=wedding_day,
                related_wedding_ids=weddings or None, flow_run_id=flow_run_id,
                created_at=now)
            s.add(job)
            s.flush()
        backup_type, parent = _choose_parent(s, view, job.id, now)
        key_row = active_key(ctx, s, org, view.key_provider)
        dek = new_dek()
        wrapped = keyring.wrap(ctx, org, key_row, dek, job.id)
        job.backup_type = backup_type
        job.parent_job_id = parent[0] if parent else None
        job.encryption_key_id = key_row.id
        job.wrapped_dek = wrapped
        job.status = BackupStatus.IN_PROGRESS
        job.started_at = job.heartbeat_at = now
        job.retry_count = max(attempt - 1, 0)
        job.worker_host, job.worker_pid = socket.gethostname(), os.getpid()
        job.format_version = codec.FORMAT_VERSION
        job.error_message = None
        job_id = job.id
        key_info = (key_row.id, key_row.provider, key_row.version, key_row.key_ref)
        audit.record(s, actor=ctx.settings.actor, action="backup.start", target_type="backup",
                     target_id=job_id, organization_id=org.id,
                     summary=f"backup of {policy.name} started ({backup_type.value})"
                     + (f", attempt {attempt}" if attempt > 1 else ""))
    targets = [Target(url=t["url"], tier=Tier(t.get("tier", "HOT")),
                      required=bool(t.get("required", True)),
                      role=CopyRole.PRIMARY if i == 0 else CopyRole.COPY,
                      credentials_secret=t.get("credentials_secret"))
               for i, t in enumerate(view.targets)]
    password = _source_password(view.source)
    run = BackupRun(ctx, job_id, view, dek, wrapped, key_info, targets, parent, backup_type,
                    password)
    with _RUNS_LOCK:
        _RUNS[str(job_id)] = run
    run._heartbeat.start()
    log.info("backup %s of policy %s started: %s to %s", job_id, view.name, backup_type.value,
             ", ".join(t.url for t in targets))
    return str(job_id)


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


def _choose_parent(s: sa.orm.Session, view: PolicyView, job_id: uuid.UUID,
                   now: dt.datetime) -> tuple[BackupType, tuple[uuid.UUID, str] | None]:
    """An incremental backup builds on the newest backup of its chain, a differential one on
    the chain's full backup. A chain starts with a full backup, and starts again when its
    full backup is ``full_every_days`` old, so that retention can let old chains go and a
    restore never reads a chain longer than that."""
    if view.backup_type not in (BackupType.INCREMENTAL, BackupType.DIFFERENTIAL):
        return view.backup_type, None
    usable = sa.select(BackupJob).where(
        BackupJob.policy_id == view.id, BackupJob.status == BackupStatus.COMPLETED,
        BackupJob.verification_status == VerificationStatus.VERIFIED, BackupJob.id != job_id,
        BackupJob.deletion_date.is_(None)).order_by(BackupJob.completed_at.desc()).limit(1)
    full = s.execute(usable.where(BackupJob.backup_type == BackupType.FULL)
                     ).scalar_one_or_none()
    if full is None or full.completed_at is None or \
            full.completed_at <= now - dt.timedelta(days=view.full_every_days):
        return BackupType.FULL, None
    parent = full if view.backup_type == BackupType.DIFFERENTIAL else \
        s.execute(usable).scalar_one()
    return view.backup_type, (parent.id, parent.backup_type.value)



def get_run(job_id: str) -> BackupRun:
    try:
        return _RUNS[job_id]
    except KeyError:
        raise NotFound(f"backup {job_id} is not running in this process") from None


def run_stage(job_id: str, stage: str, progress: Progress | None = None) -> dict[str, Any]:
    """Run one stage to its end. A stage stopped because another failed returns normally;
    the stage that failed raises (and stops the others)."""
    run = get_run(job_id)
    if progress is not None:
        run.progress = progress
    fn = {"snapshot": run.stage_snapshot, "compress": run.stage_compress,
          "encrypt": run.stage_encrypt, "upload": run.stage_upload}[stage]
    try:
        fn()
    except Aborted:
        return {"stage": stage, "aborted": True}
    except BaseException as exc:
        run.abort.fail(exc)
        raise
    return {"stage": stage, "aborted": False}


def verify_stage(job_id: str) -> dict[str, Any]:
    """Read every object of every live copy back; skipped when the stages failed."""
    run = get_run(job_id)
    if run.abort.failed:
        return {"skipped": True}
    t0 = time.perf_counter()
    try:
        with run.ctx.catalog.session() as s:
            job = s.get(BackupJob, run.job_id)
            assert job is not None
            report = verifier.verify_job(run.ctx, s, job, dek=run.dek,
                                         expected_manifest_sha=run.manifest_sha256,
                                         record=False, raise_on_problem=False)
        run.verify_report = report
        _judge_copies(run, report)
    except BaseException as exc:
        run.abort.fail(exc)
        raise
    finally:
        run.verify_seconds = time.perf_counter() - t0
    return {"skipped": False, "copies": len(report.copies)}


def _judge_copies(run: BackupRun, report: verifier.VerifyReport) -> None:
    """A required copy that does not read back intact fails the backup (CORRUPTED when it
    read back wrong); an optional one is dropped with a warning and its objects removed."""
    by_url = {t.url: t for t in run.targets}
    for copy in report.copies:
        if copy.ok:
            continue
        target = by_url[copy.url]
        if target.required:
            if copy.unreachable:
                raise StorageError(f"required copy {copy.url} could not be read back: "
                                   f"{copy.problem}")
            raise IntegrityError(f"copy {copy.url} does not read back intact: {copy.problem}")
        run._target_failed(target, StorageError(copy.problem or "verification failed"))
        with run.ctx.catalog.session() as s:
            s.execute(sa.update(BackupStorage).where(
                BackupStorage.backup_job_id == run.job_id,
                BackupStorage.storage_url == copy.url).values(status=CopyStatus.FAILED))
        try:
            backend = run.ctx.backend(copy.url, target.credentials_secret)
            backend.delete([o.name for o in backend.list(run.prefix)])
        except VowvaultError as exc:
            log.warning("could not remove the bad copy on %s: %s", copy.url, exc)
    if not any(c.ok for c in report.copies):
        raise StorageError("no copy of the backup could be read back")


def finish(job_id: str) -> Result:
    """Record the outcome: COMPLETED with every number, or FAILED / CORRUPTED with the
    objects removed. Raises the root cause when the backup did not complete."""
    run = get_run(job_id)
    run._stop_heartbeat.set()
    try:
        if run.abort.failed:
            error = run.abort.error or RuntimeError("backup stopped")
            return _record_failure(run, error)
        return _record_success(run)
    finally:
        with _RUNS_LOCK:
            _RUNS.pop(job_id, None)


def _record_success(run: BackupRun) -> Result:
    ctx = run.ctx
    now = ctx.clock()
    data = run.stats.get("data", ObjectStats())
    source_bytes = data.plaintext_size
    stored = sum(s.stored_size for s in run.stats.values())
    stages = {
        "snapshot": round(run.clocks["snapshot"].busy, 3),
        "compress": round(run.compress_cpu, 3),
        "encrypt": round(run.clocks["encrypt"].busy, 3),
        "upload": round(run.clocks["upload"].busy, 3),
        "verify": round(run.verify_seconds, 3),
    }
    wall = time.perf_counter() - run.started
    with ctx.catalog.session() as s:
        job = s.get(BackupJob, run.job_id)
        assert job is not None
        t0 = time.perf_counter()
        job.status = BackupStatus.COMPLETED
        job.completed_at = job.verified_at = now
        job.verification_status = VerificationStatus.VERIFIED
        job.source_bytes, job.stored_bytes = source_bytes, stored
        job.actual_size_gb = Decimal(source_bytes / 1e9).quantize(Decimal("0.01"))
        job.compression_ratio = _ratio(data.stored_size, source_bytes)
        job.file_count = run.source_info.get("files")
        info = dict(run.source_info)
        info["references"] = sorted(run.references)
        info["warnings"] = run.warnings
        job.source_info = info
        job.manifest_sha256 = run.manifest_sha256
        job.expires_at = now + dt.timedelta(days=run.policy.retention_days)
        job.error_message = "; ".join(run.warnings) or None
        s.execute(sa.update(BackupStorage).where(
            BackupStorage.backup_job_id == run.job_id,
            BackupStorage.status == CopyStatus.STORED).values(
            status=CopyStatus.VERIFIED, verified_at=now))
        stages["record"] = round(time.perf_counter() - t0, 3)
        job.stage_durations = {**stages, "wall": round(wall, 3)}
        audit.record(s, actor=ctx.settings.actor, action="backup.completed",
                     target_type="backup", target_id=run.job_id,
                     organization_id=run.policy.organization_id,
                     summary=f"backup of {run.policy.name} completed and verified: "
                             f"{source_bytes} bytes, {stored} stored",
                     after={"source_bytes": source_bytes, "stored_bytes": stored,
                            "targets": [t.url for t in run.live_targets()]})
    log.info("backup %s completed: %s bytes read, %s stored, verified on %d copies in %.1fs",
             run.job_id, source_bytes, stored, len(run.live_targets()), wall)
    _notify(ctx, run.job_id, "backup_completed")
    return Result(str(run.job_id), run.policy.name, BackupStatus.COMPLETED.value,
                  run.backup_type.value, source_bytes, stored, round(wall, 3), stages,
                  [t.url for t in run.live_targets()], files=run.source_info.get("files"),
                  tables=run.source_info.get("tables"), warnings=run.warnings)


def _ratio(stored: int, source: int) -> Decimal | None:
    """Stored / read bytes of the data object. Framing overhead (about 50 bytes) can make a
    tiny backup's ratio huge: it is capped at 9.9999, the column's range (the report's
    DECIMAL(5,4))."""
    if not source:
        return None
    return min(Decimal(stored / source), Decimal("9.9999")).quantize(Decimal("0.0001"))


def _record_failure(run: BackupRun, error: BaseException) -> Result:
    ctx = run.ctx
    status = BackupStatus.CORRUPTED if isinstance(error, IntegrityError) else \
        BackupStatus.FAILED
    message = "interrupted (Ctrl-C)" if isinstance(error, KeyboardInterrupt) else \
        _one_line(error)
    with ctx.catalog.session() as s:
        job = s.get(BackupJob, run.job_id)
        assert job is not None
        _cleanup(ctx, s, job, reason=message)
        job.status = status
        job.completed_at = ctx.clock()
        job.error_message = message
        if status == BackupStatus.CORRUPTED:
            job.verification_status = VerificationStatus.FAILED
        job.stage_durations = {"wall": round(time.perf_counter() - run.started, 3)}
        audit.record(s, actor=ctx.settings.actor, action=f"backup.{status.value.lower()}",
                     target_type="backup", target_id=run.job_id,
                     organization_id=run.policy.organization_id,
                     summary=f"backup of {run.policy.name} {status.value.lower()}: {message}")
    log.error("backup %s %s: %s", run.job_id, status.value.lower(), message)
    _notify(ctx, run.job_id, "verification_failed" if status == BackupStatus.CORRUPTED
            else "backup_failed")
    if isinstance(error, VowvaultError | KeyboardInterrupt | SystemExit):
        raise error  # an interrupt stays an interrupt, recorded as FAILED and cleaned up
    raise SourceError(message) from error


def _notify(ctx: Context, job_id: uuid.UUID, event: str) -> None:
    """The event for the organization's webhooks; a failed wedding-day backup escalates."""
    from vowvault.engine import webhooks

    with ctx.catalog.session() as s:
        job = s.get(BackupJob, job_id)
        assert job is not None
        payload = webhooks.backup_payload(s, job, event)
        escalate = event != "backup_completed" and job.is_wedding_day_backup
        org_id = job.organization_id
    webhooks.emit(ctx, org_id, event, payload, escalation=escalate)


def _cleanup(ctx: Context, s: sa.orm.Session, job: BackupJob, *, reason: str) -> None:
    """Delete whatever objects a job wrote, on every target it used; the storage rows stay
    (as DELETED) so that the catalog tells what happened."""
    rows = list(s.execute(sa.select(BackupStorage).where(
        BackupStorage.backup_job_id == job.id,
        BackupStorage.status != CopyStatus.DELETED)).scalars())
    pre = prefix(job.organization_id, job.policy_id, job.id)
    secrets = target_secrets(job)
    for url in sorted({r.storage_url for r in rows}):
        try:
            backend = ctx.backend(url, secrets.get(url))
            names = [o.name for o in backend.list(pre)] + [r.file_path for r in rows
                                                            if r.storage_url == url]
            backend.delete(sorted(set(names)))
        except VowvaultError as exc:
            log.warning("could not remove the objects of backup %s from %s: %s (the reaper "
                        "will try again)", job.id, url, exc)
            continue
        for r in rows:
            if r.storage_url == url:
                r.status, r.deletion_date = CopyStatus.DELETED, ctx.clock()
    log.info("objects of backup %s removed (%s)", job.id, reason)


def _one_line(error: BaseException) -> str:
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
    run = get_run(job_id)
    stages = {name: (lambda name=name: run_stage(job_id, name)) for name in STAGES}
    try:
        run_threads(stages, run.abort)
    except BaseException as exc:
        run.abort.fail(exc)
    if not run.abort.failed:
        try:
            verify_stage(job_id)
        except BaseException as exc:
            run.abort.fail(exc)


def concurrency_limits(ctx: Context, policy_name: str) -> list[str]:
    """The global concurrency limits a backup of this policy holds while it runs."""
    from vowvault.plan import limits_for

    with ctx.catalog.session() as s:
        policy = s.execute(sa.select(BackupPolicy).where(BackupPolicy.name == policy_name)
                           ).scalar_one_or_none()
        if policy is None:
            raise NotFound(f"no policy named {policy_name!r}")
        return limits_for(policy.source_config, policy.storage_targets)
