"""Repository markers: a new target gets one on first use; a target the catalog knew
before markers existed (migration 0004) gets one only once its objects are checked against
the catalog; an empty mount point never does."""

from __future__ import annotations

import os
from pathlib import Path

import sqlalchemy as sa

from vowvault.catalog.models import StorageTarget
from vowvault.engine import targets
from vowvault.engine.backup import run_backup
from vowvault.engine.context import Context
from vowvault.engine.verify import verify_backup
from vowvault.repository.marker import NAME


def source_yaml(src: Path) -> str:
    return f"{{kind: directory, path: {src}}}"


def forget_markers(ctx: Context, storage: Path) -> None:
    """The state a catalog upgraded from 0003 is in: backups recorded, no markers."""
    (storage / NAME).unlink()
    with ctx.catalog.session() as s:
        s.execute(sa.delete(StorageTarget))
    ctx.target_states.clear()


def test_first_use_writes_and_records_a_marker(ctx: Context, policy, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "vows.txt").write_text("I do")
    run_backup(ctx, policy("photos", source_yaml(src)))
    with ctx.catalog.read() as s:
        (row,) = s.execute(sa.select(StorageTarget)).scalars()
    assert str(row.marker_id) in (tmp_path / "storage" / NAME).read_text()
    assert row.available


def test_a_known_target_without_markers_is_adopted_once_its_backups_are_there(
        ctx: Context, policy, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "vows.txt").write_bytes(os.urandom(5000))
    name = policy("photos", source_yaml(src))
    first = run_backup(ctx, name)
    forget_markers(ctx, tmp_path / "storage")
    assert verify_backup(ctx, first.job_id).intact  # objects checked, marker written
    assert (tmp_path / "storage" / NAME).exists()
    run_backup(ctx, name)


def test_a_known_target_whose_backups_are_not_there_gets_no_marker(
        ctx: Context, policy, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "vows.txt").write_bytes(os.urandom(5000))
    name = policy("photos", source_yaml(src))
    first = run_backup(ctx, name)
    storage = tmp_path / "storage"
    forget_markers(ctx, storage)
    storage.rename(tmp_path / "away")
    storage.mkdir()  # an empty mount point
    state = targets.check(ctx, f"file://{storage}", org=None, first_use=True)
    assert not state.available and "1 of them are not there" in str(state.problem)
    assert list(storage.iterdir()) == []
    report = verify_backup(ctx, first.job_id, raise_on_problem=False)
    assert report.restorable is None and report.copies[0].unreachable
