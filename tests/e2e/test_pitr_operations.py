"""Point-in-time recovery in operation, on real clusters (issue 18): WAL continuity (a
deleted segment is a gap with its LSN range, the window shrinks, an alert is raised), WAL
retention that follows the base backups, erasures replayed after a PITR restore."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from test_pitr import (  # noqa: F401 - fixtures
    POLICY,
    Cluster,
    cluster,
    markers,
    pg_root,
    pytestmark,
    wait_spooled,
)


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
            found.setdefault(path.name, []).append(path)
    return found


def test_a_deleted_segment_is_a_gap_with_its_range_and_the_window_shrinks(
        cli, cluster: Cluster, tmp_path: Path) -> None:
    markers(cluster, range(1, 7))
    archive(cli, cluster)
    ok = cli("wal", "verify", POLICY)
    assert "continuous" in ok.stdout and "NOT" not in ok.stdout, ok.stdout
    before = status(cli, cluster)
    assert not before["gaps"], before
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
