"""Memory stays bounded whatever the backup's size; a backup whose process is killed is
found, marked FAILED and cleaned up."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from cliutil import VOWVAULT, write_policy
from trees import backup_files

from vowvault.engine.context import Context

MiB = 1024 * 1024


def make_source(root: Path, mib: int) -> None:
    root.mkdir(parents=True)
    block = os.urandom(MiB)  # one random MiB per 1 MiB frame: nothing to compress
    with open(root / "wedding-film.mp4", "wb") as f:
        for _ in range(mib):
            f.write(block)


def peak_rss_of_backup(cli_env: dict[str, str]) -> tuple[int, subprocess.CompletedProcess[str]]:
    proc = subprocess.Popen([VOWVAULT, "backup", "run", "photos", "--direct"], env=cli_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _pid, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.communicate()
    done = subprocess.CompletedProcess(proc.args, os.waitstatus_to_exitcode(status), out, err)
    return usage.ru_maxrss * 1024, done


@pytest.mark.slow
def test_memory_is_bounded_whatever_the_size(cli, cli_env, tmp_path: Path) -> None:
    bound = Context.memory_bound(Context.__new__(Context))  # defaults: frames in flight
    peaks = {}
    for mib in (1, 512):
        home = tmp_path / f"home{mib}"
        env = {**cli_env, "VOWVAULT_HOME": str(home)}
        make_source(tmp_path / f"src{mib}", mib)
        cli("policies", "apply", str(write_policy(
            tmp_path / f"p{mib}.yaml", f"{{kind: directory, path: {tmp_path / f'src{mib}'}}}",
            tmp_path / f"storage{mib}")), VOWVAULT_HOME=str(home))
        peak, done = peak_rss_of_backup(env)
        assert done.returncode == 0, done.stderr
        peaks[mib] = peak
    growth = peaks[512] - peaks[1]
    print(f"peak RSS: 1 MiB source {peaks[1] / MiB:.0f} MiB, 512 MiB source "
          f"{peaks[512] / MiB:.0f} MiB; stated in-flight bound {bound / MiB:.0f} MiB")
    # 512 MiB went through; the process grew by less than the frames it may hold in flight
    # (plus allocator slack), not by anything proportional to the data.
    assert bound < 64 * MiB
    assert growth < bound + 16 * MiB


@pytest.mark.slow
def test_killed_backup_is_reaped_and_leaves_nothing(cli, cli_env, tmp_path: Path) -> None:
    make_source(tmp_path / "src", 400)
    storage = tmp_path / "storage"
    cli("policies", "apply", str(write_policy(tmp_path / "p.yaml",
                                              f"{{kind: directory, path: {tmp_path / 'src'}}}",
                                              storage)))
    proc = subprocess.Popen([VOWVAULT, "backup", "run", "photos", "--direct"], env=cli_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = Path(cli_env["VOWVAULT_HOME"]) / "catalog.db"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        written = [p for p in storage.rglob("*") if p.is_file() and p.stat().st_size > 20 * MiB]
        if written:
            break
        time.sleep(0.02)
    else:
        proc.kill()
        pytest.fail("backup never started writing")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT status FROM backup_jobs").fetchall() == [("IN_PROGRESS",)]
    assert any(".tmp-" in p.name for p in storage.rglob("*"))
    reaped = cli("backup", "reap").stdout
    assert "reaped 1 abandoned backups" in reaped
    with sqlite3.connect(db) as conn:
        status, message = conn.execute("SELECT status, error_message FROM backup_jobs").fetchone()
    assert status == "FAILED" and "worker process is gone" in message
    assert backup_files(storage) == []
    # And the next backup simply works.
    assert "COMPLETED" in cli("backup", "run", "photos", "--direct").stdout
