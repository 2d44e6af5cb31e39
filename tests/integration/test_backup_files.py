"""File-tree backups through the real engine, local storage and SQLite catalog: round trips,
incremental and differential chains, and the catalog's record of each."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from trees import backup_files, make_tree, tree_state

from vowvault.catalog.models import AuditEntry, BackupJob, BackupStorage, RecoveryJob
from vowvault.domain import BackupStatus, BackupType, CopyStatus, ObjectKind
from vowvault.engine.backup import run_backup
from vowvault.engine.context import Context
from vowvault.engine.restore import restore_backup
from vowvault.engine.verify import verify_backup
from vowvault.errors import RestoreError


def source_yaml(path: Path) -> str:
    return f"{{kind: directory, path: {path}}}"


def test_full_backup_round_trip(ctx: Context, policy, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    name = policy("photos", source_yaml(src))
    result = run_backup(ctx, name)
    assert result.status == "COMPLETED" and result.backup_type == "FULL"
    assert result.files == 7
    out = tmp_path / "out"
    restored = restore_backup(ctx, result.job_id, to_dir=out)
    assert restored.validation["files"] == 7
    assert tree_state(out) == tree_state(src)
    with ctx.catalog.session() as s:
        job = s.get(BackupJob, __import__("uuid").UUID(result.job_id))
        assert job.status == BackupStatus.COMPLETED and job.completed_at is not None
        assert job.source_bytes == result.source_bytes and job.stored_bytes > 0
        # Data stored / data read: the sparse 20 MiB of zeros compress, the photo does not.
        assert 0.05 < float(job.compression_ratio) < 0.5
        assert set(job.stage_durations) >= {"snapshot", "compress", "encrypt", "upload",
                                            "verify", "record", "wall"}
        kinds = sorted(r.object_kind for r in s.execute(sa.select(BackupStorage).where(
            BackupStorage.backup_job_id == job.id)).scalars())
        assert kinds == sorted([ObjectKind.KEY, ObjectKind.DATA, ObjectKind.INDEX,
                                ObjectKind.MANIFEST])
        assert all(r.status == CopyStatus.VERIFIED for r in s.execute(
            sa.select(BackupStorage).where(BackupStorage.backup_job_id == job.id)).scalars())
        rec = s.execute(sa.select(RecoveryJob)).scalar_one()
        assert rec.status.value == "COMPLETED" and rec.duration_seconds is not None
        actions = [a.action for a in s.execute(sa.select(AuditEntry)).scalars()]
        assert {"backup.start", "backup.completed", "restore.start",
                "restore.completed"} <= set(actions)


def test_nothing_in_storage_names_or_bytes_reveals_the_data(ctx: Context, policy,
                                                           tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    secret = b"Mr and Mrs Smith, 12 Rose Lane, table 7"
    (src / "smith-guest-list.txt").write_bytes(secret * 100)
    run_backup(ctx, policy("photos", source_yaml(src)))
    for path in (tmp_path / "storage").rglob("*"):
        assert "smith" not in str(path).lower()
        if path.is_file():
            blob = path.read_bytes()
            assert b"Smith" not in blob and b"smith-guest" not in blob


def test_incremental_chain_stores_only_changes_and_restores_every_point(
        ctx: Context, policy, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    name = policy("photos", source_yaml(src), backup_type="incremental")
    first = run_backup(ctx, name)
    assert first.backup_type == "FULL"  # the first of a chain is full
    state1 = tree_state(src)
    (src / "gallery" / "raw" / "IMG_0002.jpg").write_bytes(os.urandom(500_000))
    (src / "private.txt").write_text("new seating plan\n")
    (src / "empty.txt").unlink()
    second = run_backup(ctx, name)
    assert second.backup_type == "INCREMENTAL"
    # Only the new and changed files were read; the 3 MB photo and the 20 MB file were not.
    assert second.source_bytes == 500_000 + len("new seating plan\n")
    state2 = tree_state(src)
    third = run_backup(ctx, name)
    assert third.source_bytes == 0
    for result, state in ((first, state1), (second, state2), (third, state2)):
        out = tmp_path / f"out-{result.job_id[:8]}"
        restore_backup(ctx, result.job_id, to_dir=out)
        assert tree_state(out) == state
    with ctx.catalog.session() as s:
        job = s.get(BackupJob, __import__("uuid").UUID(third.job_id))
        assert job.parent_job_id == __import__("uuid").UUID(second.job_id)
        assert set(job.source_info["references"]) == {first.job_id, second.job_id}


def test_differential_compares_with_the_last_full(ctx: Context, policy,
                                                 tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    name = policy("photos", source_yaml(src), backup_type="differential")
    full = run_backup(ctx, name)
    (src / "b.txt").write_text("bb")
    d1 = run_backup(ctx, name)
    (src / "c.txt").write_text("ccc")
    d2 = run_backup(ctx, name)
    assert (full.backup_type, d1.backup_type, d2.backup_type) == (
        "FULL", "DIFFERENTIAL", "DIFFERENTIAL")
    assert d2.source_bytes == 5  # b and c: everything since the full backup
    with ctx.catalog.session() as s:
        job = s.get(BackupJob, __import__("uuid").UUID(d2.job_id))
        assert str(job.parent_job_id) == full.job_id
        assert job.backup_type == BackupType.DIFFERENTIAL
    out = tmp_path / "out"
    restore_backup(ctx, d2.job_id, to_dir=out)
    assert tree_state(out) == tree_state(src)


def test_restore_refuses_a_non_empty_directory_without_force(ctx: Context, policy,
                                                            tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "vows.txt").write_text("I do")
    result = run_backup(ctx, policy("photos", source_yaml(src)))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(RestoreError, match="not empty"):
        restore_backup(ctx, result.job_id, to_dir=out)
    assert (out / "keep.txt").read_text() == "mine"
    restore_backup(ctx, result.job_id, to_dir=out, force=True)
    assert (out / "vows.txt").read_text() == "I do"
    with ctx.catalog.session() as s:
        statuses = sorted(r.status.value for r in s.execute(sa.select(RecoveryJob)).scalars())
    assert statuses == ["COMPLETED", "FAILED"]


def test_reverify_on_demand(ctx: Context, policy, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    result = run_backup(ctx, policy("photos", source_yaml(src)))
    report = verify_backup(ctx, result.job_id[:8])
    assert report.intact and report.copies[0].bytes_read > 0


def test_a_file_vanishing_mid_backup_fails_the_job_cleanly(ctx: Context, policy,
                                                            tmp_path: Path) -> None:
    from vowvault.errors import SourceError

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(3_000_000))
    (src / "b.bin").write_bytes(os.urandom(1000))
    name = policy("photos", source_yaml(src))

    def remove_b(what: str, done: int, total: int | None) -> None:
        (src / "b.bin").unlink(missing_ok=True)  # while a.bin is being read

    ctx.progress = remove_b
    with pytest.raises(SourceError, match=r"b\.bin vanished during the backup"):
        run_backup(ctx, name)
    with ctx.catalog.session() as s:
        job = s.execute(sa.select(BackupJob)).scalar_one()
        assert job.status == BackupStatus.FAILED
    assert not backup_files(tmp_path / "storage")


@pytest.mark.parametrize("watched", [True, False])
def test_a_tree_is_counted_for_its_progress_only_when_someone_watches(
        ctx: Context, policy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        watched: bool) -> None:
    """A progress that shows totals gets the tree's size from a pre-walk; one that does not
    (no terminal, no bar) gets none, and the tree is walked once."""
    from vowvault.sources import directory

    src = tmp_path / "src"
    (src / "album").mkdir(parents=True)
    for i in range(4):
        (src / "album" / f"IMG_{i}.jpg").write_bytes(os.urandom(200_000))
    name = policy("photos", source_yaml(src))
    walks = []
    real_walk = directory.walk

    def counted_walk(*args, **kw):  # type: ignore[no-untyped-def]
        walks.append(1)
        return real_walk(*args, **kw)

    monkeypatch.setattr(directory, "walk", counted_walk)
    totals: list[int | None] = []

    class Watch:
        shows_totals = watched

        def __call__(self, what: str, done: int, total: int | None) -> None:
            if what == "read":
                totals.append(total)

    ctx.progress = Watch()
    run_backup(ctx, name)
    assert totals and set(totals) == ({800_000} if watched else {None})
    assert len(walks) == (2 if watched else 1)


def test_ctrl_c_during_a_backup_stops_it_cleanly(ctx: Context, policy, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A real SIGINT while the stages run: they stop, the job ends FAILED with nothing left
    on storage, and the interrupt reaches the caller as an interrupt."""
    import signal
    import threading

    from vowvault.sources.directory import DirectorySnapshot

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("first")
    (src / "slow.bin").write_bytes(os.urandom(1 << 20))
    reading, release = threading.Event(), threading.Event()
    original = DirectorySnapshot._file

    def slow_file(self, found, entry):  # type: ignore[no-untyped-def]
        if found.rel == "slow.bin":
            reading.set()
            release.wait(10)
        return (yield from original(self, found, entry))

    monkeypatch.setattr(DirectorySnapshot, "_file", slow_file)

    def operator() -> None:
        assert reading.wait(10)
        os.kill(os.getpid(), signal.SIGINT)
        threading.Timer(0.5, release.set).start()

    # Python's own Ctrl-C handler, whatever an earlier test in this worker left installed
    # (Prefect's in-process runs install handlers of their own).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=operator, daemon=True).start()
    name = policy("photos", source_yaml(src))
    try:
        with pytest.raises(KeyboardInterrupt):
            run_backup(ctx, name)
    finally:
        signal.signal(signal.SIGINT, previous)
    with ctx.catalog.session() as s:
        job = s.execute(sa.select(BackupJob)).scalar_one()
        assert (job.status, job.error_message) == (BackupStatus.FAILED, "interrupted (Ctrl-C)")
    assert not backup_files(tmp_path / "storage")


