"""`make demo`'s main job on a fresh HOME, then the README's tour command by command in a
new shell, as the README promises: no variable the demo set survives into that shell."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cliutil import VOWVAULT

ROOT = Path(__file__).resolve().parents[2]


def tour_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Ten-minute tour", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [re.sub(r"\s+#.*$", "", line).strip() for line in block.strip().splitlines()]


@pytest.fixture
def demo(cli_env, tmp_path: Path, pg_database, pg_admin) -> dict[str, object]:
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
    return {"proc": proc, "home": tmp_path, "venue": venue, "pg": pg_admin}


@pytest.mark.slow
def test_demo_then_the_readme_tour_in_a_new_shell(demo) -> None:
    proc: subprocess.CompletedProcess[str] = demo["proc"]  # type: ignore[assignment]
    home: Path = demo["home"]  # type: ignore[assignment]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "identical to the source: yes" in out
    assert "re-verified from storage: intact" in out
    assert "row counts and checksums equal" in out and "dropped it again" in out
    steps = [int(m) for m in re.findall(r"^(\d+)\. ", out, re.M)]
    assert steps == sorted(set(steps)), out  # each step once, in order
    assert " MB" not in out and "INFO" not in out and "Task run" not in out, out
    assert "vowvault serve" in out and "docs/PRODUCTION.md" in out
    assert proc.stderr == "", proc.stderr
    assert (home / ".vowvault" / "catalog.db").exists()
    venue_name = str(demo["venue"]).rsplit("/", 1)[1]
    assert not demo["pg"].execute(  # type: ignore[attr-defined]
        "SELECT 1 FROM pg_database WHERE datname = %s", (f"{venue_name}_demo_restore",)
    ).fetchone()

    # A new shell: only what a user's login would have (no VOWVAULT_*, no demo paths).
    shell_env = {"HOME": str(home), "PATH": os.environ["PATH"], "COLUMNS": "200",
                 "NO_COLOR": "1", "GRAND_HALL_DSN": str(demo["venue"]), "LANG": "C.UTF-8"}
    restored = home / "restored"
    backup_id = None
    for line in tour_commands():
        if "<id>" in line:
            if backup_id is None:
                listed = run_shell(". .venv/bin/activate && vowvault backup list --json",
                                   shell_env)
                backup_id = json.loads(listed.stdout)[0]["id"]
            line = line.replace("<id>", backup_id)
        line = line.replace("/tmp/restored", str(restored))
        result = run_shell(line if line.startswith(". ") else
                           f". .venv/bin/activate && {line}", shell_env)
        if "policies apply" in line:  # nothing repointed in a shell without the demo's env
            assert "0 changed" in result.stdout, result.stdout
        if "--at 2027-06-12" in line:
            assert "wedding day" in result.stdout, result.stdout
    assert (restored / "README.txt").exists()
    assert not (home / ".prefect").exists(), "a ~/.prefect although PREFECT_HOME is elsewhere"
    shutil.rmtree(restored)


def run_shell(line: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["bash", "-c", line], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"{line}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc
