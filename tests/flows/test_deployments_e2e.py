"""Policies as deployments on a real `prefect server start`, run by a real process worker
(priority order observed) or by `vowvault serve` on the embedded default."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from prefectproc import BIN, OFFLINE, stop

ROOT = Path(__file__).resolve().parents[2]


def policy_file(path: Path, src: Path, bulk_cron: str = "0 2 * * *") -> Path:
    path.write_text(textwrap.dedent(f"""\
        version: 1
        organizations: [{{slug: lumiere, name: Lumiere, vendor_type: photographer}}]
        policies:
          - name: bulk
            organization: lumiere
            source: {{kind: directory, path: {src}}}
            priority: low
            schedule: {{cron: "{bulk_cron}", timezone: Europe/London}}
            peak_season: {{multiplier: 1}}
            storage: [{{url: "file://{path.parent}/storage"}}]
          - name: urgent
            organization: lumiere
            source: {{kind: directory, path: {src}}}
            priority: critical
            schedule: {{cron: "0 3 * * *", timezone: Europe/London}}
            peak_season: {{multiplier: 1}}
            storage: [{{url: "file://{path.parent}/storage"}}]
          - name: vows
            organization: lumiere
            source: {{kind: directory, path: {src}}}
            priority: normal
            wedding_day_priority: true
            schedule: {{cron: "0 1 * * *", timezone: Europe/London}}
            storage: [{{url: "file://{path.parent}/storage"}}]
          - name: old
            organization: lumiere
            source: {{kind: directory, path: {src}}}
            schedule: {{cron: "0 4 * * *"}}
            is_active: false
            storage: [{{url: "file://{path.parent}/storage"}}]
        """))
    return path


def run(env: dict[str, str], *args: str) -> str:
    proc = subprocess.run([str(BIN / "vowvault"), *args], env=env, capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


async def _state(url: str) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}):
        async with get_client() as client:
            deployments = await client.read_deployments()
            queues = await client.read_work_queues(work_pool_name="vvpool")
            limits = await client.read_global_concurrency_limits()
            return {"deployments": {d.name: d for d in deployments},
                    "queues": {q.name: q.priority for q in queues},
                    "limits": {x.name: x.limit for x in limits}}


async def _create_runs(url: str, names: list[str]) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}):
        async with get_client() as client:
            out = []
            for name in names:
                d = await client.read_deployment_by_name(f"backup/{name}")
                out.append(await client.create_flow_run_from_deployment(
                    d.id, parameters={"policy": name}))
                await asyncio.sleep(0.2)  # queued in this order
            return out


async def _runs(url: str, ids: list[Any]) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}):
        async with get_client() as client:
            return [await client.read_flow_run(i) for i in ids]


@pytest.mark.slow
def test_deploy_to_a_work_pool_and_run_by_priority(prefect_server: str,
                                                   tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "guests.json").write_text('{"name": "Ada"}\n' * 100)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "VOWVAULT_"))}
    env.update(OFFLINE, PREFECT_API_URL=prefect_server, PREFECT_HOME=str(tmp_path / "ph"),
               VOWVAULT_HOME=str(tmp_path / "home"))
    run(env, "policies", "apply", str(policy_file(tmp_path / "p.yaml", src)))
    out = run(env, "deploy", "--work-pool", "vvpool")
    assert "created queue emergency (priority 1)" in out
    state = asyncio.run(_state(prefect_server))
    assert state["queues"] == {"emergency": 1, "critical": 2, "high": 3, "normal": 4,
                               "low": 5, "default": 1} or {
        k: v for k, v in state["queues"].items() if k != "default"} == {
        "emergency": 1, "critical": 2, "high": 3, "normal": 4, "low": 5}
    d = state["deployments"]
    assert {"bulk", "urgent", "vows", "vows-wedding-day", "old", "lifecycle", "retention",
            "gdpr-erasure", "analytics", "dr-drill"} <= set(d)
    assert (d["bulk"].work_queue_name, d["urgent"].work_queue_name,
            d["vows"].work_queue_name, d["vows-wedding-day"].work_queue_name) == (
        "low", "critical", "normal", "high")
    assert d["old"].paused and not d["bulk"].paused
    assert {"org:lumiere", "priority:low", "type:full"} <= set(d["bulk"].tags)
    assert "wedding-day" in d["vows-wedding-day"].tags
    assert d["bulk"].schedules[0].schedule.cron == "0 2 * * *"
    assert "BYDAY=SA" in d["vows-wedding-day"].schedules[0].schedule.rrule
    assert any(name.startswith("vowvault-target-file-") for name in state["limits"])

    # Redeploying a changed policy changes its deployment.
    run(env, "policies", "apply", str(policy_file(tmp_path / "p.yaml", src, "30 5 * * *")))
    run(env, "deploy", "--work-pool", "vvpool")
    d = asyncio.run(_state(prefect_server))["deployments"]
    assert [s.schedule.cron for s in d["bulk"].schedules] == ["30 5 * * *"]

    # Two low-priority runs queued first, then a critical one; one worker, one at a time.
    runs = asyncio.run(_create_runs(prefect_server, ["bulk", "bulk", "urgent"]))
    worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "vvpool",
                               "--limit", "1"], env={**env, "PREFECT_WORKER_QUERY_SECONDS":
                                                     "1"}, cwd=ROOT, start_new_session=True,
                              stdout=open(tmp_path / "worker.log", "wb"),  # noqa: SIM115
                              stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while True:
            done = asyncio.run(_runs(prefect_server, [r.id for r in runs]))
            if all(r.state.is_final() for r in done):
                break
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(2)
    finally:
        stop(worker)
    assert all(r.state.is_completed() for r in done), (tmp_path / "worker.log").read_text()
    bulk1, bulk2, urgent = done
    assert urgent.start_time < bulk1.start_time and urgent.start_time < bulk2.start_time
    with sqlite3.connect(tmp_path / "home" / "catalog.db") as db:
        jobs = db.execute("SELECT flow_run_id, status FROM backup_jobs").fetchall()
    assert sorted(jobs) == sorted((str(r.id), "COMPLETED") for r in done)

    # A limit that does not exist must never silently limit nothing: the run fails.
    limit = next(n for n in asyncio.run(_state(prefect_server))["limits"]
                 if n.startswith("vowvault-target-"))
    asyncio.run(_delete_limit(prefect_server, limit))
    (refused,) = asyncio.run(_create_runs(prefect_server, ["urgent"]))
    worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "vvpool",
                               "--limit", "1"], env={**env, "PREFECT_WORKER_QUERY_SECONDS":
                                                     "1"}, cwd=ROOT, start_new_session=True,
                              stdout=open(tmp_path / "worker2.log", "wb"),  # noqa: SIM115
                              stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 240
        while not (final := asyncio.run(_runs(prefect_server, [refused.id]))[0]).state.is_final():
            assert time.monotonic() < deadline
            time.sleep(2)
    finally:
        stop(worker)
    assert final.state.is_failed()
    log = (tmp_path / "worker2.log").read_text()
    assert limit in log or "concurrency limit" in log.lower()


async def _delete_limit(url: str, name: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}):
        async with get_client() as client:
            await client.delete_global_concurrency_limit_by_name(name)


@pytest.mark.slow
def test_deploy_then_serve_runs_a_scheduled_backup_on_the_embedded_default(
        tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "vows.txt").write_text("I do")
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "VOWVAULT_"))}
    env.update(OFFLINE, VOWVAULT_HOME=str(home))
    (tmp_path / "p.yaml").write_text(textwrap.dedent(f"""\
        version: 1
        organizations: [{{slug: o, name: O}}]
        policies:
          - name: every-minute
            organization: o
            source: {{kind: directory, path: {src}}}
            schedule: {{cron: "* * * * *"}}
            peak_season: {{multiplier: 1}}
            storage: [{{url: "file://{tmp_path}/storage"}}]
        """))
    run(env, "policies", "apply", str(tmp_path / "p.yaml"))
    run(env, "deploy")
    serve = subprocess.Popen([str(BIN / "vowvault"), "serve"], env=env, cwd=ROOT,
                             stdout=open(tmp_path / "serve.log", "wb"),  # noqa: SIM115
                             stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 360
        while True:
            with sqlite3.connect(home / "catalog.db") as db:
                done = db.execute("SELECT count(*) FROM backup_jobs WHERE status = "
                                  "'COMPLETED'").fetchone()[0]
            if done:
                break
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(2)
    finally:
        stop(serve)
    log = (tmp_path / "serve.log").read_text()
    assert "started a local Prefect server" in log
    assert not (home / "prefect" / "api-url").exists()  # the server went with serve
