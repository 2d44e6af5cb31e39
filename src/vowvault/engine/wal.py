"""Continuous WAL archiving (the TRANSACTION_LOG type) and the recoverable window.

``archive`` is the archiver: it takes what ``vowvault wal push`` left in a physical
policy's spool, seals each file under a data key of its own wrapped by the organization's
KEK (``repository.wal``), writes it to every copy (several at once), checks what a copy
already holds under that name (the same bytes: fine; other bytes: an alert, the spooled
file kept, nothing overwritten), records the files it archived as one TRANSACTION_LOG job
(ranges of file names, never a row per segment), and only then leaves the receipt and
removes the file from the spool. Killed at any point, it loses nothing: a file leaves the
spool only after its job is recorded, and a file found already archived with the same
bytes is recorded once.

``window`` says what can be recovered: from the end of the oldest verified base backup to
the newest archived WAL, with gaps.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime as dt
import fcntl
import hashlib
import itertools
import logging
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from vowvault import walspool
from vowvault.catalog import audit
from vowvault.catalog.models import BackupJob, BackupPolicy
from vowvault.domain import BackupStatus, BackupType, SourceKind
from vowvault.engine import kek
from vowvault.engine.backup import PolicyView, Target
from vowvault.engine.context import Context
from vowvault.errors import ConfigError, IntegrityError, NotFound, ObjectNotFound, StorageError
from vowvault.keys import new_dek
from vowvault.repository import wal as walobj
from vowvault.storage.base import StorageBackend

log = logging.getLogger("vowvault")


@dataclass
class ArchiveReport:
    archived: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    bytes: int = 0
    stored: int = 0
    job_id: str | None = None


def physical_policy(ctx: Context, name: str) -> PolicyView:
    with ctx.catalog.read() as s:
        policy = s.execute(sa.select(BackupPolicy).where(BackupPolicy.name == name)
                           ).scalar_one_or_none()
        if policy is None:
            raise NotFound(f"no policy named {name!r}; see `vowvault policies list`")
        view = PolicyView.of(policy)
    if view.source_kind != SourceKind.POSTGRES_PHYSICAL:
        raise ConfigError(f"policy {name} is not a physical PostgreSQL policy (source mode: "
                          f"physical): it has no WAL")
    return view


def archive(ctx: Context, policy_name: str, spool: str | None = None, *,
            workers: int = 4) -> ArchiveReport:
    """Archive everything the policy's spool holds now (one pass)."""
    view = physical_policy(ctx, policy_name)
    directory = walspool.policy_spool(policy_name, spool)
    directory.mkdir(parents=True, exist_ok=True)
    report = ArchiveReport()
    with _exclusive(directory):
        files = list(walspool.spooled(policy_name, spool))
        if not files:
            return report
        recorded = _recorded_names(ctx, view.id)
        targets = [(t, ctx.backend(t.url, t.credentials_secret, org=view.org_slug))
                   for t in Target.of_policy(view.targets)]
        key = kek.ensure_active_key(ctx, view.organization_id, view.key_provider)
        done: dict[str, tuple[str, int, int]] = {}
        pushed: dict[str, float] = {}  # when the server handed each file over (its mtime)
        with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_archive_one, ctx, view, key, targets, path): path
                       for path in files}
            for future in concurrent.futures.as_completed(futures):
                path = futures[future]
                try:
                    outcome, sha, size, stored = future.result()
                except _Conflict as exc:
                    report.conflicts.append(f"{path.name}: {exc}")
                    continue
                except (StorageError, OSError) as exc:
                    report.failed[path.name] = str(exc)
                    continue
                done[path.name] = (sha, size, stored)
                with contextlib.suppress(OSError):
                    pushed[path.name] = int(path.stat().st_mtime * 1000) / 1000
                (report.already if outcome == "already" else report.archived).append(path.name)
        new = sorted(n for n in done if n not in recorded)
        if new:
            report.job_id = str(_record(ctx, view, new, done, [t.url for t, _ in targets],
                                        pushed))
        for name in sorted(done):
            walspool.receipt_written(directory, name, done[name][0])
        report.bytes = sum(v[1] for v in done.values())
        report.stored = sum(v[2] for v in done.values())
    if report.conflicts:
        with ctx.catalog.session() as s:
            audit.record(s, actor=ctx.settings.actor, action="wal.conflict",
                         target_type="policy", target_id=view.id,
                         organization_id=view.organization_id,
                         summary=f"WAL of {view.name} pushed again with other contents, "
                                 f"kept in the spool: {'; '.join(report.conflicts)[:500]}")
    return report


