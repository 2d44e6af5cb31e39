"""Point-in-time recovery in operation, on real clusters (issue 18): WAL continuity (a
deleted segment is a gap with its LSN range, the window shrinks, an alert is raised), WAL
retention that follows the base backups, erasures replayed after a PITR restore."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from pitrcluster import POLICY, Cluster, markers, pytestmark, wait_spooled  # noqa: F401


def archive(cli, c: Cluster) -> None:
    wait_spooled(c)
    cli("wal", "archiver", "--policy", POLICY, "--once", "--spool", str(c.spool))  # type: ignore[attr-defined]


def status(cli, c: Cluster) -> dict:
    return json.loads(cli("wal", "status", POLICY, "--spool", str(c.spool),  # type: ignore[attr-defined]
                          "--json").stdout)


def wal_objects(storage: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for root in (storage, Path(f"{storage}-2")):
        for path in root.glob("*/*/wal/*/*"):
            if not path.name.endswith(".vvmeta"):  # the local backend's tier sidecar
                found.setdefault(path.name, []).append(path)
    return found


def test_a_deleted_segment_is_a_gap_with_its_range_and_the_window_shrinks(
        cli, cluster: Cluster, tmp_path: Path) -> None:
    markers(cluster, range(1, 7))
    archive(cli, cluster)
    ok = cli("wal", "verify", POLICY)
    assert "continuous" in ok.stdout and "NOT" not in ok.stdout, ok.stdout
    again = cli("wal", "verify", POLICY, "--skip-proven", "7").stdout  # the scrub's way
    assert "0 WAL files read" in again and "proven within 7 days" in again, again
    before = status(cli, cluster)
    assert not before["gaps"], before
    # The window's end is after the last commit: PostgreSQL alone stops with "recovery
    # ended before configured recovery target was reached"; vowvault recovers to the end
    # of the WAL, which is the cluster as it was then.
    from pitrcluster import free_port

    port = free_port()
    out = cli("backup", "restore", "--policy", POLICY, "--to-time", before["latest"],
              "--to-datadir", str(cluster.root / "at-the-end"), "--start", "--port",
              str(port)).stdout
    assert "the cluster as it was at the target" in " ".join(out.split()), out
    at_end = Cluster(cluster.root, port, cluster.root / "at-the-end")
    assert [r[0] for r in at_end.sql("SELECT id FROM marker ORDER BY id")] == list(range(1, 7))
    at_end.stop()
    objects = wal_objects(tmp_path / "storage")
    segments = sorted(n for n in objects if len(n) == 24)
    lost = segments[len(segments) // 2]
    for path in objects[lost]:  # gone from both copies
        path.unlink()
    # A second file damaged on one copy only: reported, but not a gap.
    other = segments[-1]
    damaged = objects[other][0]
    blob = bytearray(damaged.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    damaged.write_bytes(bytes(blob))

    out = cli("wal", "verify", POLICY, check=False)
    assert out.returncode == 1, out.stdout + out.stderr
    number = int(lost[8:16], 16) * 256 + int(lost[16:], 16)
    start, end = number << 24, (number + 1) << 24
    expected = (f"WAL from {start >> 32:X}/{start & 0xFFFFFFFF:08X} to "
                f"{end >> 32:X}/{end & 0xFFFFFFFF:08X} missing (1 segment: {lost[8:]})")
    assert expected in out.stdout, out.stdout
    assert other in out.stdout and "intact on another copy" in out.stdout, out.stdout
    after = status(cli, cluster)
    assert any(expected in g for g in after["gaps"]), after["gaps"]
    assert dt.datetime.fromisoformat(after["latest"]) < dt.datetime.fromisoformat(
        before["latest"]), (before["latest"], after["latest"])
    text = cli("wal", "status", POLICY, "--spool", str(cluster.spool)).stdout  # type: ignore[attr-defined]
    assert "GAP" in text and expected in " ".join(text.split()), text
    # The alert: an audit entry (and a wal_gap event for the organization's webhooks).
    actions = [e["action"] for e in json.loads(cli("audit", "list", "--json").stdout)]
    assert "wal.gap" in actions, actions


def test_retention_after_three_base_backups_keeps_exactly_the_wal_the_kept_ones_need(
        cli, cli_env, cluster: Cluster, tmp_path: Path) -> None:
    import shutil
    import subprocess

    from cliutil import VOWVAULT

    if shutil.which("faketime") is None:
        import pytest

        pytest.skip("faketime is not installed (apt install faketime)")
    policy = tmp_path / "p.yaml"
    policy.write_text(policy.read_text().replace(
        "    schedule:", "    retention: {days: 1, keep_last: 2}\n    schedule:"))
    cli("policies", "apply", str(policy))
    markers(cluster, range(1, 3))
    archive(cli, cluster)  # the WAL after the fixture's base backup (the first)
    first_pass = set(wal_objects(tmp_path / "storage"))
    for base in (2, 3):
        cli("backup", "run", POLICY, "--direct")
        markers(cluster, range(base * 10, base * 10 + 2))
        archive(cli, cluster)
    everything = wal_objects(tmp_path / "storage")
    later = set(everything) - first_pass
    assert first_pass and later

    def faked(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["faketime", "-f", "+3d", VOWVAULT, *args], env=cli_env,
                              capture_output=True, text=True, timeout=180)

    plan = faked("retention", "--dry-run", "--all", "--policy", POLICY)
    assert plan.returncode == 0, plan.stderr
    lines = plan.stdout.splitlines()
    wal_lines = [ln for ln in lines if " WAL " in ln]
    assert len(wal_lines) == 3, plan.stdout  # one row per archiver pass, with its ranges
    assert sum("DELETE" in ln for ln in wal_lines) == 1, plan.stdout
    assert sum("needed by kept base backup" in ln for ln in wal_lines) == 2, plan.stdout
    assert set(wal_objects(tmp_path / "storage")) == set(everything)  # a dry run: nothing
    done = faked("retention", "--force", "--policy", POLICY)
    assert done.returncode == 0, done.stderr
    left = wal_objects(tmp_path / "storage")
    assert set(left) == later, sorted(set(left) ^ later)  # exactly the first pass went
    assert all(len(paths) == 2 for paths in left.values()), left  # on both copies still
    ok = cli("wal", "verify", POLICY)  # what the kept base backups need is all there
    assert "continuous" in ok.stdout and "NOT" not in ok.stdout, ok.stdout


def test_a_guest_erased_after_the_base_backup_is_absent_after_recovery(
        cli, cluster: Cluster, pg_root: Path) -> None:
    """The erasure is recorded after the base backup (the guest's row is in the base backup
    and in the WAL); recovered to an instant after it, with and without --start, the row
    is not there and every other row is."""
    import time

    from pitrcluster import free_port

    cluster.sql("CREATE TABLE guest (id int PRIMARY KEY, name text NOT NULL)")
    cluster.sql("INSERT INTO guest VALUES (1, 'Ada'), (2, 'Grace'), (3, 'Edsger')")
    cli("backup", "run", POLICY, "--direct")  # a base backup holding Grace
    marks = markers(cluster, range(1, 3))
    cli("gdpr", "request", "grand-hall", "guest-grace", "--row", "public.guest:id=2")
    cluster.sql("DELETE FROM guest WHERE id = 2")  # erased on the live cluster too
    time.sleep(0.5)
    archive(cli, cluster)
    target = (marks[1] + (marks[2] - marks[1]) / 2).isoformat()  # before the live DELETE
    port = free_port()
    out = cli("backup", "restore", "--policy", POLICY, "--to-time", target, "--to-datadir",
              str(pg_root / "recovered"), "--start", "--port", str(port)).stdout
    assert "guest-grace" in out and "1 rows deleted from public.guest" in out, out
    recovered = Cluster(pg_root, port, pg_root / "recovered")
    assert recovered.sql("SELECT id FROM guest ORDER BY id") == [(1,), (3,)]
    assert recovered.sql("SELECT id FROM marker ORDER BY id") == [(1,)]
    recovered.stop()
    # Without --start: recovered, replayed and stopped again; started later, still erased.
    out = cli("backup", "restore", "--policy", POLICY, "--to-time", target, "--to-datadir",
              str(pg_root / "later")).stdout
    assert "stopped again" in out, out
    import subprocess

    later = Cluster(pg_root, free_port(), pg_root / "later")
    subprocess.run(["runuser", "-u", "postgres", "--", "/usr/lib/postgresql/15/bin/pg_ctl",
                    "-D", str(later.datadir), "-l", str(pg_root / "later.log"), "-w", "-o",
                    f"-p {later.port} -c listen_addresses=127.0.0.1 "
                    f"-c unix_socket_directories={pg_root}", "start"],
                   check=True, capture_output=True, timeout=120)
    assert later.sql("SELECT id FROM guest ORDER BY id") == [(1,), (3,)]
    later.stop()


def test_a_pitr_drill_recovers_a_random_instant_records_rto_and_rpo_and_cleans_up(
        cli, cli_env, cluster: Cluster, tmp_path: Path) -> None:
    import glob
    import subprocess
    import tempfile

    import sqlalchemy as sa

    policy = tmp_path / "p.yaml"
    policy.write_text(policy.read_text().replace(
        'mode: physical}', 'mode: physical, validation_query: "SELECT count(*) FROM marker"}'))
    cli("policies", "apply", str(policy))
    markers(cluster, range(1, 5))
    archive(cli, cluster)
    scratch = set(glob.glob(f"{tempfile.gettempdir()}/vowvault-pitr-drill-*"))
    out = cli("drill", POLICY).stdout
    flat = " ".join(out.split())
    assert "recovered to" in flat and "RTO target" in flat and "RPO" in flat, out
    # Its throw-away cluster is gone: no directory, no server left running.
    assert set(glob.glob(f"{tempfile.gettempdir()}/vowvault-pitr-drill-*")) == scratch
    procs = subprocess.run(["pgrep", "-af", "vowvault-pitr-drill-"], capture_output=True,
                           text=True).stdout
    assert "postgres" not in procs, procs
    engine = sa.create_engine(f"sqlite:///{Path(cli_env['VOWVAULT_HOME']) / 'catalog.db'}")
    try:
        with engine.begin() as conn:
            (row,) = conn.execute(sa.text(
                "SELECT rto_seconds, rpo_seconds, status, validation FROM recovery_jobs "
                "WHERE recovery_type = 'DR_DRILL'")).all()
    finally:
        engine.dispose()
    rto, rpo, state, validation = row
    assert float(rto) > 0 and float(rpo) >= 0 and state == "COMPLETED", row
    assert "point_in_time" in validation and "rows" in validation, validation
    html = tmp_path / "report.html"
    cli("report", "--html", str(html))
    text = html.read_text()
    assert "RPO" in text and f"{float(rpo):.0f} s" in text, text[-2000:]


def test_a_backlog_in_the_spool_or_pg_wal_raises_an_alert_before_the_disk_fills(
        cli, cluster: Cluster, tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(policy.read_text().replace(
        'mode: physical}', 'mode: physical, spool_alert_mib: 40, pg_wal_alert_mib: 4000}'))
    cli("policies", "apply", str(policy))
    markers(cluster, range(1, 5))  # four segments pushed, none archived: 64 MiB waiting
    wait_spooled(cluster)
    h = status(cli, cluster)["health"]
    assert h["spool_files"] >= 4 and h["spool_bytes"] >= 4 * (16 << 20), h
    assert h["pg_wal_bytes"] and h["pg_wal_bytes"] < h["pg_wal_alert_bytes"], h
    assert any("the spool holds" in a for a in h["alerts"]), h
    assert h["oldest_waiting_seconds"] is not None and h["lag_seconds"] is None, h
    actions = [e["action"] for e in json.loads(cli("audit", "list", "--json").stdout)]
    assert actions.count("wal.backlog") == 1, actions
    status(cli, cluster)  # still behind: no second alert within the hour
    actions = [e["action"] for e in json.loads(cli("audit", "list", "--json").stdout)]
    assert actions.count("wal.backlog") == 1, actions
    text = cli("wal", "status", POLICY, "--spool", str(cluster.spool)).stdout  # type: ignore[attr-defined]
    assert "ALERT the spool holds" in text, text
    # pg_wal past its size (the server keeps WAL the archive has not taken): its own alert.
    policy.write_text(policy.read_text().replace("pg_wal_alert_mib: 4000",
                                                 "pg_wal_alert_mib: 16"))
    cli("policies", "apply", str(policy))
    archive(cli, cluster)
    h = status(cli, cluster)["health"]
    assert h["spool_files"] == 0 and h["lag_seconds"] is not None, h
    assert [a for a in h["alerts"] if "pg_wal holds" in a] and not [
        a for a in h["alerts"] if "the spool" in a], h
