"""The backup flow on a real Prefect API: the six steps as task runs, the artifact, the
engine's log lines in the run's logs, flow retries recorded as retry_count."""

from __future__ import annotations

import asyncio
import contextlib
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


def test_a_permanent_error_ends_after_one_attempt_with_its_own_message(
        prefect_api, vv_home: Path, tmp_path: Path) -> None:
    """A missing source directory cannot be fixed by trying again: no retry, one job, its
    own one-line cause (not a database constraint of a second attempt)."""
    from flows.backup import backup

    apply(vv_home, tmp_path / "missing", tmp_path / "storage", retries=3)
    state = backup.with_options(retries=3, retry_delay_seconds=0)(policy="photos",
                                                                  return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="does not exist"):
        state.result()
    *_, flow_run = asyncio.run(run_details(state.state_details.flow_run_id))
    assert flow_run.run_count == 1
    with sqlite3.connect(vv_home / "catalog.db") as db:
        rows = db.execute("SELECT status, retry_count, error_message FROM backup_jobs").fetchall()
    assert len(rows) == 0 or rows == [("FAILED", 0, rows[0][2])]


class Forwarder:
    """A loopback TCP port that forwards to PostgreSQL once opened (before: nothing
    listens there, so connecting is refused, as with a server that is down)."""

    def __init__(self, target: tuple[str, int]) -> None:
        import socket

        self.target = target
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server: object = None

    def open(self) -> None:
        import socket
        import threading

        server = socket.create_server(("127.0.0.1", self.port))
        self.server = server

        def pump(a: socket.socket, b: socket.socket) -> None:
            try:
                while data := a.recv(65536):
                    b.sendall(data)
            except OSError:
                pass
            finally:
                for s in (a, b):
                    with contextlib.suppress(OSError):
                        s.shutdown(socket.SHUT_RDWR)

        def serve() -> None:
            while True:
                try:
                    client, _ = server.accept()
                except OSError:
                    return
                upstream = socket.create_connection(self.target)
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=pump, args=(a, b), daemon=True).start()

        threading.Thread(target=serve, daemon=True).start()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()  # type: ignore[attr-defined]


def test_a_source_that_comes_up_between_attempts_succeeds_on_the_retry(
        prefect_api, vv_home: Path, tmp_path: Path, pg_database) -> None:
    """The source database's server is down at the first attempt (connection refused) and
    up for the second: the retry is a new attempt of the same job, which removes what the
    first one left, and succeeds; one job, retry_count 1."""
    import threading
    import time

    import psycopg

    from flows.backup import backup
    from vowvault.catalog.db import Catalog
    from vowvault.settings import load_settings

    source = pg_database()
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("CREATE TABLE guests (id int, name text)")
        conn.execute("INSERT INTO guests SELECT g, 'guest ' || g FROM generate_series(1, 500) g")
    dbname = source.rsplit("/", 1)[1]
    forward = Forwarder(("127.0.0.1", 5432))
    text = vv_home.parent / "db.yaml"
    text.write_text(f"""version: 1
organizations: [{{slug: lumiere, name: Lumiere}}]
policies:
  - name: photos
    organization: lumiere
    source: {{kind: postgres, dsn: "postgresql://postgres@127.0.0.1:{forward.port}/{dbname}"}}
    schedule: {{cron: "0 2 * * *"}}
    peak_season: {{multiplier: 1}}
    max_retries: 1
    storage: [{{url: "file://{tmp_path}/storage"}}]
""")
    from vowvault.policies.apply import apply_policy_file
    from vowvault.policies.loader import load_policy_file

    catalog = Catalog.open(load_settings())
    apply_policy_file(catalog, load_policy_file(text), actor="tester")
    catalog.dispose()

    def open_when_the_first_attempt_failed() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            with sqlite3.connect(vv_home / "catalog.db") as db:
                if db.execute("SELECT count(*) FROM backup_jobs WHERE status = 'FAILED'"
                              ).fetchone()[0]:
                    forward.open()
                    return
            time.sleep(0.1)

    watcher = threading.Thread(target=open_when_the_first_attempt_failed, daemon=True)
    watcher.start()
    try:
        state = backup.with_options(retries=1, retry_delay_seconds=3)(policy="photos",
                                                                      return_state=True)
    finally:
        watcher.join(5)
        forward.close()
    assert state.is_completed(), state.message
    assert state.result()["status"] == "COMPLETED"
    *_, flow_run = asyncio.run(run_details(state.state_details.flow_run_id))
    assert flow_run.run_count == 2
    with sqlite3.connect(vv_home / "catalog.db") as db:
        jobs = db.execute("SELECT id, status, retry_count FROM backup_jobs").fetchall()
        rows = db.execute("SELECT status FROM backup_storage").fetchall()
    assert [(s, r) for _i, s, r in jobs] == [("COMPLETED", 1)]
    assert {s for (s,) in rows} == {"VERIFIED"}  # the first attempt's rows were replaced