@pytest.mark.parametrize("backup_type", ["incremental", "differential"])
def test_chains_restart_with_a_full_backup_so_old_chains_can_expire(
        ctx: Context, policy, tmp_path: Path, backup_type: str) -> None:
    import datetime as dt

    from vowvault.engine import retention

    src = tmp_path / "src"
    src.mkdir()
    name = policy("photos", source_yaml(src), backup_type=backup_type,
                  extra="full_every_days: 3\n"
                        "retention: {days: 1, keep_last: 2, min_verified: 0}\n")
    start = dt.datetime(2026, 3, 2, 1, tzinfo=dt.UTC)
    ids, types = [], []
    for day in range(9):
        ctx.clock = lambda day=day: start + dt.timedelta(days=day)
        (src / f"IMG_{day}.jpg").write_bytes(os.urandom(1000))
        result = run_backup(ctx, name)
        ids.append(result.job_id)
        types.append(result.backup_type)
    inc = backup_type.upper()
    assert types == ["FULL", inc, inc] * 3
    (plan,) = retention.plan(ctx)
    kept = {d.id for d in plan.decisions if d.keep}
    assert kept == set(ids[6:])  # the newest two and the full backup they build on
    retention.execute(ctx, [plan])
    restored = tmp_path / "restored"
    restore_backup(ctx, ids[-1], to_dir=restored)
    assert sorted(p.name for p in restored.iterdir()) == sorted(p.name for p in src.iterdir())


def test_the_manifest_names_what_a_rebuilt_catalog_needs(ctx: Context, policy,
                                                         tmp_path: Path) -> None:
    """Ids alone do not say an organization's slug and name or the policy's name: every
    manifest (encrypted) carries them, for a catalog rebuilt from storage."""
    from vowvault.engine import objects

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    result = run_backup(ctx, policy("photos", source_yaml(src)))
    with ctx.catalog.read() as s:
        stored = objects.read_stored(s, __import__("uuid").UUID(result.job_id))
    manifest = objects.open_reader(ctx, stored).manifest
    assert manifest.sections["catalog"] == {
        "organization": "lumiere", "organization_name": "lumiere", "policy": "photos",
        "source_kind": "DIRECTORY", "key_provider": "local"}
