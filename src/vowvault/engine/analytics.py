"""Daily analytics with pandas over the catalog: per policy and day, jobs and success rate,
compliance with the schedule, bytes per tier and provider, compression, duration and
throughput percentiles, drills and their recovery times, key age; and a 90-day capacity
forecast per tier.

Compliance counts successful runs against the runs the policy's schedules promised in the
window (``scheduling.expected_runs``): the same rule, and the same numbers, as the SQL
function ``check_backup_compliance`` (a test holds them equal on PostgreSQL).
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from vowvault.catalog.models import (
    BackupAnalytics,
    BackupJob,
    BackupPolicy,
    BackupStorage,
    EncryptionKey,
    Organization,
    RecoveryJob,
)
from vowvault.domain import BackupStatus, CopyStatus, KeyStatus, RecoveryType
from vowvault.engine.context import Context
from vowvault.scheduling import expected_runs

MiB = 1024 * 1024


def catalog_frames(ctx: Context, until: dt.datetime) -> dict[str, pd.DataFrame]:
    """The catalog tables analytics needs, as data frames (one read each)."""
    with ctx.catalog.read() as s:
        def frame(query: Any) -> pd.DataFrame:
            result = s.execute(query)
            return pd.DataFrame(result.fetchall(), columns=list(result.keys()))

        return {
            "policies": frame(sa.select(
                BackupPolicy.id.label("policy_id"), BackupPolicy.name.label("policy"),
                BackupPolicy.organization_id, Organization.slug.label("organization"),
                BackupPolicy.effective_schedules, BackupPolicy.timezone,
                BackupPolicy.is_active, BackupPolicy.rto_target_minutes)
                .join(Organization, Organization.id == BackupPolicy.organization_id)),
            "jobs": frame(sa.select(
                BackupJob.id, BackupJob.policy_id, BackupJob.status, BackupJob.started_at,
                BackupJob.completed_at, BackupJob.created_at, BackupJob.source_bytes,
                BackupJob.stored_bytes, BackupJob.compression_ratio)
                .where(BackupJob.created_at < until)),
            "storage": frame(sa.select(
                BackupStorage.backup_job_id, BackupStorage.storage_provider,
                BackupStorage.storage_tier, BackupStorage.file_size_bytes,
                BackupStorage.created_at, BackupStorage.deletion_date, BackupStorage.status,
                BackupJob.policy_id)
                .join(BackupJob, BackupJob.id == BackupStorage.backup_job_id)
                .where(BackupStorage.created_at < until)),
            "drills": frame(sa.select(
                RecoveryJob.id, RecoveryJob.status, RecoveryJob.rto_seconds,
                RecoveryJob.rto_target_seconds, RecoveryJob.rpo_seconds, RecoveryJob.created_at,
                RecoveryJob.completed_at, BackupJob.policy_id)
                .join(BackupJob, BackupJob.id == RecoveryJob.backup_job_id)
                .where(RecoveryJob.recovery_type == RecoveryType.DR_DRILL,
                       RecoveryJob.created_at < until)),
            "keys": frame(sa.select(EncryptionKey.organization_id, EncryptionKey.created_at,
                                    EncryptionKey.status)),
        }


def _utc(series: pd.Series) -> pd.Series:
    return pd.to_datetime(series, utc=True)


def day_window(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def daily(ctx: Context, day: dt.date, frames: dict[str, pd.DataFrame] | None = None
          ) -> pd.DataFrame:
    """One row per policy for one UTC day (the numbers generate_backup_analytics stores)."""
    start, end = day_window(day)
    f = frames or catalog_frames(ctx, end)
    jobs = f["jobs"].copy()
    rows = []
    if not jobs.empty:
        jobs["when"] = _utc(jobs["completed_at"].fillna(jobs["created_at"]))
        jobs["status"] = jobs["status"].map(lambda s: getattr(s, "value", s))
        jobs = jobs[(jobs["when"] >= start) & (jobs["when"] < end)]
    storage = f["storage"].copy()
    if not storage.empty:
        storage["created_at"] = _utc(storage["created_at"])
        storage["deletion_date"] = _utc(storage["deletion_date"])
        storage["tier"] = storage["storage_tier"].map(lambda t: getattr(t, "value", t))
        live = storage[(storage["created_at"] < end) & (storage["deletion_date"].isna()
                                                        | (storage["deletion_date"] >= end))]
        live = live[live["status"].map(lambda s: getattr(s, "value", s)).isin(
            [CopyStatus.STORED.value, CopyStatus.VERIFIED.value])]
    else:
        live = storage
    drills = f["drills"].copy()
    if not drills.empty:
        drills["created_at"] = _utc(drills["created_at"])
        drills = drills[(drills["created_at"] >= start) & (drills["created_at"] < end)]
    keys = f["keys"].copy()
    for p in f["policies"].itertuples():
        pj = jobs[jobs["policy_id"] == p.policy_id] if not jobs.empty else jobs
        ok = pj[pj["status"] == BackupStatus.COMPLETED.value] if not pj.empty else pj
        finished = pj[pj["status"].isin(["COMPLETED", "FAILED", "CORRUPTED"])] \
            if not pj.empty else pj
        if not p.is_active and pj.empty:
            continue
        expected = expected_runs(p.effective_schedules, p.timezone, start, end)
        n_ok = len(ok)
        durations = ((_utc(ok["completed_at"]) - _utc(ok["started_at"]))
                     .dt.total_seconds()) if n_ok else pd.Series(dtype=float)
        throughput = (ok["source_bytes"].astype(float) / MiB / durations.replace(0, np.nan)) \
            if n_ok else pd.Series(dtype=float)
        pl = live[live["policy_id"] == p.policy_id] if not live.empty else live
        pd_drills = drills[drills["policy_id"] == p.policy_id] if not drills.empty else drills
        passed = pd_drills[pd_drills["status"].map(lambda s: getattr(s, "value", s))
                           == "COMPLETED"] if not pd_drills.empty else pd_drills
        org_keys = keys[(keys["organization_id"] == p.organization_id)
                        & (keys["status"].map(lambda s: getattr(s, "value", s))
                           == KeyStatus.ACTIVE.value)] if not keys.empty else keys
        rows.append({
            "organization_id": p.organization_id, "organization": p.organization,
            "policy_id": p.policy_id, "policy": p.policy, "analytics_date": day,
            "total_jobs": len(pj), "successful_jobs": n_ok,
            "failed_jobs": int((pj["status"] == "FAILED").sum()) if not pj.empty else 0,
            "corrupted_jobs": int((pj["status"] == "CORRUPTED").sum()) if not pj.empty else 0,
            "success_rate_percent": round(n_ok * 100 / len(finished), 2)
            if len(finished) else None,
            "expected_runs": expected,
            "compliance_percentage": 100.0 if expected == 0
            else round(min(n_ok, expected) * 100 / expected, 2),
            "source_bytes": int(ok["source_bytes"].fillna(0).sum()) if n_ok else 0,
            "stored_bytes": int(ok["stored_bytes"].fillna(0).sum()) if n_ok else 0,
            "bytes_by_tier": {k: int(v) for k, v in pl.groupby("tier")["file_size_bytes"]
                              .sum().items()} if not pl.empty else {},
            "bytes_by_provider": {k: int(v) for k, v in pl.groupby("storage_provider")[
                "file_size_bytes"].sum().items()} if not pl.empty else {},
            "avg_compression_ratio": float(ok["compression_ratio"].astype(float).mean())
            if n_ok and ok["compression_ratio"].notna().any() else None,
            "duration_p50_seconds": _pct(durations, 50),
            "duration_p95_seconds": _pct(durations, 95),
            "throughput_p50_mib_s": _pct(throughput, 50),
            "throughput_p95_mib_s": _pct(throughput, 95),
            "drills_run": len(pd_drills), "drills_passed": len(passed),
            "rto_avg_seconds": float(passed["rto_seconds"].astype(float).mean())
            if len(passed) and passed["rto_seconds"].notna().any() else None,
            "key_age_days": int((end - _utc(org_keys["created_at"]).min()).days)
            if not org_keys.empty else None,
        })
    return pd.DataFrame(rows)


def _pct(series: pd.Series, q: int) -> float | None:
    clean = series.dropna()
    if clean.empty:
        return None
    # Linear interpolation, like PostgreSQL's percentile_cont.
    return round(float(np.percentile(clean.to_numpy(), q)), 3)


def compliance(ctx: Context, days_back: int = 7, as_of: dt.datetime | None = None
               ) -> dict[str, float]:
    """Per active policy: successful runs in (as_of - days_back, as_of] against the runs its
    schedules promised, in percent (= SQL check_backup_compliance)."""
    as_of = as_of or ctx.clock()
    start = as_of - dt.timedelta(days=days_back)
    f = catalog_frames(ctx, as_of + dt.timedelta(seconds=1))
    jobs = f["jobs"]
    out = {}
    for p in f["policies"].itertuples():
        if not p.is_active:
            continue
        expected = expected_runs(p.effective_schedules, p.timezone, start, as_of)
        if jobs.empty:
            ok = 0
        else:
            done = _utc(jobs["completed_at"])
            status = jobs["status"].map(lambda s: getattr(s, "value", s))
            ok = int(((jobs["policy_id"] == p.policy_id) & (status == "COMPLETED")
                      & (done > start) & (done <= as_of)).sum())
        out[p.policy] = 100.0 if expected == 0 else round(min(ok, expected) * 100 / expected, 2)
    return out


def store(ctx: Context, table: pd.DataFrame) -> int:
    """Write (or replace) the day's rows in backup_analytics."""
    keep = [c.name for c in BackupAnalytics.__table__.columns
            if c.name not in ("id", "created_at", "forecast")]
    n = 0
    with ctx.catalog.session() as s:
        for row in table.to_dict("records"):
            existing = s.execute(sa.select(BackupAnalytics).where(
                BackupAnalytics.policy_id == row["policy_id"],
                BackupAnalytics.analytics_date == row["analytics_date"])).scalar_one_or_none()
            values = {k: _db(row[k]) for k in keep if k in row}
            if existing is None:
                s.add(BackupAnalytics(id=uuid.uuid4(), **values))
            else:
                for k, v in values.items():
                    setattr(existing, k, v)
            n += 1
    return n