class _Conflict(IntegrityError):
    pass


def _archive_one(ctx: Context, view: PolicyView, key: kek.KeyRecord,
                 targets: list[tuple[Target, StorageBackend]], path: Path
                 ) -> tuple[str, str, int, int]:
    data = path.read_bytes()
    wid = walobj.wal_id(view.id, path.name)
    dek = new_dek()
    sealed = walobj.seal(data, dek, key.key_object(wid, kek.wrap(ctx, key, dek, wid)))
    name = walobj.object_name(view.organization_id, view.id, path.name)
    outcome = "archived"
    for target, backend in targets:
        try:
            existing: bytes | None = backend.load(name)
        except ObjectNotFound:
            existing = None
        if existing is not None:
            held = walobj.open_(existing, wid, _Unwrapper(ctx, view))
            if hashlib.sha256(held).hexdigest() != sealed.sha256:
                raise _Conflict(f"{target.url} already holds {path.name} with other contents")
            outcome = "already"
            continue
        backend.save(name, [sealed.blob], tier=target.tier)
    return outcome, sealed.sha256, sealed.size, len(sealed.blob)


class _Unwrapper:
    """Opens WAL objects' data keys with the organization's KEK versions, read from the
    catalog once (a recovery opens hundreds of segments: one query, not one each), and
    again only for a version it has not seen (a rotation since)."""

    def __init__(self, ctx: Context, view: PolicyView) -> None:
        self.ctx, self.view = ctx, view
        self._versions: dict[int, Any] | None = None
        self._lock = threading.Lock()

    def _record(self, version: int) -> Any:
        with self._lock:
            if self._versions is None or version not in self._versions:
                with self.ctx.catalog.read() as s:
                    self._versions = kek.org_keys(s, self.view.organization_id)
            return self._versions.get(version)

    def __call__(self, key_object: Any) -> bytes:
        record = self._record(key_object.version)
        if record is None:
            raise IntegrityError(f"WAL object names key version {key_object.version}, "
                                 f"which {self.view.org_slug} does not have")
        return kek.unwrap(self.ctx, record, key_object.wrapped_dek, key_object.backup_id)



def _recorded_names(ctx: Context, policy_id: uuid.UUID) -> set[str]:
    names: set[str] = set()
    for job in _wal_jobs(ctx, policy_id):
        names.update(held_names(job))
    return names


def _wal_jobs(ctx: Context, policy_id: uuid.UUID) -> list[dict[str, Any]]:
    with ctx.catalog.read() as s:
        rows = s.execute(sa.select(BackupJob.id, BackupJob.source_info,
                                   BackupJob.completed_at, BackupJob.legal_hold,
                                   BackupJob.verification_status, BackupJob.verified_at).where(
            BackupJob.policy_id == policy_id,
            BackupJob.backup_type == BackupType.TRANSACTION_LOG,
            BackupJob.status == BackupStatus.COMPLETED,
            BackupJob.deletion_date.is_(None)).order_by(BackupJob.completed_at)).all()
    return [{**(info or {}), "id": job_id, "completed_at": at, "legal_hold": held,
             "verified": getattr(state, "value", state) == "VERIFIED", "verified_at": when}
            for job_id, info, at, held, state, when in rows]


def held_names(job: dict[str, Any]) -> list[str]:
    """The WAL files a TRANSACTION_LOG job recorded, less those its last check found
    missing or damaged on every copy."""
    missing = set(job.get("missing") or ())
    names = [n for first, last in job.get("ranges", []) for n in _expand(first, last)]
    names += list(job.get("history", []))
    return [n for n in names if n not in missing]


