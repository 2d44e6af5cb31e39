"""Analytics with pandas agree with the SQL functions on PostgreSQL (compliance, the
daily numbers), fill backup_analytics, and forecast capacity."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
import pytest

from vowvault.engine import analytics
from vowvault.engine.backup import run_backup
from vowvault.engine.context import Context
from vowvault.settings import Settings

START = dt.datetime(2026, 6, 1, 2, 0, tzinfo=dt.UTC)


@pytest.fixture
def pg_ctx(pg_url: str, tmp_path: Path):
    ctx = Context.from_settings(Settings(home=tmp_path / "home", database_url=pg_url,
                                         actor="t"))
    yield ctx
    ctx.close()


def test_python_and_sql_agree(pg_ctx: Context, policy_on, pg_url: str, tmp_path: Path) -> None:
    now = {"t": START}
    pg_ctx.clock = lambda: now["t"]
    src = tmp_path / "src"
    src.mkdir()
    policy_on(pg_ctx, "daily", f"{{kind: directory, path: {src}}}", cron="0 2 * * *")
    policy_on(pg_ctx, "hourly", f"{{kind: directory, path: {src}}}", cron="0 * * * *")
    # Ten days of the daily policy with two missed days; the hourly one runs only twice.
    for day in range(10):
        now["t"] = START + dt.timedelta(days=day)
        (src / "f").write_text(str(day))
        if day not in (3, 7):
            run_backup(pg_ctx, "daily")
    for hour in (1, 2):
        now["t"] = START + dt.timedelta(days=9, hours=hour)
        run_backup(pg_ctx, "hourly")
    as_of = START + dt.timedelta(days=9, hours=12)
    python = analytics.compliance(pg_ctx, 7, as_of)
    with psycopg.connect(pg_url) as conn:
        sql = {name: float(pct) for name, pct in conn.execute(
            "SELECT * FROM check_backup_compliance(7, %s)", (as_of,))}
    assert python == sql
    assert python["daily"] == round(5 * 100 / 7, 2)
    day = (START + dt.timedelta(days=9)).date()
    table = analytics.daily(pg_ctx, day).set_index("policy")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SELECT generate_backup_analytics(%s)", (day,))
        rows = conn.execute(
            "SELECT p.name, a.total_jobs, a.successful_jobs, a.expected_runs, "
            "a.compliance_percentage, a.bytes_by_tier FROM backup_analytics a "
            "JOIN backup_policies p ON p.id = a.policy_id").fetchall()
    for name, total, ok, expected, pct, by_tier in rows:
        got = table.loc[name]
        assert (got.total_jobs, got.successful_jobs, got.expected_runs) == (total, ok, expected)
        assert got.compliance_percentage == float(pct)
        assert got.bytes_by_tier == by_tier


def test_daily_rows_are_stored_and_capacity_is_forecast(ctx: Context, policy,
                                                         tmp_path: Path) -> None:
    now = {"t": START}
    ctx.clock = lambda: now["t"]
    src = tmp_path / "src"
    src.mkdir()
    policy("photos", f"{{kind: directory, path: {src}}}")
    for day in range(20):
        now["t"] = START + dt.timedelta(days=day)
        (src / f"photo-{day}.jpg").write_bytes(b"x" * 100_000 + bytes([day]))
        run_backup(ctx, "photos")
    result = analytics.run_daily(ctx, (START + dt.timedelta(days=19)).date())
    assert result["rows"] == 1
    row = result["table"].iloc[0]
    assert row.successful_jobs == 1 and row.compliance_percentage == 100.0
    assert row.duration_p50_seconds is not None and row.key_age_days == 19
    # Storage grows every day: the forecast keeps growing.
    assert result["forecast_90_days"]["HOT"] > result["today"]["HOT"] > 0
    assert analytics.run_daily(ctx, (START + dt.timedelta(days=19)).date())["rows"] == 1
