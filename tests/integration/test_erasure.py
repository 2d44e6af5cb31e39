"""GDPR erasure: a restore of a backup taken before an erasure request returns the data
without the subject (file trees and databases); status says which backups still hold it;
purge rewrites file-tree backups (and those depending on them) without it."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from trees import tree_state

from vowvault.catalog.models import BackupJob, RecoveryJob
from vowvault.domain import BackupStatus
from vowvault.engine import erasure
from vowvault.engine.backup import run_backup
from vowvault.engine.context import Context
from vowvault.engine.drill import run_drill
from vowvault.engine.restore import restore_backup
from vowvault.engine.verify import verify_backup
from vowvault.errors import ConfigError


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 6, 1, 9, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def tick(self, hours: int = 1) -> None:
        self.now += dt.timedelta(hours=hours)


def gallery(root: Path) -> Path:
    for couple in ("smith", "jones"):
        d = root / "weddings" / couple
        d.mkdir(parents=True)
        (d / "IMG_1.jpg").write_bytes(couple.encode() * 10000)
        (d / "guests.json").write_text(f'{{"couple": "{couple}"}}')
    (root / "README").write_text("studio")
    return root


def test_restore_replays_erasure_of_files(ctx: Context, policy, tmp_path: Path) -> None:
    clock = Clock()
    ctx.clock = clock
    src = gallery(tmp_path / "src")
    name = policy("photos", f"{{kind: directory, path: {src}}}", backup_type="incremental")
    before = run_backup(ctx, name)
    clock.tick()
    erasure.request(ctx, "lumiere", "couple", "smith-2027", paths=["weddings/smith"], rows=[])
    clock.tick()
    out = tmp_path / "out"
    result = restore_backup(ctx, before.job_id, to_dir=out)
    assert not (out / "weddings" / "smith").exists()
    assert (out / "weddings" / "jones" / "IMG_1.jpg").exists() and (out / "README").exists()
    # weddings/smith/IMG_1.jpg and guests.json; the folder weddings/smith counted apart
    applied = result.erasures_applied[0]
    assert applied["files_withheld"] == 2 and applied["folders_withheld"] == 1
    with ctx.catalog.session() as s:
        rec = s.execute(sa.select(RecoveryJob)).scalar_one()
        assert rec.erasures_applied[0]["subject"] == "smith-2027"
    # A drill replays it too.
    drill = run_drill(ctx, "photos", before.job_id)
    assert drill.validation["withheld"] == 2 and drill.validation["withheld_folders"] == 1


def test_status_and_purge_of_file_tree_backups(ctx: Context, policy, tmp_path: Path) -> None:
    clock = Clock()
    ctx.clock = clock
    src = gallery(tmp_path / "src")
    name = policy("photos", f"{{kind: directory, path: {src}}}", backup_type="incremental")
    full = run_backup(ctx, name)
    clock.tick()
    (src / "weddings" / "jones" / "IMG_2.jpg").write_bytes(b"new" * 1000)
    inc = run_backup(ctx, name)  # references the full backup's smith files
    clock.tick()
    erasure.request(ctx, "lumiere", "couple", "smith-2027", paths=["weddings/smith/**"],
                    rows=[])
    holders = {r["backup"] for r in erasure.status(ctx, "smith-2027")}
    assert holders == {full.job_id, inc.job_id}
    plan = erasure.purge(ctx, "smith-2027", dry_run=True)
    assert {p["backup"] for p in plan} == {full.job_id, inc.job_id}
    done = erasure.purge(ctx, "smith-2027")
    assert len(done) == 2
    assert erasure.status(ctx, "smith-2027") == []
    with ctx.catalog.session() as s:
        old = s.get(BackupJob, uuid.UUID(inc.job_id))
        assert old.status == BackupStatus.EXPIRED and old.deletion_date is not None
        new_ids = [d["replaced_by"] for d in done]
        news = [s.get(BackupJob, uuid.UUID(i)) for i in new_ids]
        assert all(j.status == BackupStatus.COMPLETED for j in news)
        assert sorted(j.created_at for j in news) == [full_created(s, full), inc_created(s, inc)]
    for new_id in new_ids:
        assert verify_backup(ctx, new_id).intact
    newest = max(done, key=lambda d: d["backup"] == inc.job_id)["replaced_by"]
    out = tmp_path / "out"
    restore_backup(ctx, newest, to_dir=out)
    expected = {k: v for k, v in tree_state(src).items() if "smith" not in k}
    assert tree_state(out) == expected
    # Nothing of the couple is left in storage, even encrypted: their data objects are gone.
    for path in (tmp_path / "storage").rglob("data"):
        assert old.id.hex not in path.as_posix().replace("-", "")


def full_created(s, full):  # type: ignore[no-untyped-def]
    return s.get(BackupJob, uuid.UUID(full.job_id)).created_at


def inc_created(s, inc):  # type: ignore[no-untyped-def]
    return s.get(BackupJob, uuid.UUID(inc.job_id)).created_at


def test_database_restore_replays_row_erasure(ctx: Context, policy, pg_database) -> None:
    clock = Clock()
    ctx.clock = clock
    src = pg_database()
    with psycopg.connect(src, autocommit=True) as conn:
        conn.execute("CREATE TABLE guests (couple_id text, name text);"
                     "INSERT INTO guests VALUES ('smith', 'Ada'), ('smith', 'Alan'), "
                     "('jones', 'Grace')")
    before = run_backup(ctx, policy("venue", f"{{kind: postgres, dsn: '{src}'}}"))
    clock.tick()
    erasure.request(ctx, "lumiere", "couple", "smith-2027", paths=[],
                    rows=["public.guests:couple_id=smith"])
    clock.tick()
    rows = erasure.status(ctx, "smith-2027")
    assert rows and rows[0]["holds"] == "rows (database dump)"
    target = pg_database()
    result = restore_backup(ctx, before.job_id, to_database=target, force=True)
    assert result.erasures_applied == [{"request": result.erasures_applied[0]["request"],
                                        "subject": "smith-2027", "table": "public.guests",
                                        "rows_deleted": 2}]
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT name FROM guests").fetchall() == [("Grace",)]
    with pytest.raises(ConfigError, match=r"schema\.table:column=value"):
        erasure.request(ctx, "lumiere", "couple", "x", paths=[], rows=["nonsense"])