SEGMENTS_PER_ID = 0x100
"""16 MiB segments: the last eight hex digits run 00..FF, then the log id goes up."""


def segno(name: str) -> int:
    return int(name[8:16], 16) * SEGMENTS_PER_ID + int(name[16:24], 16)


def segment_name(timeline: str, number: int) -> str:
    return f"{timeline}{number // SEGMENTS_PER_ID:08X}{number % SEGMENTS_PER_ID:08X}"


def _expand(first: str, last: str) -> list[str]:
    return [segment_name(first[:8], n) for n in range(segno(first), segno(last) + 1)]


def ranges(names: list[str]) -> list[list[str]]:
    """Contiguous runs of segment names, ``[[first, last], ...]`` (per timeline)."""
    out: list[list[str]] = []
    for name in sorted(n for n in names if len(n) == 24):
        if out and out[-1][1][:8] == name[:8] and segno(name) == segno(out[-1][1]) + 1:
            out[-1][1] = name
        else:
            out.append([name, name])
    return out


def _record(ctx: Context, view: PolicyView, names: list[str],
            done: dict[str, tuple[str, int, int]], urls: list[str],
            pushed: dict[str, float]) -> uuid.UUID:
    now = ctx.clock()
    job_id = uuid.uuid4()
    source = sum(done[n][1] for n in names)
    stored = sum(done[n][2] for n in names)
    with ctx.catalog.session() as s:
        s.add(BackupJob(
            id=job_id, policy_id=view.id, organization_id=view.organization_id,
            job_name=f"{view.name}-wal-{now:%Y%m%dT%H%M%S%fZ}",
            backup_type=BackupType.TRANSACTION_LOG, status=BackupStatus.COMPLETED,
            priority=view.priority, scheduled_at=now, started_at=now, completed_at=now,
            source_bytes=source, stored_bytes=stored, file_count=len(names),
            source_info={"kind": "wal", "ranges": ranges(names),
                         "history": [n for n in names if n.endswith(".history")],
                         "other": [n for n in names if len(n) != 24
                                   and not n.endswith(".history")],
                         "targets": urls,
                         # Epoch seconds each segment was pushed (in name order): a
                         # segment holds nothing committed after it was handed over, so
                         # the window ends at the push time of its last unbroken segment.
                         "pushed": [pushed.get(n) for n in names if len(n) == 24]},
            created_at=now))
    log.info("archived %d WAL files of %s (%s)", len(names), view.name,
             ", ".join(f"{a}..{b[8:]}" for a, b in ranges(names)) or "history only")
    return job_id