def _db(value: Any) -> Any:
    if isinstance(value, float):
        return None if np.isnan(value) else Decimal(str(round(value, 4)))
    if isinstance(value, np.integer):
        return int(value)
    return value


def storage_history(ctx: Context, days: int, until: dt.date) -> pd.DataFrame:
    """Bytes stored per tier at the end of each day (live objects then)."""
    end = day_window(until)[1]
    storage = catalog_frames(ctx, end)["storage"]
    index = pd.date_range(end=pd.Timestamp(until), periods=days, freq="D")
    if storage.empty:
        return pd.DataFrame(index=index)
    storage["created_at"] = _utc(storage["created_at"])
    storage["deletion_date"] = _utc(storage["deletion_date"])
    storage["tier"] = storage["storage_tier"].map(lambda t: getattr(t, "value", t))
    out = {}
    for day in index:
        stop = pd.Timestamp(day.date() + dt.timedelta(days=1), tz="UTC")
        live = storage[(storage["created_at"] < stop) & (storage["deletion_date"].isna()
                                                         | (storage["deletion_date"] >= stop))]
        out[day] = live.groupby("tier")["file_size_bytes"].sum()
    return pd.DataFrame(out).T.fillna(0).astype("int64")


def forecast(history: pd.DataFrame, days: int = 90) -> pd.DataFrame:
    """A linear fit of the last 30 days per tier, projected ``days`` ahead (never below 0).
    Peak-season growth shows in the fit once it happens; it is not guessed."""
    if history.empty:
        return history
    recent = history.tail(30)
    x = np.arange(len(recent))
    future = pd.date_range(start=history.index[-1] + pd.Timedelta(days=1), periods=days,
                           freq="D")
    out = {}
    for tier in history.columns:
        y = recent[tier].to_numpy(dtype=float)
        slope = np.polyfit(x, y, 1)[0] if len(x) > 1 else 0.0
        # The trend of the last 30 days, continued from today's actual value.
        out[tier] = np.maximum(0, y[-1] + slope * np.arange(1, days + 1))
    return pd.DataFrame(out, index=future)


def run_daily(ctx: Context, day: dt.date) -> dict[str, Any]:
    """Compute and store one day; the table and the capacity forecast for artifacts."""
    table = daily(ctx, day)
    stored = store(ctx, table) if not table.empty else 0
    history = storage_history(ctx, 60, day)
    ahead = forecast(history)
    projection = {tier: int(ahead[tier].iloc[-1]) for tier in ahead.columns} \
        if not ahead.empty else {}
    return {"rows": stored, "table": table, "forecast_90_days": projection,
            "today": {t: int(v) for t, v in history.iloc[-1].items()}
            if not history.empty and len(history.columns) else {}}
