"""Maintenance flows on a real Prefect API: they skip wedding days unless forced and say
so; the DR drill flow really restores, validates and times a backup."""

from __future__ import annotations

import datetime as dt
import sqlite3
import textwrap
from pathlib import Path


def apply(src: Path, storage: Path, wedding: dt.date | None) -> None:
    from vowvault.catalog.db import Catalog
    from vowvault.policies.apply import apply_policy_file
    from vowvault.policies.loader import parse_policy_text
    from vowvault.settings import load_settings

    weddings = (f"weddings: [{{organization: lumiere, date: {wedding}, "
                f"wedding_id: 5b0f2a4e-8c1d-4f4e-9a55-3f1c2d7e9a01}}]") if wedding else ""
    text = textwrap.dedent(f"""\
        version: 1
        organizations: [{{slug: lumiere, name: Lumiere}}]
        {weddings}
        policies:
          - name: photos
            organization: lumiere
            source: {{kind: directory, path: {src}}}
            schedule: {{cron: "0 2 * * *"}}
            peak_season: {{multiplier: 1}}
            storage: [{{url: "file://{storage}"}}]
        """)
    catalog = Catalog.open(load_settings())
    apply_policy_file(catalog, parse_policy_text(text, "t.yaml", {}), actor="tester")
    catalog.dispose()


def test_heavy_maintenance_skips_a_wedding_day_unless_forced(prefect_api, vv_home: Path,
                                                             tmp_path: Path) -> None:
    from flows.maintenance import lifecycle, retention

    apply(tmp_path, tmp_path / "storage", dt.date.today())
    for flow in (lifecycle, retention):
        skipped = flow()
        assert "wedding date" in skipped["skipped"] or "Saturday" in skipped["skipped"]
        assert flow(force=True) == {"plan": []}


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
