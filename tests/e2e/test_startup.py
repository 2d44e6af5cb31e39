"""Start-up: what each kind of command line imports (issue 19: `--version` and `--help`
within 0.2 s, `backup list` within 0.6 s). Times are measured by benchmarks; these tests
pin the property that makes them possible: a command imports only what it uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

HEAVY = ("sqlalchemy", "prefect", "boto3", "google.cloud.storage", "azure.storage.blob",
         "pandas", "yaml", "zstandard", "psycopg", "croniter", "alembic")
"""Libraries a command that does not use them must not import (pydantic is Typer's own:
Typer 0.29 coerces every parameter with it)."""



def loaded(args: list[str], env: dict[str, str]) -> tuple[int, set[str], str]:
    """Run the real entry point in a fresh interpreter; its exit code, which of HEAVY it
    imported, and its output."""
    code = (
        "import json, sys\n"
        "args = json.loads(sys.argv[1])\n"
        "sys.argv = ['vowvault', *args]\n"
        "from vowvault.cli.entry import main\n"
        "rc = 0\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as exc:\n"
        "    rc = exc.code if isinstance(exc.code, int) else 0\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "sys.stdout.flush()\n"
        "sys.stderr.write('\\nHEAVY=' + json.dumps([rc, heavy]) + '\\n')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], env=env,
                          capture_output=True, text=True, timeout=120)
    marker = proc.stderr.rsplit("HEAVY=", 1)
    assert len(marker) == 2, proc.stderr
    rc, heavy = json.loads(marker[1])
    return rc, set(heavy), proc.stdout


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "VOWVAULT_HOME": str(tmp_path / "home"), "COLUMNS": "120"}


def test_version_imports_nothing_but_the_package(env):
    code = ("import sys; sys.argv = ['vowvault', '--version']\n"
            "from vowvault.cli.entry import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('typer', 'rich', 'click') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout.splitlines()
    assert out[0].startswith("vowvault ")
    assert out[1] == "[]"


@pytest.mark.parametrize("args", [["--help"], ["backup", "--help"], ["backup", "run", "--help"],
                                  ["wal", "--help"], ["policies", "init", "--help"],
                                  ["no-such-command"], ["backup", "list", "--limit", "0"]])
def test_help_and_usage_errors_import_no_heavy_library(env, args):
    rc, heavy, out = loaded(args, env)
    assert heavy == set(), f"{args} imported {sorted(heavy)}"
    assert rc in (0, 2)
    if args[-1] == "--help":
        assert "Usage" in out


def test_a_group_help_still_lists_its_commands_and_the_root_help_every_group(env):
    _, _, root = loaded(["--help"], env)
    for group in ("backup", "policies", "wal", "keys", "catalog"):
        assert group in root
    _, _, backup = loaded(["backup", "--help"], env)
    for command in ("run", "list", "verify", "restore"):
        assert command in backup


def test_backup_list_loads_the_catalog_but_not_prefect_or_the_clouds(env):
    rc, heavy, out = loaded(["backup", "list"], env)
    assert rc == 0, out
    assert "sqlalchemy" in heavy
    assert heavy.isdisjoint({"prefect", "boto3", "google.cloud.storage", "azure.storage.blob",
                             "pandas"}), heavy
