"""Maintenance flows on a real Prefect API: they skip wedding days unless forced and say
so; the DR drill flow really restores, validates and times a backup."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path


def apply(src: Path, storage: Path, wedding: dt.date | None) -> None:
    from policytext import apply_photos_policy

    from vowvault.catalog.db import Catalog
    from vowvault.settings import load_settings

    weddings = (f"weddings: [{{organization: lumiere, date: {wedding}, "
                f"wedding_id: 5b0f2a4e-8c1d-4f4e-9a55-3f1c2d7e9a01}}]") if wedding else ""
    catalog = Catalog.open(load_settings())
    apply_photos_policy(catalog, src, f"file://{storage}", preamble=weddings)
    catalog.dispose()


def test_heavy_maintenance_skips_a_wedding_day_unless_forced(prefect_api, vv_home: Path,
                                                             tmp_path: Path) -> None:
    from flows.maintenance import lifecycle, retention

    apply(tmp_path, tmp_path / "storage", dt.date.today())
    for flow in (lifecycle, retention):
        skipped = flow()
        assert "wedding date" in skipped["skipped"] or "Saturday" in skipped["skipped"]
        assert flow(force=True) == {"plan": [], "done": []}


def test_dr_drill_flow_restores_validates_and_times(prefect_api, vv_home: Path,
                                                    tmp_path: Path) -> None:
    from flows.dr_drill import dr_drill
    from tasks.common import context
    from vowvault.engine.backup import run_backup

    src = tmp_path / "src"
    src.mkdir()
    (src / "guests.json").write_text('{"name": "Grace"}\n' * 500)
    apply(src, tmp_path / "storage", None)
    backup = run_backup(context(), "photos")
    result = dr_drill(policy="photos")
    assert result["backup_id"] == backup.job_id and result["passed"]
    assert result["validation"]["files"] == 1
    with sqlite3.connect(vv_home / "catalog.db") as db:
        rows = db.execute("SELECT recovery_type, status, rto_seconds, rto_target_seconds "
                          "FROM recovery_jobs").fetchall()
    assert len(rows) == 1
    kind, status, rto, target = rows[0]
    assert (kind, status, target) == ("DR_DRILL", "COMPLETED", 900) and float(rto) > 0


def test_overdue_keys_are_reported_as_events(prefect_api, vv_home: Path,
                                             tmp_path: Path) -> None:
    import asyncio

    import sqlalchemy as sa

    from flows.maintenance import analytics
    from tasks.common import context
    from vowvault.catalog.models import EncryptionKey
    from vowvault.engine.backup import run_backup

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    apply(src, tmp_path / "storage", None)
    run_backup(context(), "photos")
    with context().catalog.session() as s:
        key = s.execute(sa.select(EncryptionKey)).scalar_one()
        key.created_at = key.created_at - dt.timedelta(days=120)
        key.rotation_due_at = key.created_at + dt.timedelta(days=90)
    result = analytics()
    assert [k["organization"] for k in result["keys_due"]] == ["lumiere"]

    async def events() -> list[str]:
        from prefect.client.orchestration import get_client
        from prefect.events.filters import EventFilter, EventNameFilter

        async with get_client() as client:
            page = await client.request("POST", "/events/filter", json={"filter": EventFilter(
                event=EventNameFilter(name=["vowvault.key.rotation-due"])).model_dump(
                mode="json"), "limit": 10})
            return [e["resource"]["prefect.resource.id"] for e in page.json()["events"]]

    found: list[str] = []
    for _ in range(20):  # events are delivered asynchronously
        found = asyncio.run(events())
        if found:
            break
        import time

        time.sleep(0.5)
    assert found == ["vowvault.organization.lumiere"]
