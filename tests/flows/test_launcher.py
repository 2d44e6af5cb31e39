"""deployments/launcher.py: flow runs of a process work pool forked from a warm process, on
a real `prefect server start` with a real `prefect worker`; and its mechanics with real
processes (exit statuses, signals, the private directory, stale code)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prefectproc import BIN, OFFLINE, stop

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from deployments import launcher  # noqa: E402


def _policy(path: Path, src: Path, dsn: str) -> Path:
    path.write_text(textwrap.dedent(f"""\
        version: 1
        organizations: [{{slug: lumiere, name: Lumiere, vendor_type: photographer}}]
        policies:
          - name: photos
            organization: lumiere
            source: {{kind: directory, path: {src}}}
            schedule: {{cron: "0 2 * * *"}}
            storage: [{{url: "file://{path.parent}/storage"}}]
          - name: guests
            organization: lumiere
            source: {{kind: postgres, dsn: "{dsn}"}}
            schedule: {{cron: "0 3 * * *"}}
            storage: [{{url: "file://{path.parent}/storage"}}]
        """))
    return path


async def _create(url: str, name: str, job_variables: dict[str, Any] | None = None) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}):
        async with get_client() as client:
            d = await client.read_deployment_by_name(name)
            return await client.create_flow_run_from_deployment(
                d.id, parameters=d.parameters, job_variables=job_variables)


async def _read(url: str, run_id: Any) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: url}):
        async with get_client() as client:
            return await client.read_flow_run(run_id)


def _until(what: Callable[[], Any], timeout: float, about: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := what()):
        assert time.monotonic() < deadline, about()
        time.sleep(0.5)
    return got


def _final(url: str, run_id: Any, about: Callable[[], str], timeout: float = 180) -> Any:
    return _until(lambda: (r := asyncio.run(_read(url, run_id))).state.is_final() and r,
                  timeout, about)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state != "Z"


def test_runs_are_forked_warm_and_end_as_a_fresh_engine_would(
        prefect_server: str, tmp_path: Path, pg_database: Callable[[], str],
        request: pytest.FixtureRequest) -> None:
    runtime = Path(tempfile.mkdtemp(prefix="vv-xdg-"))  # short: a socket path is too
    request.addfinalizer(lambda: shutil.rmtree(runtime, ignore_errors=True))
    src = tmp_path / "src"
    src.mkdir()
    (src / "album.jpg").write_bytes(os.urandom(300_000))
    dsn = pg_database()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE guests (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO guests SELECT g, 'guest ' || g FROM generate_series(1, 50) g")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "VOWVAULT_"))}
    env.update(OFFLINE, PREFECT_API_URL=prefect_server, PREFECT_HOME=str(tmp_path / "ph"),
               VOWVAULT_HOME=str(tmp_path / "home"), XDG_RUNTIME_DIR=str(runtime),
               VOWVAULT_LAUNCHER_IDLE="120")
    for args in (["policies", "apply", str(_policy(tmp_path / "p.yaml", src, dsn))],
                 ["deploy", "--work-pool", "forkpool"]):
        done = subprocess.run([str(BIN / "vowvault"), *args], env=env, capture_output=True,
                              text=True, timeout=300, cwd=ROOT)
        assert done.returncode == 0, done.stdout + done.stderr
    log = tmp_path / "worker.log"
    worker = subprocess.Popen([str(BIN / "prefect"), "worker", "start", "--pool", "forkpool"],
                              env={**env, "PREFECT_WORKER_QUERY_SECONDS": "1"}, cwd=ROOT,
                              start_new_session=True, stdout=log.open("wb"),
                              stderr=subprocess.STDOUT)
    warm_dir = runtime / "vowvault"

    def about() -> str:
        logs = "".join(p.read_text() for p in warm_dir.glob("*.log")) if warm_dir.exists() \
            else ""
        return log.read_text()[-3000:] + "\n--- warm:\n" + logs[-2000:]

    try:
        # The first run is a fresh engine and starts the warm process; the next are forked.
        first = asyncio.run(_create(prefect_server, "backup/photos"))
        assert _final(prefect_server, first.id, about).state.is_completed(), about()
        _until(lambda: list(warm_dir.glob("*.sock")), 120, about)
        (warm_log,) = warm_dir.glob("*.log")
        forked = [asyncio.run(_create(prefect_server, "backup/photos")) for _ in range(2)]
        for run in forked:
            assert _final(prefect_server, run.id, about).state.is_completed(), about()
        for run in forked:
            assert f"forked flow run {run.id} as pid" in warm_log.read_text(), about()
        assert f"forked flow run {first.id}" not in warm_log.read_text()
        with sqlite3.connect(tmp_path / "home" / "catalog.db") as db:
            rows = dict(db.execute("SELECT flow_run_id, status FROM backup_jobs").fetchall())
        assert {str(r.id) for r in [first, *forked]} <= set(rows)
        assert {rows[str(r.id)] for r in [first, *forked]} == {"COMPLETED"}
        # The run's output reached the worker's log stream (the client's stdout).
        assert "Beginning flow run" in log.read_text()

        # Another environment is never forked from this one (a fingerprint of its own).
        other = asyncio.run(_create(prefect_server, "backup/photos", {
            "env": {"VOWVAULT_HOME": str(tmp_path / "home"), "VOWVAULT_LOG_LEVEL": "DEBUG"}}))
        assert _final(prefect_server, other.id, about).state.is_completed(), about()
        assert f"forked flow run {other.id}" not in warm_log.read_text()

        # A run stuck in pg_dump (the table locked) is cancelled from the UI: the worker's
        # SIGTERM goes to the launcher's client, which passes it to the forked run.
        locker = psycopg.connect(dsn)
        locker.execute("LOCK TABLE guests IN ACCESS EXCLUSIVE MODE")
        try:
            stuck = asyncio.run(_create(prefect_server, "backup/guests"))
            marker = f"forked flow run {stuck.id} as pid "
            text = _until(lambda: marker in (t := warm_log.read_text()) and t, 120, about)
            run_pid = int(text.split(marker, 1)[1].split()[0])
            client = _until(lambda: [p for p in _children(worker.pid)
                                     if "deployments.launcher" in _cmdline(p)], 60, about)
            assert _alive(run_pid)
            os.kill(client[0], signal.SIGTERM)
            _until(lambda: not _alive(run_pid), 60, about)
            final = _final(prefect_server, stuck.id, about)
            assert not final.state.is_completed()

            # The client killed outright (SIGKILL: no word to anyone): its run dies too.
            killed = asyncio.run(_create(prefect_server, "backup/guests"))
            marker = f"forked flow run {killed.id} as pid "
            text = _until(lambda: marker in (t := warm_log.read_text()) and t, 120, about)
            run_pid = int(text.split(marker, 1)[1].split()[0])
            client = _until(lambda: [p for p in _children(worker.pid)
                                     if "deployments.launcher" in _cmdline(p)], 60, about)
            os.kill(client[0], signal.SIGKILL)
            _until(lambda: not _alive(run_pid), 30, about)
        finally:
            locker.close()
        with sqlite3.connect(tmp_path / "home" / "catalog.db") as db:
            status = dict(db.execute("SELECT flow_run_id, status FROM backup_jobs").fetchall())
        assert status.get(str(stuck.id)) != "COMPLETED"
        assert status.get(str(killed.id)) != "COMPLETED"
    finally:
        stop(worker)
    # The worker gone, the warm process ends and takes its socket with it.
    _until(lambda: not list(warm_dir.glob("*.sock")), 60, about)


# ------------------------------------------------------------------- mechanics, no Prefect

def test_fingerprint_ignores_only_prefects_per_run_variables() -> None:
    env = {"PATH": "/bin", "PREFECT_API_URL": "http://127.0.0.1:1/api", "VOWVAULT_HOME": "/h"}
    fp = launcher.fingerprint(env, "/work", "/py")
    assert launcher.fingerprint({**env, "PREFECT__FLOW_RUN_ID": "x",
                                 "PREFECT__CONTROL_TOKEN": "t"}, "/work", "/py") == fp
    for changed in ({**env, "PREFECT_API_URL": "http://127.0.0.1:2/api"},
                    {**env, "VOWVAULT_HOME": "/other"}, {**env, "AWS_PROFILE": "x"},
                    {k: v for k, v in env.items() if k != "PATH"},
                    {**env, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}):
        assert launcher.fingerprint(changed, "/work", "/py") != fp
    assert launcher.fingerprint(env, "/elsewhere", "/py") != fp
    assert launcher.fingerprint(env, "/work", "/other-python") != fp


def test_the_runtime_directory_must_be_private_and_ours(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    made = launcher.runtime_dir()
    assert made == tmp_path / "vowvault" and made.stat().st_mode & 0o777 == 0o700
    made.chmod(0o755)  # readable by others: never used
    assert launcher.runtime_dir() is None
    made.chmod(0o700)
    deep = tmp_path / ("d" * 90)
    deep.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(deep))  # too long for a socket's path
    assert launcher.runtime_dir() is None
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    made.rmdir()
    made.symlink_to(tmp_path)  # a link planted in its place: never followed
    assert launcher.runtime_dir() is None


def test_a_changed_or_vanished_module_file_is_stale(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("x = 1\n")
    stamp = {str(module): (module.stat().st_size, module.stat().st_mtime_ns)}
    assert not launcher._stale(stamp)
    os.utime(module, ns=(0, module.stat().st_mtime_ns + 1))
    assert launcher._stale(stamp)
    module.unlink()
    assert launcher._stale({str(tmp_path / "m.py"): stamp[str(module)]})


@pytest.mark.parametrize("how", ["exit 0", "exit 3", "SIGTERM", "SIGKILL"])
def test_the_client_ends_as_its_run_ended(how: str) -> None:
    """The wait status a run ended with becomes the client's own (what the worker sees)."""
    child = {"exit 0": "import sys; sys.exit(0)", "exit 3": "import sys; sys.exit(3)",
             "SIGTERM": "import os, signal; os.kill(os.getpid(), signal.SIGTERM)",
             "SIGKILL": "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"}[how]
    script = textwrap.dedent(f"""\
        import os, subprocess, sys
        sys.path.insert(0, {str(ROOT)!r})
        from deployments import launcher
        p = subprocess.Popen([sys.executable, "-c", {child!r}])
        _, status = os.waitpid(p.pid, 0)
        launcher._exit_like(status)
        """)
    code = subprocess.run([sys.executable, "-c", script], timeout=60).returncode
    assert code == {"exit 0": 0, "exit 3": 3, "SIGTERM": -signal.SIGTERM,
                    "SIGKILL": -signal.SIGKILL}[how]


def test_off_or_without_a_private_directory_it_is_prefects_own_engine(tmp_path: Path) -> None:
    """VOWVAULT_LAUNCHER=off (or an unsafe runtime directory): the client execs
    `python -m prefect.engine`, which, given no flow run, says so and exits 1."""
    bad = tmp_path / "rt"
    (bad / "vowvault").mkdir(parents=True)
    (bad / "vowvault").chmod(0o777)
    for extra in ({"VOWVAULT_LAUNCHER": "off"}, {"XDG_RUNTIME_DIR": str(bad)}):
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("PREFECT__")},
               **OFFLINE, **extra, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
        done = subprocess.run([sys.executable, "-m", "deployments.launcher"], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1
        assert "Invalid flow run id" in done.stdout + done.stderr
        assert not list((bad / "vowvault").glob("*.sock"))
