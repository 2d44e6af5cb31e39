"""Throw-away PostgreSQL clusters for the point-in-time recovery tests: initdb as the
postgres user, archive_command calling vowvault's WAL push (installed where that user can
run it), a physical policy on two copies, one base backup; marker rows a WAL segment
apart. The fixtures ``pg_root`` and ``cluster`` are registered in conftest.py."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

PG_BIN = Path("/usr/lib/postgresql/15/bin")
POLICY = "venue-cluster"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not (PG_BIN / "initdb").exists(),
                                reason="needs root (to run clusters as postgres) and PG 15")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def as_postgres(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True,
                          text=True, check=True, timeout=120)


class Cluster:
    def __init__(self, root: Path, port: int, datadir: Path | None = None) -> None:
        self.root, self.port = root, port
        self.datadir = datadir or root / "data"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def sql(self, query: str, *args: object) -> list[tuple[object, ...]]:
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            cur = conn.execute(query, args or None)  # type: ignore[arg-type]
            return list(cur.fetchall()) if cur.description else []

    def stop(self) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D",
                        str(self.datadir), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)


@pytest.fixture
def pg_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="vv-pitr-", dir="/tmp"))
    os.chmod(root, 0o755)  # noqa: S103 - the server (postgres) and the test (root) share it
    shutil.chown(root, "postgres")
    yield root
    for data in root.glob("**/postmaster.pid"):
        subprocess.run(["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D",
                        str(data.parent), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cluster(cli, pg_root: Path, tmp_path: Path) -> Cluster:
    """A cluster archiving into the policy's spool through `vowvault-wal`, the policy
    applied and one base backup taken."""
    spool = pg_root / "spool"
    spool.mkdir()
    shutil.chown(spool, "postgres")
    installed = cli("wal", "install-command", str(pg_root / "bin"), "--policy", POLICY,
                    "--spool", str(spool)).stdout
    archive_command = installed.split("archive_command = ", 1)[1].strip().strip("'")
    c = Cluster(pg_root, free_port())
    as_postgres(str(PG_BIN / "initdb"), "-D", str(c.datadir), "-A", "trust", "-U", "postgres")
    with open(c.datadir / "postgresql.conf", "a") as f:
        f.write(f"port = {c.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{pg_root}'\nwal_level = replica\n"
                f"archive_mode = on\narchive_command = '{archive_command}'\n"
                f"max_wal_senders = 4\n")
    as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(c.datadir), "-l", str(pg_root / "log"),
                "-w", "start")
    c.sql("CREATE TABLE marker (id int PRIMARY KEY, at timestamptz NOT NULL)")
    storage = tmp_path / "storage"
    (tmp_path / "p.yaml").write_text(f"""\
version: 1
organizations:
  - {{slug: grand-hall, name: Grand Hall, vendor_type: venue}}
policies:
  - name: {POLICY}
    organization: grand-hall
    source: {{kind: postgres, dsn: "{c.dsn}", mode: physical}}
    schedule: {{cron: "0 2 * * *", timezone: UTC}}
    storage:
      - {{url: "file://{storage}", tier: HOT}}
      - {{url: "file://{storage}-2", tier: WARM}}
""")
    cli("policies", "apply", str(tmp_path / "p.yaml"))
    cli("backup", "run", POLICY, "--direct")
    c.spool = spool  # type: ignore[attr-defined]
    return c


def markers(c: Cluster, ids: range) -> dict[int, dt.datetime]:
    """One committed marker per id, each in a WAL segment of its own, a moment apart."""
    found = {}
    for i in ids:
        (row,) = c.sql("INSERT INTO marker VALUES (%s, clock_timestamp()) RETURNING at", i)
        found[i] = row[0]  # type: ignore[assignment]
        c.sql("SELECT pg_switch_wal()")
        time.sleep(0.6)
    return found


def wait_spooled(c: Cluster) -> None:
    """Until the server has handed every finished segment to the spool."""
    deadline = time.monotonic() + 120
    while c.sql("SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"
                )[0][0]:
        assert time.monotonic() < deadline, "the server did not archive its WAL"
        time.sleep(0.2)
