"""`vowvault demo --pitr`: point-in-time recovery of a throwaway cluster, start to finish.

A cluster of its own (initdb as the postgres user, a free port, under a temporary
directory), archiving through `vowvault-wal push` into a spool; a physical policy in
VOWVAULT_HOME; a base backup; guest-list changes with their commit times; the archiver; a
restore to the instant between two changes, started and checked; then everything the demo
made is removed again (the cluster, its directories, the policy is deactivated).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from rich.console import Console

POLICY = "demo-pitr-cluster"


def _as_postgres(*cmd: str) -> None:
    from vowvault.engine.pitr import as_postgres

    subprocess.run(as_postgres(list(cmd)), check=True, capture_output=True, timeout=120)


def run_pitr_demo(console: Console) -> None:
    import psycopg

    from vowvault.engine import pitr, wal
    from vowvault.engine.backup import run_backup
    from vowvault.engine.context import Context
    from vowvault.engine.pitr import free_port, pg_bin
    from vowvault.policies.apply import apply_policy_file
    from vowvault.policies.loader import parse_policy_text

    t0 = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="vowvault-pitr-demo-", dir="/tmp"))
    root.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    port = free_port()
    data, spool = root / "data", root / "spool"
    spool.mkdir()
    if os.geteuid() == 0:
        shutil.chown(spool, "postgres")
    ctx = Context.from_settings()
    storage = ctx.settings.home / "storage-pitr-demo"
    console.print(f"[bold]vowvault demo --pitr[/bold]: a throwaway cluster in {root} on port "
                  f"{port}, backups in {storage} (all removed at the end)")
    try:
        from vowvault import walspool

        (root / "bin").mkdir()
        command = root / "bin" / "vowvault-wal"
        shutil.copyfile(walspool.__file__, command)
        command.chmod(0o755)
        _as_postgres(pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
        with open(data / "postgresql.conf", "a") as f:
            f.write(f"port = {port}\nlisten_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{root}'\nwal_level = replica\n"
                    f"archive_mode = on\narchive_command = '/usr/bin/python3 {command} push "
                    f"--policy {POLICY} --spool {spool} %p'\n")
        _as_postgres(pg_bin("pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "start")
        dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        console.print(f"1. cluster started, archive_command = vowvault-wal push into {spool}")
        text = f"""\
version: 1
organizations:
  - {{slug: demo-venue, name: Demo Venue, vendor_type: venue}}
policies:
  - name: {POLICY}
    organization: demo-venue
    source: {{kind: postgres, dsn: "{dsn}", mode: physical}}
    schedule: {{cron: "0 3 * * *", timezone: UTC}}
    storage:
      - {{url: "file://{storage}", tier: HOT}}
"""
        apply_policy_file(ctx.catalog, parse_policy_text(text, "demo-pitr"),
                          actor=ctx.settings.actor)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE TABLE guests (name text PRIMARY KEY, table_no int, "
                         "added timestamptz NOT NULL DEFAULT clock_timestamp())")
            conn.execute("INSERT INTO guests (name, table_no) VALUES ('Ada', 1), ('Grace', 1)")
        base = run_backup(ctx, POLICY)
        console.print(f"2. base backup {base.job_id[:8]}: {base.files} files, "
                      f"{base.source_bytes / 1048576:.1f} MiB, verified")
        changes: list[tuple[str, dt.datetime]] = []
        with psycopg.connect(dsn, autocommit=True) as conn:
            for name in ("Alan", "Edsger", "Barbara"):
                (at,) = conn.execute("INSERT INTO guests (name, table_no) VALUES (%s, 2) "
                                     "RETURNING added", (name,)).fetchone()  # type: ignore[misc]
                changes.append((name, at))
                conn.execute("SELECT pg_switch_wal()")
                time.sleep(1.0)
            conn.execute("DELETE FROM guests")  # the accident
            conn.execute("SELECT pg_switch_wal()")
        console.print("3. guests Alan, Edsger and Barbara added a second apart, then every "
                      "guest deleted by mistake")
        deadline = time.monotonic() + 60
        while True:
            with psycopg.connect(dsn, autocommit=True) as conn:
                (ready,) = conn.execute("SELECT count(*) FROM pg_ls_archive_statusdir() WHERE "
                                        "name LIKE '%.ready'").fetchone()  # type: ignore[misc]
            if not ready or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        report = wal.archive(ctx, POLICY, str(spool))
        w = wal.window(ctx, POLICY, str(spool))
        console.print(f"4. archiver: {len(report.archived)} WAL files sealed and stored; "
                      f"restorable from {w.earliest:%H:%M:%S} to {w.latest:%H:%M:%S} UTC")
        target = changes[1][1] + (changes[2][1] - changes[1][1]) / 2
        restored = root / "restored"
        result = pitr.restore_to(ctx, POLICY, restored, pitr.Target(time=target), start=True,
                                 port=free_port(),
                                 validation_query="SELECT string_agg(name, ', ' ORDER BY "
                                                  "added) FROM guests")
        guests = result.validation["rows"][0][0]
        console.print(f"5. restored to {target:%H:%M:%S.%f} UTC (between Edsger and Barbara) "
                      f"in {result.duration_seconds:.1f} s: the server says "
                      f"\"{result.reached}\"; guests: {guests}")
        if guests != "Ada, Grace, Alan, Edsger":
            raise SystemExit(f"demo: the restored guest list is wrong: {guests}")
        pitr.stop(restored)
    finally:
        for datadir in (root / "restored", data):
            if (datadir / "postmaster.pid").exists():
                pitr.stop(datadir)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(storage, ignore_errors=True)
        from vowvault.policies.apply import deactivate_policy

        deactivate_policy(ctx.catalog, POLICY, actor=ctx.settings.actor,
                          why="the PITR demo's cluster is gone")
        ctx.close()
    console.print(f"\ndone in {time.perf_counter() - t0:.0f} s; the cluster, its spool and "
                  f"its backups are removed (the catalog keeps the deactivated policy "
                  f"{POLICY} and its history). How to set this up on a real server: "
                  f"docs/PITR.md")
