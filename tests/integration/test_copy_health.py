"""Copies, faults made for real on real storage, through the engine in-process (the operator's
view of the same is tests/e2e/test_copy_faults.py):

- a target swapped for another repository is unavailable, not damaged;
- two copies damaged in different places restore and repair each other;
- a copy whose directory moved away is unreachable (and the other serves); objects deleted
  from a target that is there are MISSING, and repaired;
- verify of an incremental reads what it refers to: a parent's data damaged or deleted
  marks the parent and its dependants, and the next incremental starts a new full backup;
- an incremental builds only on a chain proven lately;
- the scrub reads back what is due, repairs, and reports coverage.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from trees import tree_state

from vowvault.catalog.models import BackupJob, BackupStorage
from vowvault.domain import BackupStatus, BackupType, CopyHealth
from vowvault.engine import scrub
from vowvault.engine.backup import run_backup
from vowvault.engine.context import Context
from vowvault.engine.repair import repair_backup
from vowvault.engine.restore import restore_backup
from vowvault.engine.verify import VerifyFailed, verify_backup
from vowvault.errors import RestoreError


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "album").mkdir(parents=True)
    for i in range(4):
        (src / "album" / f"IMG_{i}.jpg").write_bytes(os.urandom(1_100_000))
    (src / "guests.json").write_text('{"guest": "Ada", "table": 1}\n' * 3000)
    return src


def two_copies(policy, src: Path, tmp: Path, **kw: object) -> tuple[str, Path, Path]:
    a, b = tmp / "a", tmp / "b"
    name = policy("photos", f"{{kind: directory, path: {src}}}",
                  targets=[f"file://{a}", f"file://{b}"], **kw)
    return name, a, b


def data_of(target: Path, backup_id: str) -> Path:
    (found,) = [p for p in target.rglob("data") if p.parent.name == backup_id]
    return found


def flip(path: Path, at: int) -> None:
    blob = bytearray(path.read_bytes())
    blob[at] ^= 0x40
    path.write_bytes(bytes(blob))


def status(ctx: Context, backup_id: str) -> BackupStatus:
    with ctx.catalog.read() as s:
        job = s.get(BackupJob, uuid.UUID(backup_id))
        assert job is not None
        return job.status


def health(ctx: Context, backup_id: str) -> dict[str, CopyHealth]:
    with ctx.catalog.read() as s:
        return {r.storage_url.rsplit("/", 1)[-1]: r.health for r in s.execute(
            sa.select(BackupStorage).where(BackupStorage.backup_job_id == uuid.UUID(backup_id),
                                           BackupStorage.object_kind == "DATA")).scalars()}


def test_a_target_swapped_for_another_repository_is_unavailable(ctx: Context, policy,
                                                                 photos: Path,
                                                                 tmp_path: Path) -> None:
    nas = tmp_path / "storage"
    first = run_backup(ctx, policy("photos", f"{{kind: directory, path: {photos}}}")).job_id
    nas.rename(tmp_path / "nas-away")
    nas.mkdir()
    (nas / "vowvault-repository.json").write_text(
        '{"vowvault": "repository", "repository_id": "00000000-0000-4000-8000-000000000000",'
        ' "format": 1}')
    ctx.target_states.clear()
    report = verify_backup(ctx, first, raise_on_problem=False)
    assert report.restorable is None and report.copies[0].unreachable
    assert "holds repository 00000000" in str(report.copies[0].problem)
    assert status(ctx, first) == BackupStatus.COMPLETED


def test_two_copies_damaged_in_different_places_restore_and_repair_each_other(
        ctx: Context, policy, photos: Path, tmp_path: Path) -> None:
    name, a, b = two_copies(policy, photos, tmp_path)
    backup_id = run_backup(ctx, name).job_id
    flip(data_of(a, backup_id), 1000)        # frame 0 on the primary
    flip(data_of(b, backup_id), 3_200_000)   # a later frame on the copy
    with pytest.raises(VerifyFailed) as failed:
        verify_backup(ctx, backup_id)
    report = failed.value.report
    assert [c.health for c in report.copies] == [CopyHealth.DAMAGED, CopyHealth.DAMAGED]
    assert report.restorable and report.together
    assert status(ctx, backup_id) == BackupStatus.COMPLETED
    result = restore_backup(ctx, backup_id, to_dir=tmp_path / "out")
    assert tree_state(tmp_path / "out") == tree_state(photos)
    assert set(result.served) == {f"file://{a}", f"file://{b}"}  # each served some frames
    repaired = repair_backup(ctx, backup_id)
    assert sorted(repaired.repaired) == [f"file://{a}", f"file://{b}"]
    assert verify_backup(ctx, backup_id).intact
    assert health(ctx, backup_id) == {"a": CopyHealth.INTACT, "b": CopyHealth.INTACT}


def test_a_moved_away_copy_is_unreachable_and_deleted_objects_are_missing(
        ctx: Context, policy, photos: Path, tmp_path: Path) -> None:
    name, a, b = two_copies(policy, photos, tmp_path)
    backup_id = run_backup(ctx, name).job_id
    a.rename(tmp_path / "a-away")
    ctx.target_states.clear()
    result = restore_backup(ctx, backup_id, to_dir=tmp_path / "out")
    assert tree_state(tmp_path / "out") == tree_state(photos)
    assert result.copy_used == f"file://{b}"
    report = verify_backup(ctx, backup_id, raise_on_problem=False)
    assert report.copies[0].ok and report.copies[1].unreachable and report.restorable
    (tmp_path / "a-away").rename(a)
    ctx.target_states.clear()
    for p in data_of(a, backup_id).parent.iterdir():
        p.unlink()  # this backup's objects gone from a target that is there
    report = verify_backup(ctx, backup_id, raise_on_problem=False)
    assert {c.url: c.health for c in report.copies} == {f"file://{a}": CopyHealth.MISSING,
                                                        f"file://{b}": CopyHealth.INTACT}
    assert repair_backup(ctx, backup_id).repaired == [f"file://{a}"]
    assert verify_backup(ctx, backup_id).intact


@pytest.mark.parametrize("how", ["damaged", "deleted"])
def test_verify_reads_what_an_incremental_refers_to(ctx: Context, policy, photos: Path,
                                                    tmp_path: Path, how: str) -> None:
    name = policy("photos", f"{{kind: directory, path: {photos}}}", backup_type="incremental")
    full = run_backup(ctx, name).job_id
    (photos / "new.txt").write_text("first dance at nine\n")
    inc1 = run_backup(ctx, name).job_id
    (photos / "newer.txt").write_text("cake at ten\n")
    inc2 = run_backup(ctx, name).job_id
    assert verify_backup(ctx, inc2).intact  # every byte it refers to, read
    parent_data = data_of(tmp_path / "storage", full)
    if how == "damaged":
        flip(parent_data, 2_000_000)
    else:
        parent_data.unlink()
    with pytest.raises(VerifyFailed, match="earlier backups cannot be read"):
        verify_backup(ctx, inc2)
    assert status(ctx, full) == status(ctx, inc1) == status(ctx, inc2) == \
        BackupStatus.CORRUPTED
    with pytest.raises(RestoreError, match="CORRUPTED"):
        restore_backup(ctx, inc2, to_dir=tmp_path / "out")
    (photos / "newest.txt").write_text("speeches at eleven\n")
    assert run_backup(ctx, name).backup_type == BackupType.FULL.value  # not on that chain


def test_an_incremental_needs_a_chain_proven_lately(ctx: Context, policy, photos: Path) -> None:
    name = policy("photos", f"{{kind: directory, path: {photos}}}", backup_type="incremental",
                  extra="verification: {max_age_days: 3, scrub_cycle_days: 2}\n")
    full = run_backup(ctx, name).job_id
    with ctx.catalog.session() as s:  # the full backup was last proven four days ago
        job = s.get(BackupJob, uuid.UUID(full))
        assert job is not None
        job.verified_at = job.completed_at = ctx.clock() - dt.timedelta(days=4)
    assert run_backup(ctx, name).backup_type == BackupType.FULL.value
    newest = run_backup(ctx, name)
    assert newest.backup_type == BackupType.INCREMENTAL.value  # on the fresh full


def test_the_scrub_reads_back_what_is_due_repairs_and_reports(ctx: Context, policy,
                                                              photos: Path,
                                                              tmp_path: Path) -> None:
    name, _a, b = two_copies(policy, photos, tmp_path)
    ids = [run_backup(ctx, name).job_id for _ in range(2)]
    flip(data_of(b, ids[0]), 5000)
    with ctx.catalog.session() as s:  # last read back long ago: due
        s.execute(sa.update(BackupStorage).values(
            checked_at=ctx.clock() - dt.timedelta(days=40)))
    result = scrub.run(ctx)
    assert [(f["found"], f["repaired"]) for f in result["found"]] == [("damaged", True)]
    assert result["checked"] == 4
    (coverage,) = result["coverage"]
    assert coverage["coverage_percent"] == 100.0
    assert health(ctx, ids[0]) == {"a": CopyHealth.INTACT, "b": CopyHealth.INTACT}
    assert scrub.run(ctx, dry_run=True)["planned"] == []  # read back today: nothing due
