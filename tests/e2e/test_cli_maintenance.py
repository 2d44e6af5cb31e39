"""`vowvault lifecycle` and `vowvault retention` from the command line: the dry run shows
what would change and why, and changes nothing; the real run does exactly that."""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from pathlib import Path

from policytext import apply_photos_policy

from vowvault.engine.backup import run_backup
from vowvault.engine.context import Context
from vowvault.settings import Settings


def test_dry_run_plans_then_the_run_carries_them_out(cli, cli_env: dict[str, str],
                                                     tmp_path: Path) -> None:
    home = Path(cli_env["VOWVAULT_HOME"])
    ctx = Context.from_settings(Settings(home=home, database_url=f"sqlite:///{home}/catalog.db",
                                         actor="t"))
    src = tmp_path / "src"
    src.mkdir()
    apply_photos_policy(ctx.catalog, src, f"file://{tmp_path}/storage", extra=[
        "backup_type: incremental", "full_every_days: 7",
        "retention: {days: 10, keep_weekly: 5, min_verified: 1}",
        "lifecycle: [{after_days: 5, tier: WARM}, {after_days: 20, tier: COLD}]"])
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    for day in range(40):
        ctx.clock = lambda day=day: start + dt.timedelta(days=day)
        (src / f"IMG_{day:02d}.jpg").write_bytes(bytes([day]) * 1000)
        run_backup(ctx, "photos")
    ctx.close()
    db = home / "catalog.db"

    def state() -> list[tuple[str, str, str]]:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT j.id, j.status, s.storage_tier FROM backup_jobs j "
                                "JOIN backup_storage s ON s.backup_job_id = j.id "
                                "ORDER BY j.id, s.id").fetchall()

    before = state()
    plan = cli("retention", "--dry-run").stdout
    assert plan.count("DELETE") >= 20 and "no rule keeps it" in plan
    assert not re.search(r" keep +\S", plan.split("photos:")[0])  # only changes, unless --all
    summary = re.search(r"photos: 40 backups, keep (\d+), delete (\d+)", plan)
    assert summary, plan
    kept, deleted = map(int, summary.groups())
    assert "needed by kept backup" in cli("retention", "--dry-run", "--all").stdout
    moves = cli("lifecycle", "--dry-run").stdout
    assert "-> WARM" in moves and "-> COLD" in moves and "days old: rule after" in moves
    assert "not moved to COLD: retention deletes its backup" in moves
    assert state() == before  # the dry runs changed nothing

    cli("retention", "--force")  # --force: the test may run on a Saturday
    with sqlite3.connect(db) as conn:
        statuses = dict(conn.execute("SELECT status, count(*) FROM backup_jobs "
                                     "GROUP BY status").fetchall())
    assert statuses == {"COMPLETED": kept, "EXPIRED": deleted}
    cli("lifecycle", "--force")
    assert "0 to move" in cli("lifecycle", "--dry-run").stdout
    assert cli("orphans").stdout.strip().endswith("0 orphaned objects")
