"""`make demo`'s main job, on a fresh HOME: it must keep working as the README promises."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cliutil import VOWVAULT

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_backs_up_verifies_restores_and_compares(cli_env, tmp_path: Path,
                                                      pg_database, pg_admin) -> None:
    venue = pg_database()  # its own database, so parallel runs do not meet
    env = {**cli_env, "HOME": str(tmp_path), "GRAND_HALL_DSN": venue}
    env.pop("VOWVAULT_HOME")
    env.pop("PREFECT_API_URL", None)
    try:
        proc = subprocess.run([VOWVAULT, "demo"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300)
    finally:
        pg_admin.execute(f'DROP DATABASE IF EXISTS "{venue.rsplit("/", 1)[1]}_demo_restore" '
                         f'WITH (FORCE)')
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "identical to the source: yes" in out
    assert "re-verified from storage: intact" in out
    assert "row counts and checksums equal" in out
    assert (tmp_path / ".vowvault" / "catalog.db").exists()
