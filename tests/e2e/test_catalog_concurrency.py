"""Long work holds no catalog transaction: with a restore, a verify and a backup each frozen
(SIGSTOP) in the middle of their storage I/O, other commands and backups still work, on
the embedded SQLite catalog and on PostgreSQL. (A transaction held across the I/O would
make them fail with "database is locked" after the 30 s busy timeout on SQLite.)"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cliutil import VOWVAULT
from trees import tree_state

MiB = 1 << 20

POLICIES = """\
version: 1
organizations:
  - {{slug: lumiere, name: Lumiere, vendor_type: photographer}}
policies:
  - name: photos
    organization: lumiere
    source: {{kind: directory, path: {photos}}}
    schedule: {{cron: "0 2 * * *", timezone: UTC}}
    peak_season: {{multiplier: 1}}
    storage:
      - {{url: "file://{storage}", tier: HOT}}
  - name: config
    organization: lumiere
    source: {{kind: directory, path: {config}}}
    schedule: {{cron: "0 3 * * *", timezone: UTC}}
    peak_season: {{multiplier: 1}}
    storage:
      - {{url: "file://{storage}", tier: HOT}}
"""


def make_photos(root: Path, files: int, size: int = MiB) -> None:
    (root / "album").mkdir(parents=True)
    for i in range(files):
        (root / "album" / f"IMG_{i:04d}.jpg").write_bytes(os.urandom(size))


def freeze_when(proc: subprocess.Popen[str], touching: Callable[[str], bool],
                timeout: float = 120) -> str:
    """SIGSTOP the process the moment it has a file open that ``touching`` picks (it is
    then in the middle of its storage or restore I/O); the file's path."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"finished before it could be caught: {out} {err}")
        try:
            fds = os.listdir(f"/proc/{proc.pid}/fd")
        except FileNotFoundError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{proc.pid}/fd/{fd}")
            except OSError:
                continue
            if touching(target):
                os.kill(proc.pid, signal.SIGSTOP)
                return target
        time.sleep(0.001)
    proc.kill()
    raise AssertionError("never caught doing its I/O")


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_env(request: pytest.FixtureRequest, cli_env: dict[str, str]) -> dict[str, str]:
    if request.param == "postgresql":
        return {**cli_env, "VOWVAULT_DATABASE_URL": request.getfixturevalue("pg_url")}
    return cli_env


def test_frozen_restore_verify_and_backup_block_nobody(catalog_env: dict[str, str],
                                                       tmp_path: Path) -> None:
    env = catalog_env

    def vv(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([VOWVAULT, *args], capture_output=True, text=True, env=env,
                              timeout=timeout)

    def start(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([VOWVAULT, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)

    photos, config, storage = tmp_path / "photos", tmp_path / "config", tmp_path / "storage"
    make_photos(photos, 48)
    make_photos(config, 2, 4096)
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICIES.format(photos=photos, config=config, storage=storage))
    assert vv("policies", "apply", str(policy)).returncode == 0
    first = vv("backup", "run", "photos", "--direct")
    assert first.returncode == 0, first.stderr
    backup_id = first.stdout.split()[1]
    out = tmp_path / "restored"

    frozen = []
    try:
        restore = start("backup", "restore", backup_id, "--to-dir", str(out))
        frozen.append(restore)
        freeze_when(restore, lambda p: p.startswith(str(out)))
        missed = []
        for _attempt in range(5):  # verify reads fast: catch it with an object open
            verify = start("backup", "verify", backup_id)
            try:
                freeze_when(verify, lambda p: p.startswith(str(storage)) and "/data" in p)
                frozen.append(verify)
                break
            except AssertionError as exc:
                missed.append(str(exc))
        else:
            pytest.fail(f"verify was never caught reading its data: {missed[-1]}")
        backup = start("backup", "run", "photos", "--direct")
        frozen.append(backup)
        freeze_when(backup, lambda p: p.startswith(str(storage)) and ".tmp-" in p)

        # Three processes frozen in the middle of their I/O: everyone else goes on.
        listed = vv("backup", "list")
        assert listed.returncode == 0, listed.stderr
        assert backup_id in listed.stdout
        assert vv("policies", "list").returncode == 0
        other = vv("backup", "run", "config", "--direct")
        assert other.returncode == 0, other.stderr
        assert "COMPLETED" in other.stdout
    finally:
        for proc in frozen:
            os.kill(proc.pid, signal.SIGCONT)
    results = [(*proc.communicate(timeout=120), proc.returncode) for proc in frozen]
    for stdout, stderr, code in results:
        assert code == 0, f"{stdout}\n{stderr}"
    assert tree_state(out) == tree_state(photos)
    assert "intact on 1 of 1 copies" in results[1][0]
    assert "COMPLETED" in results[2][0]


def test_gdpr_purge_of_a_large_tree_on_sqlite(cli, tmp_path: Path) -> None:
    photos, config, storage = tmp_path / "photos", tmp_path / "config", tmp_path / "storage"
    make_photos(photos, 72)  # 72 MiB
    make_photos(config, 1, 10)
    (photos / "couple-17").mkdir()
    (photos / "couple-17" / "first-dance.jpg").write_bytes(os.urandom(MiB))
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICIES.format(photos=photos, config=config, storage=storage))
    cli("policies", "apply", str(policy))
    backup_id = cli("backup", "run", "photos", "--direct").stdout.split()[1]
    cli("gdpr", "request", "lumiere", "couple-17", "--path", "couple-17")
    purged = cli("gdpr", "purge", "couple-17").stdout
    assert "1 backups rewritten" in purged
    new_id = purged.split("replaced_by: ")[1].split()[0]
    cli("backup", "verify", new_id)
    cli("backup", "restore", new_id, "--to-dir", str(tmp_path / "out"))
    assert not (tmp_path / "out" / "couple-17").exists()
    expected = {k: v for k, v in tree_state(photos).items() if not k.startswith("couple-17")}
    assert tree_state(tmp_path / "out") == expected
    assert "EXPIRED" in cli("backup", "show", backup_id).stdout
