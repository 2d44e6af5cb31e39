"""Leases, not clocks: the reaper under a clock ten minutes fast (``faketime``) beside a live
backup leaves it alone, on both catalogs; a job whose lease ran out is reaped, and the
process it was taken from can never record it as done."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from cliutil import VOWVAULT, write_policy
from trees import backup_files

MiB = 1 << 20
pytestmark = pytest.mark.skipif(shutil.which("faketime") is None,
                                reason="faketime is not installed (apt install faketime)")


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, cli_env: dict[str, str]) -> dict[str, str]:
    if request.param == "postgresql":
        return {**cli_env, "VOWVAULT_DATABASE_URL": request.getfixturevalue("pg_url")}
    return {**cli_env, "VOWVAULT_DATABASE_URL":
            f"sqlite:///{Path(cli_env['VOWVAULT_HOME']) / 'catalog.db'}"}


def vv(env: dict[str, str], *args: str, faked: str | None = None
       ) -> subprocess.CompletedProcess[str]:
    cmd = [VOWVAULT, *args] if faked is None else ["faketime", "-f", faked, VOWVAULT, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def sql(env: dict[str, str], query: str) -> list[tuple[object, ...]]:
    engine = sa.create_engine(env["VOWVAULT_DATABASE_URL"].replace(
        "postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(query))
            return list(result) if result.returns_rows else []
    finally:
        engine.dispose()


def live_backup(env: dict[str, str], tmp_path: Path) -> subprocess.Popen[str]:
    src, storage = tmp_path / "src", tmp_path / "storage"
    src.mkdir()
    with open(src / "film.mp4", "wb") as f:
        for _ in range(200):
            f.write(os.urandom(MiB))
    policy = write_policy(tmp_path / "p.yaml", f"{{kind: directory, path: {src}}}", storage)
    assert vv(env, "policies", "apply", str(policy)).returncode == 0
    proc = subprocess.Popen([VOWVAULT, "backup", "run", "photos", "--direct"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".tmp-data.") for p in storage.rglob(".tmp-*")):
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGSTOP)  # alive, silent: no heartbeat while stopped
    return proc


def test_a_fast_clock_reaps_nothing_alive(env: dict[str, str], tmp_path: Path) -> None:
    proc = live_backup(env, tmp_path)
    try:
        reaped = vv(env, "backup", "reap", faked="+10m")
        assert reaped.returncode == 0 and "reaped 0" in reaped.stdout, reaped.stderr
        if "postgresql" in env["VOWVAULT_DATABASE_URL"]:
            # As if it ran on another host: only its lease, kept in the catalog server's
            # clock, can tell, and ten minutes of skew here do not shorten it.
            sql(env, "UPDATE backup_jobs SET worker_host = 'elsewhere'")
            again = vv(env, "backup", "reap", faked="+10m")
            assert "reaped 0" in again.stdout, again.stderr
            sql(env, "UPDATE backup_jobs SET worker_host = "
                     f"'{os.uname().nodename}'")
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "COMPLETED" in out, err
    assert sql(env, "SELECT status FROM backup_jobs") == [("COMPLETED",)]


def test_a_reaped_job_is_never_recorded_as_done(env: dict[str, str], tmp_path: Path) -> None:
    if "sqlite" in env["VOWVAULT_DATABASE_URL"]:
        pytest.skip("one host: a live pid on it is never reaped (the other test)")
    proc = live_backup(env, tmp_path)
    try:  # another host's job whose lease has run out
        sql(env, "UPDATE backup_jobs SET worker_host = 'elsewhere', "
                 "lease_expires_at = now() - interval '1 minute'")
        reaped = vv(env, "backup", "reap")
        assert "reaped 1" in reaped.stdout, reaped.stderr
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "taken from this process" in err, (out, err)
    assert [r[0] for r in sql(env, "SELECT status FROM backup_jobs")] == ["FAILED"]
    assert backup_files(tmp_path / "storage") == []


def test_restores_are_reaped_like_jobs(cli, cli_env, tmp_path: Path, pg_url: str) -> None:
    """A restore whose owner is gone (here: a pid that no longer exists on this host)."""
    env = {**cli_env, "VOWVAULT_DATABASE_URL": pg_url}
    src = tmp_path / "src"
    src.mkdir()
    (src / "vows.txt").write_text("I do\n")
    assert vv(env, "policies", "apply", str(write_policy(
        tmp_path / "p.yaml", f"{{kind: directory, path: {src}}}", tmp_path / "s"))).returncode == 0
    backup_id = vv(env, "backup", "run", "photos", "--direct").stdout.split()[1]
    dead = subprocess.Popen(["true"])
    dead.wait()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO recovery_jobs (organization_id, backup_job_id, recovery_type, status,"
            " worker_host, worker_pid, owner_token, lease_expires_at) SELECT organization_id,"
            " id, 'FULL_RESTORE', 'IN_PROGRESS', %s, %s, 'x', now() + interval '5 minutes'"
            " FROM backup_jobs WHERE id = %s", (os.uname().nodename, dead.pid, backup_id))
    assert "reaped 1" in vv(env, "backup", "reap").stdout
    with psycopg.connect(pg_url) as conn:
        status, message = conn.execute("SELECT status, error_message FROM recovery_jobs"
                                       ).fetchone()
    assert status == "FAILED" and "worker process is gone" in message
