"""Point-in-time recovery on real clusters: initdb as the postgres user, archive_command
calling vowvault's WAL push (installed where that user can run it), marker rows with their
commit times, restores to instants between them; an archiver killed mid-pass loses and
doubles nothing; after a first PITR restore the new timeline is archived and a second
restore follows it."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import signal
import subprocess
from pathlib import Path

from cliutil import VOWVAULT
from pitrcluster import (
    POLICY,
    Cluster,
    free_port,
    markers,
    wait_spooled,
)


def restore(cli, c: Cluster, target: list[str], into: Path) -> Cluster:
    port = free_port()
    out = cli("backup", "restore", "--policy", POLICY, *target, "--to-datadir", str(into),
              "--start", "--port", str(port)).stdout
    assert "restored" in out, out
    restored = Cluster(c.root, port, into)
    restored.fetched = int(re.search(r"(\d+) WAL files fetched", out).group(1))  # type: ignore[attr-defined, union-attr]
    return restored


def between(a: dt.datetime, b: dt.datetime) -> str:
    return (a + (b - a) / 2).isoformat()


def test_restore_to_instants_between_markers(cli, cluster: Cluster, pg_root: Path) -> None:
    marks = markers(cluster, range(1, 6))
    wait_spooled(cluster)
    archived = cli("wal", "archiver", "--policy", POLICY, "--once", "--spool",
                   str(cluster.spool)).stdout  # type: ignore[attr-defined]
    assert "archived" in archived
    status = cli("wal", "status", POLICY, "--spool", str(cluster.spool)).stdout  # type: ignore[attr-defined]
    assert "restorable from" in status and "GAP" not in status, status
    fetched = []
    for n, (lo, hi) in enumerate(((2, 3), (4, 5))):
        restored = restore(cli, cluster, ["--to-time", between(marks[lo], marks[hi])],
                           pg_root / f"restored-{n}")
        ids = [r[0] for r in restored.sql("SELECT id FROM marker ORDER BY id")]
        assert ids == list(range(1, lo + 1)), (lo, ids)
        restored.stop()
        fetched.append(restored.fetched)  # type: ignore[attr-defined]
    # Only the WAL up to the target is fetched: two markers (two segments) fewer.
    assert fetched[0] + 2 <= fetched[1], fetched
    # Outside the window: one line that states it, exit 2, nothing written.
    early = cli("backup", "restore", "--policy", POLICY, "--to-time", "2001-01-01T00:00:00Z",
                "--to-datadir", str(pg_root / "never"), check=False)
    assert early.returncode == 2 and "recoverable window" in early.stderr, early.stderr
    assert len(early.stderr.strip().splitlines()) == 1 and not (pg_root / "never").exists()
    # An erasure newer than the base backup is replayed once recovery ends (see
    # test_pitr_operations.py); a base backup restored by id alone, which nothing replays
    # on, is refused in one line and writes nothing.
    cli("gdpr", "request", "grand-hall", "guest-3", "--row", "public.marker:id=3")
    base = next(b["id"] for b in json.loads(cli("backup", "list", "--json").stdout)
                if b["backup_type"] == "FULL")
    erased = cli("backup", "restore", base, "--to-dir", str(pg_root / "erased"), check=False)
    assert erased.returncode != 0 and "erasure request" in erased.stderr, erased.stderr
    assert len(erased.stderr.strip().splitlines()) == 1
    assert not any((pg_root / "erased").glob("*"))


def test_an_archiver_killed_mid_pass_loses_and_doubles_nothing(cli, cli_env, cluster: Cluster
                                                               ) -> None:
    markers(cluster, range(1, 13))
    wait_spooled(cluster)
    spool: Path = cluster.spool / POLICY  # type: ignore[attr-defined]
    pushed = sorted(p.name for p in spool.iterdir() if p.name[0] != ".")
    rng = random.Random(17)
    kills = 0
    while any(p.name[0] != "." for p in spool.iterdir() if p.is_file()):
        proc = subprocess.Popen([VOWVAULT, "wal", "archiver", "--policy", POLICY, "--once",
                                 "--spool", str(cluster.spool), "--workers", "2"],  # type: ignore[attr-defined]
                                env=cli_env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            proc.wait(timeout=rng.uniform(1.6, 4.0))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        assert kills < 30
    # Every file pushed is archived once in the catalog, and each opens.
    status = cli("wal", "status", POLICY, "--json", "--spool", str(cluster.spool)).stdout  # type: ignore[attr-defined]
    assert "GAP" not in status
    import json

    window = json.loads(status)
    archived = {n for runs in window["timelines"].values() for a, b in runs
                for n in _names(a, b)}
    assert {p for p in pushed if len(p) == 24} <= archived
    import sqlite3

    with sqlite3.connect(Path(cli_env["VOWVAULT_HOME"]) / "catalog.db") as db:
        spans = [r[0] for r in db.execute(
            "SELECT source_info FROM backup_jobs WHERE backup_type = 'TRANSACTION_LOG'")]
    names = [n for info in spans for a, b in json.loads(info)["ranges"] for n in _names(a, b)]
    assert len(names) == len(set(names)), "a WAL file recorded twice"
    # Other bytes under a name already archived: refused, kept in the spool, nothing
    # overwritten on any copy.
    victim = next(n for n in pushed if len(n) == 24)
    (spool / ".archived" / victim).unlink()  # as if the receipt were lost
    stored = sorted(Path(cli_env["VOWVAULT_HOME"]).parent.glob(f"storage*/**/wal/*/{victim}"))
    before = [p.read_bytes() for p in stored]
    forged = Path(cli_env["VOWVAULT_HOME"]).parent / victim
    forged.write_bytes(os.urandom(16 << 20))
    from vowvault import walspool

    assert walspool.push(POLICY, forged, cluster.spool) == "spooled"  # type: ignore[attr-defined]
    refused = cli("wal", "archiver", "--policy", POLICY, "--once", "--spool",
                  str(cluster.spool), check=False)  # type: ignore[attr-defined]
    assert refused.returncode == 1 and f"CONFLICT {victim}" in refused.stdout, refused.stdout
    assert (spool / victim).exists() and [p.read_bytes() for p in stored] == before
    assert len(stored) == 2  # both copies


def test_demo_pitr_restores_and_cleans_up(cli, cli_env) -> None:
    out = cli("demo", "--pitr").stdout
    assert "guests: Ada, Grace, Alan, Edsger" in out and "recovery stopping before" in out
    assert not list(Path("/tmp").glob("vowvault-pitr-demo-*"))
    assert not (Path(cli_env["VOWVAULT_HOME"]) / "storage-pitr-demo").exists()


def _names(first: str, last: str) -> list[str]:
    lo = int(first[8:16], 16) * 256 + int(first[16:], 16)
    hi = int(last[8:16], 16) * 256 + int(last[16:], 16)
    return [f"{first[:8]}{n // 256:08X}{n % 256:08X}" for n in range(lo, hi + 1)]


def test_a_second_restore_follows_the_new_timeline(cli, cluster: Cluster,
                                                   pg_root: Path) -> None:
    marks = markers(cluster, range(1, 4))
    wait_spooled(cluster)
    spool = str(cluster.spool)  # type: ignore[attr-defined]
    cli("wal", "archiver", "--policy", POLICY, "--once", "--spool", spool)
    cluster.stop()  # the disaster: the original is gone
    first = restore(cli, cluster, ["--to-time", between(marks[2], marks[3])],
                    pg_root / "first")
    assert [r[0] for r in first.sql("SELECT id FROM marker ORDER BY id")] == [1, 2]
    assert first.sql("SELECT timeline_id FROM pg_control_checkpoint()")[0][0] == 2
    # Life goes on on timeline 2, archived by the same command into the same policy.
    markers(first, range(10, 12))
    wait_spooled(first)
    cli("wal", "archiver", "--policy", POLICY, "--once", "--spool", spool)
    first.stop()
    second = restore(cli, cluster, ["--latest"], pg_root / "second")
    assert [r[0] for r in second.sql("SELECT id FROM marker ORDER BY id")] == [1, 2, 10, 11]
    second.stop()
