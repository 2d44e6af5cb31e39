"""The backup flow on a real Prefect API: the six steps as task runs, the artifact, the
engine's log lines in the run's logs, flow retries recorded as retry_count."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest


def apply(home: Path, src: Path, storage: Path, retries: int = 0) -> None:
    from policytext import apply_photos_policy

    from vowvault.catalog.db import Catalog
    from vowvault.settings import load_settings

    catalog = Catalog.open(load_settings())
    apply_photos_policy(catalog, src, f"file://{storage}", extra=[f"max_retries: {retries}"])
    catalog.dispose()


async def run_details(flow_run_id):  # type: ignore[no-untyped-def]
    from prefect.client.orchestration import get_client
    from prefect.logging.handlers import APILogHandler

    await APILogHandler.aflush()  # logs are shipped in batches
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
        LogFilter,
        LogFilterFlowRunId,
    )

    async with get_client() as client:
        tasks = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        artifacts = await client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        logs = await client.read_logs(log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        flow_run = await client.read_flow_run(flow_run_id)
    return tasks, artifacts, logs, flow_run


def test_backup_flow_shows_its_steps_and_leaves_a_summary(prefect_api, vv_home: Path,
                                                          tmp_path: Path) -> None:
    from flows.backup import backup

    src = tmp_path / "src"
    src.mkdir()
    (src / "guests.json").write_text('{"name": "Ada"}\n' * 2000)
    apply(vv_home, src, tmp_path / "storage")
    state = backup(policy="photos", return_state=True)
    assert state.is_completed()
    result = state.result()
    assert result["status"] == "COMPLETED" and result["files"] == 1
    tasks, artifacts, logs, flow_run = asyncio.run(run_details(state.state_details.flow_run_id))
    names = {t.name.rsplit("-", 1)[0] for t in tasks}
    assert {"limits", "prepare", "snapshot", "compress", "encrypt", "upload", "verify",
            "record"} == names
    assert all(t.state.is_completed() for t in tasks)
    summary = [a for a in artifacts if a.key == "backup-result"]
    assert summary and "COMPLETED" in summary[0].data and result["job_id"] in summary[0].data
    messages = [log.message for log in logs]
    assert any("completed" in m and result["job_id"] in m for m in messages)
    assert flow_run.name == "photos"


def test_flow_retries_are_recorded_as_retry_count(prefect_api, vv_home: Path,
                                                   tmp_path: Path) -> None:
    from flows.backup import backup

    apply(vv_home, tmp_path / "missing", tmp_path / "storage", retries=1)
    state = backup.with_options(retries=1, retry_delay_seconds=0)(policy="photos",
                                                                  return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="does not exist"):
        state.result()
    with sqlite3.connect(vv_home / "catalog.db") as db:
        rows = db.execute("SELECT status, retry_count, error_message FROM backup_jobs").fetchall()
    assert len(rows) == 1  # one job per flow run, whatever the number of attempts
    status, retry_count, message = rows[0]
    assert (status, retry_count) == ("FAILED", 1) and "does not exist" in message
