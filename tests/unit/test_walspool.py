"""The WAL spool that archive_command and restore_command use: atomic, idempotent, never
overwriting, and fast through the real command (no heavy imports)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vowvault import walspool

VOWVAULT = str(Path(sys.executable).with_name("vowvault"))
SEGMENT = "000000010000000000000003"


def segment(tmp_path: Path, data: bytes, name: str = SEGMENT) -> Path:
    path = tmp_path / "pg_wal" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_push_is_idempotent_and_never_overwrites(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    wal = segment(tmp_path, os.urandom(1 << 16))
    assert walspool.push("venue-db", wal, spool) == "spooled"
    assert walspool.push("venue-db", wal, spool) == "already spooled"
    assert (spool / "venue-db" / SEGMENT).read_bytes() == wal.read_bytes()
    other = segment(tmp_path / "x", os.urandom(1 << 16))
    with pytest.raises(walspool.SpoolConflict, match="already spooled with other contents"):
        walspool.push("venue-db", other, spool)
    assert (spool / "venue-db" / SEGMENT).read_bytes() == wal.read_bytes()
    # Archived: the receipt answers a repeated push; other bytes are still refused.
    walspool.receipt_written(spool / "venue-db", SEGMENT, walspool.file_sha256(wal))
    assert not (spool / "venue-db" / SEGMENT).exists()
    assert walspool.push("venue-db", wal, spool) == "already archived"
    with pytest.raises(walspool.SpoolConflict, match="archived with other contents"):
        walspool.push("venue-db", other, spool)
    assert not [p for p in (spool / "venue-db").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("name", ["../../etc/passwd", "000000010000000000000003.tmp",
                                  "0000000100000000000000", "postgresql.conf", ".history"])
def test_only_wal_names_are_taken(tmp_path: Path, name: str) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    with pytest.raises(walspool.SpoolError):
        walspool.push("venue-db", path.with_name(name) if "/" not in name else
                      Path(name), tmp_path / "spool")
    with pytest.raises(walspool.SpoolError):
        walspool.push("../escape", segment(tmp_path, b"x"), tmp_path / "spool")


def test_order_is_history_first_then_segments(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    for name in ("000000020000000000000005", "00000002.history", "000000010000000000000004"):
        walspool.push("p", segment(tmp_path, name.encode(), name), spool)
    assert [p.name for p in walspool.spooled("p", spool)] == [
        "000000010000000000000004", "00000002.history", "000000020000000000000005"]


def test_fetch_copies_or_says_it_is_not_there(tmp_path: Path) -> None:
    source = tmp_path / "prefetch"
    source.mkdir()
    (source / SEGMENT).write_bytes(b"wal bytes")
    assert walspool.fetch(SEGMENT, tmp_path / "RECOVERYXLOG", source)
    assert (tmp_path / "RECOVERYXLOG").read_bytes() == b"wal bytes"
    assert not walspool.fetch("000000010000000000000004", tmp_path / "R2", source)
    with pytest.raises(walspool.SpoolError, match="no such directory"):
        walspool.fetch(SEGMENT, tmp_path / "R3", tmp_path / "missing")


def test_the_real_command_is_fast_and_speaks_exit_codes(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    wal = segment(tmp_path, os.urandom(16 << 20))  # a whole 16 MiB segment
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOWVAULT_")}
    started = time.perf_counter()
    proc = subprocess.run([VOWVAULT, "wal", "push", "--policy", "venue-db", "--spool",
                           str(spool), str(wal)], capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - started
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    print(f"wal push of 16 MiB: {elapsed * 1000:.0f} ms")  # the benchmark measures it
    assert (spool / "venue-db" / SEGMENT).read_bytes() == wal.read_bytes()
    other = segment(tmp_path / "y", b"different")
    conflict = subprocess.run([VOWVAULT, "wal", "push", "--policy", "venue-db", "--spool",
                               str(spool), str(other)], capture_output=True, text=True, env=env)
    assert conflict.returncode == 1 and "not overwritten" in conflict.stderr
    assert len(conflict.stderr.strip().splitlines()) == 1
    missing = subprocess.run([VOWVAULT, "wal", "fetch", "--policy", "venue-db", "--from",
                              str(spool / "venue-db"), "000000010000000000000009",
                              str(tmp_path / "out")], capture_output=True, text=True, env=env)
    assert missing.returncode == 1 and missing.stderr == ""
    misuse = subprocess.run([VOWVAULT, "wal", "push", str(wal)], capture_output=True,
                            text=True, env=env)
    assert misuse.returncode == 2 and "--policy NAME is required" in misuse.stderr