class _exclusive:
    """One archiver per spool at a time (a second waits for the first's pass)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / ".archiver.lock"

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


# -- what can be recovered -------------------------------------------------------------------

@dataclass
class Window:
    policy: str
    earliest: dt.datetime | None
    latest: dt.datetime | None
    bases: list[dict[str, Any]]
    timelines: dict[str, list[list[str]]]
    gaps: list[str]
    lag_seconds: float | None
    spooled: int


def window(ctx: Context, policy_name: str, spool: str | None = None) -> Window:
    """Each base backup restores to any instant from its end to the last WAL archived
    without a gap after it (segments of later timelines count: a restore follows them);
    the window is the union of those spans."""
    view = physical_policy(ctx, policy_name)
    with ctx.catalog.read() as s:
        bases = [{"id": str(j.id), "completed_at": j.completed_at, **(j.source_info or {})}
                 for j in s.execute(sa.select(BackupJob).where(
                     BackupJob.policy_id == view.id, BackupJob.backup_type == BackupType.FULL,
                     BackupJob.status == BackupStatus.COMPLETED,
                     BackupJob.deletion_date.is_(None)).order_by(BackupJob.completed_at)
                 ).scalars()]
    jobs = _wal_jobs(ctx, view.id)
    archived_at: dict[int, dt.datetime] = {}
    names: set[str] = set()
    for job in jobs:
        times = dict(zip([n for first, last in job.get("ranges", [])
                          for n in _expand(first, last)], job.get("pushed") or [],
                         strict=False))
        for name in held_names(job):
            if len(name) == 24:
                names.add(name)
                at = times.get(name)
                archived_at.setdefault(segno(name), dt.datetime.fromtimestamp(at, dt.UTC)
                                       if at else job["completed_at"])
    for base in bases:
        covered = stop_segno(base)
        while covered + 1 in archived_at:
            covered += 1
        base["restorable_until"] = archived_at.get(covered, base["completed_at"])
        if base["restorable_until"] < base["completed_at"]:
            base["restorable_until"] = base["completed_at"]
    timelines: dict[str, list[list[str]]] = {}
    for first, last in ranges(sorted(names)):
        timelines.setdefault(first[:8], []).append([first, last])
    gaps = [describe_gap(tli, segno(a[1]) + 1, segno(b[0]) - 1)
            for tli, runs in timelines.items() for a, b in itertools.pairwise(runs)]
    spans = sorted((b["completed_at"], b["restorable_until"]) for b in bases)
    for (_, end), (begin, _) in itertools.pairwise(spans):
        if begin > end:
            gaps.append(f"nothing restorable between {end.isoformat(timespec='seconds')} and "
                        f"{begin.isoformat(timespec='seconds')}")
    # The archive's lag: now minus when the newest archived segment was handed over.
    latest_wal = max(archived_at.values()) if archived_at else (
        jobs[-1]["completed_at"] if jobs else None)
    lag = max(0.0, (ctx.clock() - latest_wal).total_seconds()) if latest_wal else None
    return Window(policy_name, spans[0][0] if spans else None,
                  max((e for _, e in spans), default=None), bases, timelines, gaps, lag,
                  len(list(walspool.spooled(policy_name, spool))))


SEGMENT_BYTES = 16 << 20


def lsn_of(number: int) -> str:
    """The LSN at which segment ``number`` starts."""
    position = number * SEGMENT_BYTES
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:08X}"


def describe_gap(timeline: str, first: int, last: int) -> str:
    """A run of missing segments with the LSN range it leaves out."""
    span = (segment_name(timeline, first)[8:] if first == last else
            f"{segment_name(timeline, first)[8:]}..{segment_name(timeline, last)[8:]}")
    return (f"timeline {int(timeline, 16)}: WAL from {lsn_of(first)} to {lsn_of(last + 1)} "
            f"missing ({last - first + 1} segment{'s' if last > first else ''}: {span})")


@dataclass
class WalCheck:
    """What reading every archived WAL file a kept base backup needs found."""

    policy: str
    checked: int = 0
    bytes: int = 0
    gaps: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    """Files no copy holds intact."""
    damaged_copies: dict[str, list[str]] = field(default_factory=dict)
    """Files intact on one copy but missing or damaged on another (a repair can mend)."""
    skipped: int = 0
    """Files of passes proven intact lately, not read again (``fresh_days``)."""

    @property
    def ok(self) -> bool:
        return not self.gaps and not self.missing


def verify_wal(ctx: Context, policy_name: str, *, workers: int = 4,
               fresh_days: int | None = None) -> WalCheck:
    """WAL continuity (WAL-G's ``wal-verify``): every segment from the start of the oldest
    kept base backup to the newest one archived, on every timeline after it, is recorded and
    opens intact (tag and SHA-256) from at least one copy; every timeline after the first
    has its history file. What no copy holds intact is recorded on its TRANSACTION_LOG job
    (``missing``), so the window shrinks at once; a gap raises a ``wal_gap`` event and an
    audit entry. Reads every file (a verify, not a listing), but with ``fresh_days`` (the
    scrub flow) not those of an archiver pass proven intact within that many days: the
    continuity of the names is still checked in full, from the catalog."""
    view = physical_policy(ctx, policy_name)
    w = window(ctx, policy_name)
    jobs = _wal_jobs(ctx, view.id)
    check = WalCheck(policy_name)
    if not w.bases:
        return check
    # From the segment each base backup stops in: what comes before is inside its own tar.
    first_needed = min(stop_segno(b) for b in w.bases)
    first_tli = min(int(b.get("timeline") or 1) for b in w.bases)
    recorded: dict[str, uuid.UUID] = {}
    for job in jobs:
        for first, last in job.get("ranges", []):
            for name in _expand(first, last):
                recorded.setdefault(name, job["id"])
        for name in job.get("history", []):
            recorded.setdefault(name, job["id"])
    segments = sorted(n for n in recorded if len(n) == 24 and segno(n) >= first_needed
                      and int(n[:8], 16) >= first_tli)
    wanted = segments + sorted(n for n in recorded if n.endswith(".history"))
    fresh: set[uuid.UUID] = set()
    if fresh_days is not None:
        since = ctx.clock() - dt.timedelta(days=fresh_days)
        fresh = {j["id"] for j in jobs if j["verified"] and not j.get("missing")
                 and j["verified_at"] is not None and j["verified_at"] >= since}
    check.skipped = sum(1 for n in wanted if recorded[n] in fresh)
    wanted = [n for n in wanted if recorded[n] not in fresh]
    targets = [(t, ctx.backend(t.url, t.credentials_secret, org=view.org_slug))
               for t in Target.of_policy(view.targets)]
    unwrap = _Unwrapper(ctx, view)

    def one(name: str) -> tuple[str, bool, list[str], int]:
        wid = walobj.wal_id(view.id, name)
        bad, size, intact = [], 0, False
        for target, backend in targets:
            try:
                blob = backend.load(walobj.object_name(view.organization_id, view.id, name))
                size = len(walobj.open_(blob, wid, unwrap))
                intact = True
            except (StorageError, IntegrityError) as exc:
                bad.append(f"{target.url}: {str(exc).splitlines()[0][:200]}")
        return name, intact, bad, size

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        for name, intact, bad, size in pool.map(one, wanted):
            check.checked += 1
            check.bytes += size
            if not intact:
                check.missing.append(name)
            elif bad:
                check.damaged_copies[name] = bad
    lost = set(check.missing)
    by_tli: dict[str, list[int]] = {}
    for name in segments:
        if name not in lost:
            by_tli.setdefault(name[:8], []).append(segno(name))
    for tli in sorted({n[:8] for n in segments}):
        numbers = sorted(by_tli.get(tli, []))
        start = first_needed if int(tli, 16) == first_tli else (numbers[0] if numbers else 0)
        last = max(segno(n) for n in segments if n[:8] == tli)
        have = set(numbers)
        run: int | None = None
        for n in range(start, last + 2):
            if n not in have and n <= last:
                run = n if run is None else run
            elif run is not None:
                check.gaps.append(describe_gap(tli, run, n - 1))
                run = None
        if int(tli, 16) > 1 and f"{tli}.history" not in recorded:
            check.gaps.append(f"timeline {int(tli, 16)}: its history file {tli}.history was "
                              f"never archived: a restore cannot follow it")
        elif int(tli, 16) > 1 and f"{tli}.history" in lost:
            check.gaps.append(f"timeline {int(tli, 16)}: its history file {tli}.history is "
                              f"intact on no copy: a restore cannot follow it")
    _record_check(ctx, view, [j for j in jobs if j["id"] not in fresh], check)
    return check


def _record_check(ctx: Context, view: PolicyView, jobs: list[dict[str, Any]],
                  check: WalCheck) -> None:
    from vowvault.domain import VerificationStatus
    from vowvault.engine import webhooks

    now = ctx.clock()
    lost = set(check.missing)
    with ctx.catalog.session() as s:
        for job in jobs:
            row = s.get(BackupJob, job["id"])
            assert row is not None
            names = [n for first, last in job.get("ranges", []) for n in _expand(first, last)]
            names += list(job.get("history", []))
            missing = sorted(n for n in names if n in lost)
            info = dict(row.source_info or {})
            if missing or info.get("missing"):
                info["missing"] = missing
                row.source_info = info
            row.verification_status = (VerificationStatus.FAILED if missing
                                       else VerificationStatus.VERIFIED)
            row.verified_at = now
        if not check.ok:
            audit.record(s, actor=ctx.settings.actor, action="wal.gap", target_type="policy",
                         target_id=view.id, organization_id=view.organization_id,
                         summary=f"WAL of {view.name} is not continuous: "
                                 f"{'; '.join(check.gaps)[:600]}")
    if not check.ok:
        log.error("WAL of %s is not continuous: %s", view.name, "; ".join(check.gaps))
        webhooks.emit(ctx, view.organization_id, "wal_gap", {
            "event": "wal_gap", "policy": view.name, "gaps": check.gaps,
            "missing": check.missing[:100], "checked": check.checked}, escalation=True)


def stop_segno(base: dict[str, Any]) -> int:
    from vowvault.sources.physical import wal_segment_of

    stop, tli = base.get("stop_lsn"), int(base.get("timeline") or 1)
    return segno(wal_segment_of(stop, tli)) if stop else -1


def needed_until(ctx: Context, policy_name: str, names: list[str], when: dt.datetime
                 ) -> list[str]:
    """Of ``names``, the WAL a recovery to ``when`` can ask for: every segment handed over
    before it and, per timeline, the first one handed over at or after it (the segment
    being written at ``when`` is completed, hence pushed, later; nothing it needs is in the
    ones after), history and other files, and every segment whose push time is unknown."""
    view = physical_policy(ctx, policy_name)
    pushed: dict[str, float | None] = {}
    for job in _wal_jobs(ctx, view.id):
        segments = [n for first, last in job.get("ranges", []) for n in _expand(first, last)]
        for name, at in itertools.zip_longest(segments, job.get("pushed") or []):
            if name is not None:
                pushed[name] = at
    limit = when.timestamp()
    first_after: dict[str, str] = {}
    for name in sorted((n for n in names if len(n) == 24 and pushed.get(n) is not None
                        and pushed[n] >= limit), key=lambda n: (pushed[n], n)):
        first_after.setdefault(name[:8], name)
    keep = []
    for name in names:
        at = pushed.get(name) if len(name) == 24 else None
        if at is None or at < limit or first_after.get(name[:8]) == name:
            keep.append(name)
    return keep


def fetch_all(ctx: Context, policy_name: str, names: list[str], into: Path) -> int:
    """Prefetch: open each archived WAL file (from the first copy that has it) into
    ``into``; the number fetched."""
    view = physical_policy(ctx, policy_name)
    targets = [(t, ctx.backend(t.url, t.credentials_secret, org=view.org_slug))
               for t in Target.of_policy(view.targets)]
    into.mkdir(parents=True, exist_ok=True)
    unwrap = _Unwrapper(ctx, view)

    def one(name: str) -> bool:
        wid = walobj.wal_id(view.id, name)
        problems = []
        for target, backend in targets:
            try:
                blob = backend.load(walobj.object_name(view.organization_id, view.id, name))
                data = walobj.open_(blob, wid, unwrap)
            except (StorageError, IntegrityError) as exc:
                problems.append(f"{target.url}: {exc}")
                continue
            tmp = into / f".{name}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, into / name)
            return True
        raise StorageError(f"no copy could give WAL {name}: {'; '.join(problems)}")

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        return sum(pool.map(one, names))


def archived_names(ctx: Context, policy_name: str) -> list[str]:
    view = physical_policy(ctx, policy_name)
    return sorted(_recorded_names(ctx, view.id))


def expire(ctx: Context, job_id: uuid.UUID, policy: str, reason: str) -> dict[str, Any]:
    """Delete one archiver pass's WAL in retention's three steps: EXPIRED (nothing restores
    from it: ``window`` and ``fetch_all`` read COMPLETED jobs only), its objects deleted
    from every target it was written to, then its ``deletion_date``. Nothing is deleted
    while one of those targets is unavailable; run again, it finishes what was started."""
    from vowvault.engine import targets as target_state

    view = physical_policy(ctx, policy)
    with ctx.catalog.read() as s:
        job = s.get(BackupJob, job_id)
        assert job is not None
        info = dict(job.source_info or {})
    names = [n for first, last in info.get("ranges", []) for n in _expand(first, last)]
    names += list(info.get("history", [])) + list(info.get("other", []))
    # A file another live pass recorded too (archived again after a gap check found it
    # missing) stays: it is that pass's now.
    others = {n for j in _wal_jobs(ctx, view.id) if j["id"] != job_id for n in held_names(j)}
    names = [n for n in names if n not in others]
    secrets = {t.url: t.credentials_secret for t in Target.of_policy(view.targets)}
    urls = list(info.get("targets") or secrets)
    down = [st.problem for url in urls if not (st := target_state.check(
        ctx, url, secrets.get(url), org=view.org_slug)).available]
    if down:
        log.warning("WAL job %s of %s not deleted now: %s", job_id, policy, down[0])
        return {"backup": str(job_id), "policy": policy, "reason": reason, "held": down[0],
                "copies": []}
    with ctx.catalog.session() as s:
        row = s.get(BackupJob, job_id)
        assert row is not None
        row.status = BackupStatus.EXPIRED
    for url in urls:
        backend = ctx.backend(url, secrets.get(url), org=view.org_slug)
        backend.delete([walobj.object_name(view.organization_id, view.id, n) for n in names])
    with ctx.catalog.session() as s:
        row = s.get(BackupJob, job_id)
        assert row is not None
        row.deletion_date = ctx.clock()
        audit.record(s, actor=ctx.settings.actor, action="wal.expired", target_type="backup",
                     target_id=job_id, organization_id=view.organization_id,
                     summary=f"WAL of {policy} deleted by retention ({len(names)} files): "
                             f"{reason}")
    return {"backup": str(job_id), "policy": policy, "reason": reason, "copies": sorted(urls),
            "wal_files": len(names)}


# -- archive health ---------------------------------------------------------------------------

SPOOL_ALERT_MIB = 1024
"""Default size of a policy's spool that raises a ``wal_backlog`` alert."""
PG_WAL_ALERT_MIB = 4096
"""Default size of the server's ``pg_wal`` that raises one (WAL the server keeps because
archiving lags, before its disk fills)."""
ALERT_EVERY = dt.timedelta(hours=1)


@dataclass
class Health:
    policy: str
    lag_seconds: float | None
    """Now minus when the newest archived segment was handed over."""
    spool_files: int
    spool_bytes: int
    oldest_waiting_seconds: float | None
    pg_wal_bytes: int | None
    spool_alert_bytes: int
    pg_wal_alert_bytes: int
    pg_wal_problem: str | None = None
    alerts: list[str] = field(default_factory=list)


def health(ctx: Context, policy_name: str, spool: str | None = None, *,
           alert: bool = True) -> Health:
    """The archive's lag, the spool and ``pg_wal``; past a configured size (the policy
    source's ``spool_alert_mib``, ``pg_wal_alert_mib``) an escalated ``wal_backlog`` event
    and an audit entry, at most once an hour per policy (``alert``)."""
    view = physical_policy(ctx, policy_name)
    w = window(ctx, policy_name, spool)
    now = ctx.clock()
    files, size, oldest = 0, 0, None
    for path in walspool.spooled(policy_name, spool):
        with contextlib.suppress(OSError):
            st = path.stat()
            files, size = files + 1, size + st.st_size
            oldest = st.st_mtime if oldest is None else min(oldest, st.st_mtime)
    pg_wal, problem = _pg_wal_bytes(view)
    h = Health(policy_name, w.lag_seconds, files, size,
               max(0.0, now.timestamp() - oldest) if oldest is not None else None, pg_wal,
               int(view.source.get("spool_alert_mib") or SPOOL_ALERT_MIB) << 20,
               int(view.source.get("pg_wal_alert_mib") or PG_WAL_ALERT_MIB) << 20, problem)
    if size > h.spool_alert_bytes:
        h.alerts.append(f"the spool holds {size / 2**20:.0f} MiB in {files} files, above "
                        f"{h.spool_alert_bytes >> 20} MiB: the archiver is behind or stopped")
    if pg_wal is not None and pg_wal > h.pg_wal_alert_bytes:
        h.alerts.append(f"pg_wal holds {pg_wal / 2**20:.0f} MiB, above "
                        f"{h.pg_wal_alert_bytes >> 20} MiB: WAL is not leaving the server")
    if alert and h.alerts:
        _alert_backlog(ctx, view, h, spool)
    return h


def _pg_wal_bytes(view: PolicyView) -> tuple[int | None, str | None]:
    """The size of the server's pg_wal (needs pg_monitor or superuser), or why not."""
    import psycopg

    from vowvault.sources.base import redact

    dsn = view.source.get("dsn", "")
    password = os.environ.get(view.source["password_env"]) if view.source.get(
        "password_env") else None
    try:
        with psycopg.connect(dsn, password=password, connect_timeout=5,
                             autocommit=True) as conn:
            row = conn.execute("SELECT coalesce(sum(size), 0)::bigint FROM pg_ls_waldir()"
                               ).fetchone()
    except psycopg.Error as exc:
        return None, f"{redact(dsn)}: {str(exc).strip().splitlines()[0][:200]}"
    return int(row[0]) if row else None, None


def _alert_backlog(ctx: Context, view: PolicyView, h: Health, spool: str | None) -> None:
    from vowvault.engine import webhooks

    stamp = walspool.policy_spool(view.name, spool) / ".backlog-alerted"
    with contextlib.suppress(OSError):
        if ctx.clock().timestamp() - stamp.stat().st_mtime < ALERT_EVERY.total_seconds():
            return
    log.error("WAL backlog of %s: %s", view.name, "; ".join(h.alerts))
    with ctx.catalog.session() as s:
        audit.record(s, actor=ctx.settings.actor, action="wal.backlog", target_type="policy",
                     target_id=view.id, organization_id=view.organization_id,
                     summary=f"WAL backlog of {view.name}: {'; '.join(h.alerts)}"[:700])
    webhooks.emit(ctx, view.organization_id, "wal_backlog", {
        "event": "wal_backlog", "policy": view.name, "alerts": h.alerts,
        "spool_bytes": h.spool_bytes, "pg_wal_bytes": h.pg_wal_bytes,
        "lag_seconds": h.lag_seconds}, escalation=True)
    with contextlib.suppress(OSError):
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.touch()
        os.utime(stamp, (ctx.clock().timestamp(),) * 2)


def physical_policies(ctx: Context) -> list[str]:
    """The names of the active physical policies."""
    with ctx.catalog.read() as s:
        return list(s.execute(sa.select(BackupPolicy.name).where(
            BackupPolicy.source_kind == SourceKind.POSTGRES_PHYSICAL,
            BackupPolicy.is_active.is_(True)).order_by(BackupPolicy.name)).scalars())


def health_of_all(ctx: Context) -> list[dict[str, Any]]:
    """Archive health of every physical policy (the analytics flow's table): lag, spool
    (where this process sees it: ``VOWVAULT_WAL_SPOOL``), pg_wal, alerts raised."""
    rows = []
    for name in physical_policies(ctx):
        h = health(ctx, name)
        rows.append({"policy": name, "lag_seconds": h.lag_seconds,
                     "spool_files": h.spool_files, "spool_bytes": h.spool_bytes,
                     "pg_wal_bytes": h.pg_wal_bytes, "alerts": "; ".join(h.alerts) or None})
    return rows


SCRUB_WAL_DAYS = 7
"""The scrub flow reads each archived WAL file back at least this often."""


def verify_all(ctx: Context) -> list[dict[str, Any]]:
    """``verify_wal`` of every active physical policy (the scrub flow's WAL step)."""
    rows = []
    for name in physical_policies(ctx):
        check = verify_wal(ctx, name, fresh_days=SCRUB_WAL_DAYS)
        rows.append({"policy": name, "files_read": check.checked,
                     "files_proven_lately": check.skipped, "bytes_read": check.bytes,
                     "continuous": check.ok, "gaps": "; ".join(check.gaps) or None,
                     "intact_on_one_copy_only": len(check.damaged_copies)})
    return rows
