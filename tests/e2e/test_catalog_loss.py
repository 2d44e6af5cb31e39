"""Losing the catalog is never silent (issue 15, finding 2): a missing, emptied or
corrupted embedded catalog, while the key store holds organizations' keys, is refused in
one line with exit 4, and nothing is created in its place unless asked (--new-catalog)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cliutil import write_policy


@pytest.fixture
def backed_up(cli, cli_env, tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "guests.csv").write_text("Ada,Grace\n")
    cli("policies", "apply", str(write_policy(tmp_path / "p.yaml",
                                              f"{{kind: directory, path: {src}}}",
                                              tmp_path / "storage")))
    cli("backup", "run", "photos", "--direct")
    return Path(cli_env["VOWVAULT_HOME"]) / "catalog.db"


def _lose(db: Path, how: str) -> None:
    for extra in (db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        extra.unlink(missing_ok=True)
    if how == "deleted":
        db.unlink()
    elif how == "emptied":
        db.write_bytes(b"")
    else:
        with open(db, "r+b") as f:  # the header and the first pages overwritten
            f.write(os.urandom(8192))


@pytest.mark.parametrize("how", ["deleted", "emptied", "corrupted"])
def test_a_lost_catalog_is_refused_not_recreated(cli, backed_up: Path, how: str) -> None:
    _lose(backed_up, how)
    size = backed_up.stat().st_size if backed_up.exists() else None
    for args in (("backup", "list"), ("policies", "list"), ("backup", "run", "photos")):
        proc = cli(*args, check=False)
        assert proc.returncode == 4, (args, proc.stdout, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
        assert ("damaged" if how == "corrupted" else "missing or empty") in proc.stderr
    # nothing was made in its place
    assert (backed_up.stat().st_size if backed_up.exists() else None) == size
    if how != "corrupted":
        fresh = cli("--new-catalog", "backup", "list")
        assert "no backups" in fresh.stdout.lower()
        cli("backup", "list")  # from then on it is the catalog
