"""A year of daily backups with the daily lifecycle and retention runs (clock injected):
at the end exactly the backups the rules keep remain, in the tiers they should be in, with
nothing in storage that the catalog does not account for; the retention executor killed at
each step and re-run; the orphan sweep."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from trees import backup_files

from vowvault.catalog.models import BackupJob, BackupStorage
from vowvault.domain import BackupStatus, CopyStatus, ObjectKind, Tier
from vowvault.engine import lifecycle, retention
from vowvault.engine.backup import run_backup
from vowvault.engine.context import Context
from vowvault.engine.restore import restore_backup

START = dt.datetime(2026, 1, 1, 2, 0, tzinfo=dt.UTC)
RULES = ("retention: {days: 14, keep_weekly: 6, keep_monthly: 6, keep_yearly: 2, "
         "min_verified: 3}\n"
         "lifecycle: [{after_days: 7, tier: WARM}, {after_days: 60, tier: COLD}, "
         "{after_days: 200, tier: ARCHIVE}]\n")


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def expected_keep(days: list[dt.datetime], now: dt.datetime) -> set[dt.date]:
    """The rules above, written out independently of the planner."""
    keep = {d.date() for d in days if now - d < dt.timedelta(days=14)}
    newest_first = sorted(days, reverse=True)
    for key, count in ((lambda d: d.isocalendar()[:2], 6), (lambda d: (d.year, d.month), 6),
                       (lambda d: d.year, 2)):
        seen: list[object] = []
        for d in newest_first:
            if key(d) not in seen and len(seen) < count:
                seen.append(key(d))
                keep.add(d.date())
    keep |= {d.date() for d in newest_first[:3]}
    return keep


def expected_tier(backup_day: dt.datetime, now: dt.datetime) -> Tier:
    age = (now - backup_day).days
    return Tier.ARCHIVE if age >= 200 else Tier.COLD if age >= 60 else \
        Tier.WARM if age >= 7 else Tier.HOT


@pytest.mark.slow
def test_a_year_of_daily_backups(ctx: Context, policy, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    clock = Clock(START)
    ctx.clock = clock
    name = policy("photos", f"{{kind: directory, path: {src}}}", extra=RULES)
    days = []
    for i in range(365):
        clock.now = START + dt.timedelta(days=i)
        (src / "guests.json").write_text(f'{{"day": {i}}}\n')
        run_backup(ctx, name)
        days.append(clock.now)
        clock.now += dt.timedelta(hours=1)  # the maintenance runs of the day
        lifecycle.execute(ctx, lifecycle.plan(ctx))
        retention.execute(ctx, retention.plan(ctx))
    now = clock.now
    with ctx.catalog.session() as s:
        live = list(s.execute(sa.select(BackupJob).where(
            BackupJob.status == BackupStatus.COMPLETED)).scalars())
        gone = list(s.execute(sa.select(BackupJob).where(
            BackupJob.status == BackupStatus.EXPIRED)).scalars())
        assert {j.completed_at.date() for j in live} == expected_keep(days, now)
        assert len(live) + len(gone) == 365 and all(j.deletion_date for j in gone)
        for j in live:
            data = s.execute(sa.select(BackupStorage).where(
                BackupStorage.backup_job_id == j.id,
                BackupStorage.object_kind == ObjectKind.DATA)).scalar_one()
            assert data.storage_tier == expected_tier(j.completed_at, now), j.completed_at
        kept_names = {r.file_path for r in s.execute(sa.select(BackupStorage).where(
            BackupStorage.status.in_([CopyStatus.STORED, CopyStatus.VERIFIED]))).scalars()}
    on_disk = {str(p.relative_to(tmp_path / "storage")) for p in
               backup_files(tmp_path / "storage") if not p.name.endswith(".vvmeta")}
    assert on_disk == kept_names  # nothing left behind, nothing missing
    assert retention.sweep_orphans(ctx) == []
    oldest = min(live, key=lambda j: j.completed_at)
    out = tmp_path / "oldest"
    restore_backup(ctx, str(oldest.id), to_dir=out)
    day = (oldest.completed_at - START).days
    assert (out / "guests.json").read_text() == f'{{"day": {day}}}\n'


@pytest.mark.parametrize("crash_at", ["expired", "deleted-one-copy", "recorded"])
def test_retention_killed_at_each_step_and_rerun(ctx: Context, policy, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 crash_at: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    clock = Clock(START)
    ctx.clock = clock
    copies = [f"file://{tmp_path / 'a'}", f"file://{tmp_path / 'b'}"]
    name = policy("photos", f"{{kind: directory, path: {src}}}", targets=copies,
                  extra="retention: {days: 3, min_verified: 1}\n")
    ids = []
    for i in range(8):
        clock.now = START + dt.timedelta(days=i)
        (src / "f.txt").write_text(str(i))
        ids.append(run_backup(ctx, name).job_id)
    clock.now += dt.timedelta(hours=1)
    plans = retention.plan(ctx)
    doomed = {d.id for p in plans for d in p.deletions}
    assert len(doomed) == 5

    def crash(step: str) -> None:
        if step == crash_at:
            raise retention.Crash(step)

    if crash_at == "recorded":
        real = retention.audit.record
        calls = {"n": 0}

        def failing_record(*a: object, **k: object) -> object:
            calls["n"] += 1
            if calls["n"] == 2:  # the second backup's final record fails
                raise retention.Crash("recorded")
            return real(*a, **k)

        monkeypatch.setattr(retention.audit, "record", failing_record)
    else:
        monkeypatch.setattr(retention, "_step", crash)
    with pytest.raises(retention.Crash):
        retention.execute(ctx, plans)
    monkeypatch.undo()
    # Whatever the crash left, every backup not doomed is whole and restorable...
    for job_id in set(ids) - doomed:
        assert_whole(ctx, job_id)
    # ...and a re-run finishes the job.
    retention.execute(ctx, retention.plan(ctx))
    with ctx.catalog.session() as s:
        statuses = {str(j.id): (j.status, j.deletion_date is not None)
                    for j in s.execute(sa.select(BackupJob)).scalars()}
    assert {i for i, (st, _) in statuses.items() if st == BackupStatus.COMPLETED} == \
        set(ids) - doomed
    assert all(statuses[i] == (BackupStatus.EXPIRED, True) for i in doomed)
    assert retention.sweep_orphans(ctx) == []
    restore_backup(ctx, ids[-1], to_dir=tmp_path / "out")


def assert_whole(ctx: Context, job_id: str) -> None:
    with ctx.catalog.session() as s:
        job = s.get(BackupJob, uuid.UUID(job_id))
        assert job.status == BackupStatus.COMPLETED
        for row in s.execute(sa.select(BackupStorage).where(
                BackupStorage.backup_job_id == job.id)).scalars():
            assert row.status == CopyStatus.VERIFIED
            assert ctx.backend(row.storage_url, org=None).stat(row.file_path).size == \
                row.file_size_bytes


def test_orphan_sweep_reports_and_removes_only_orphans(ctx: Context, policy,
                                                      tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a")
    result = run_backup(ctx, policy("photos", f"{{kind: directory, path: {src}}}"))
    with ctx.catalog.read() as s:
        job = s.get(BackupJob, uuid.UUID(result.job_id))
        org, pol = job.organization_id, job.policy_id
    store = ctx.backend(f"file://{tmp_path / 'storage'}", org=None)
    leftover = f"{org}/{pol}/{uuid.uuid4()}/data"
    store.save(leftover, [b"leftover"])
    # Not vowvault's layout, or another organization's ids: never an orphan of this one.
    foreign = ["operator-notes.txt", "org/policy/crashed-backup/data",
               f"{uuid.uuid4()}/{pol}/{uuid.uuid4()}/data", f"{org}/{pol}/../../escape"]
    for name in foreign[:3]:
        store.save(name, [b"not ours"])
    found = retention.sweep_orphans(ctx)
    assert [o["object"] for o in found] == [leftover]
    retention.sweep_orphans(ctx, remove=True)
    assert retention.sweep_orphans(ctx) == []
    for name in foreign[:3]:
        assert store.load(name) == b"not ours"
    restore_backup(ctx, result.job_id, to_dir=tmp_path / "out")


def test_lifecycle_does_not_move_what_retention_is_about_to_delete(
        ctx: Context, policy, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    clock = Clock(START)
    ctx.clock = clock
    name = policy("photos", f"{{kind: directory, path: {src}}}",
                  extra="retention: {days: 10, min_verified: 0}\n"
                        "lifecycle: [{after_days: 5, tier: COLD}]\n")
    ids = []
    for i in range(12):
        clock.now = START + dt.timedelta(days=i)
        (src / "guests.json").write_text(f'{{"day": {i}}}\n')
        ids.append(run_backup(ctx, name).job_id)
    clock.now += dt.timedelta(hours=1)  # days 0 and 1 are past 10 days, 2 to 6 past 5
    with ctx.catalog.session() as s:
        job_of = {str(o.id): str(o.backup_job_id) for o in s.execute(sa.select(BackupStorage))
                  .scalars()}
    moves = {job_of[m.id]: m for _, m in lifecycle.plan(ctx)}
    assert {j for j, m in moves.items() if m.move} == set(ids[2:7])
    assert all(moves[j].reason == "not moved to COLD: retention deletes its backup"
               for j in ids[:2])
