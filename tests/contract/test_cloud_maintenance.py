"""Lifecycle and retention on real emulators, with the catalog on the real PostgreSQL:
four months of daily backups to S3 (moto) with a copy on Azure (Azurite); tiers change on
the services themselves (minimum stays respected) and expired backups vanish from both."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from cloudemu import emulator, environment
from policytext import apply_photos_policy

from vowvault.catalog.models import BackupJob, BackupStorage
from vowvault.domain import BackupStatus, ObjectKind, Tier
from vowvault.engine import lifecycle, retention
from vowvault.engine.backup import run_backup
from vowvault.engine.context import Context
from vowvault.settings import Settings
from vowvault.storage import open_backend

START = dt.datetime(2026, 3, 2, 2, 0, tzinfo=dt.UTC)


@pytest.mark.slow
def test_months_of_backups_on_two_clouds(pg_url: str, tmp_path: Path, emulators,
                                         tmp_path_factory) -> None:
    s3, azure = (emulator(c, emulators, tmp_path_factory) for c in ("s3", "azure"))
    with environment({**s3.env(), **azure.env()}):
        primary, copy = s3.new_target(), azure.new_target()
        home = tmp_path / "home"
        ctx = Context.from_settings(Settings(home=home, database_url=pg_url, actor="t"))
        now = {"t": START}
        ctx.clock = lambda: now["t"]
        src = tmp_path / "src"
        src.mkdir()
        apply_photos_policy(ctx.catalog, src, [primary, copy], extra=[
            "retention: {days: 20, keep_weekly: 4, keep_monthly: 3, min_verified: 2}",
            "lifecycle: [{after_days: 7, tier: WARM}, {after_days: 20, tier: COLD}]"])
        for day in range(120):
            now["t"] = START + dt.timedelta(days=day)
            (src / "guests.json").write_text(f'{{"day": {day}}}')
            run_backup(ctx, "photos")
            now["t"] += dt.timedelta(hours=1)
            lifecycle.execute(ctx, lifecycle.plan(ctx))
            retention.execute(ctx, retention.plan(ctx))
        end = now["t"]
        stores = {primary: open_backend(primary), copy: open_backend(copy)}
        with ctx.catalog.session() as s:
            live = list(s.execute(sa.select(BackupJob).where(
                BackupJob.status == BackupStatus.COMPLETED)).scalars())
            assert 20 <= len(live) <= 26
            for job in live:
                for row in s.execute(sa.select(BackupStorage).where(
                        BackupStorage.backup_job_id == job.id,
                        BackupStorage.object_kind == ObjectKind.DATA)).scalars():
                    age = (end - job.created_at).days
                    in_warm = (end - job.created_at).days - 7
                    expected = Tier.HOT if age < 7 else Tier.WARM if (
                        age < 20 or in_warm < 30) else Tier.COLD
                    assert row.storage_tier == expected, (age, row.storage_url)
                    # The service agrees with the catalog.
                    assert stores[row.storage_url].stat(row.file_path).tier == expected
            expired = list(s.execute(sa.select(BackupJob).where(
                BackupJob.status == BackupStatus.EXPIRED)).scalars())
            assert len(expired) + len(live) == 120
            gone = [r for j in expired[:5] for r in s.execute(sa.select(BackupStorage).where(
                BackupStorage.backup_job_id == j.id)).scalars()]
        for row in gone:  # deleted from every copy
            assert not list(stores[row.storage_url].list(row.file_path))
        assert retention.sweep_orphans(ctx) == []
        ctx.close()
