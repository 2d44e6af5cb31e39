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
    return {**os.environ, "VOWVAULT_HOME": str(tmp_path / "home"), "COLUMNS": "120",
            "XDG_CACHE_HOME": str(tmp_path / "cache")}


def rendered(args: list[str], env: dict[str, str]) -> tuple[int, str, list[str]]:
    """Exit code, output, and which of Typer, Click, Rich the command imported."""
    code = ("import json, sys; sys.argv = ['vowvault', *json.loads(sys.argv[1])]\n"
            "from vowvault.cli.entry import main\n"
            "rc = 0\n"
            "try:\n    main()\nexcept SystemExit as exc:\n"
            "    rc = exc.code if isinstance(exc.code, int) else 0\n"
            "sys.stdout.flush()\n"
            "ui = sorted(m for m in ('typer', 'click', 'rich') if m in sys.modules)\n"
            "sys.stderr.write('\\nUI=' + json.dumps([rc, ui]) + '\\n')\n")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)], env=env,
                          capture_output=True, text=True, timeout=120)
    rc, ui = json.loads(proc.stderr.rsplit("UI=", 1)[1])
    return rc, proc.stdout, ui


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


@pytest.mark.parametrize("args", [["--help"], ["backup", "--help"], ["keys", "rotate", "--help"]])
def test_a_help_page_is_rendered_once_then_read_back_without_typer(env, args):
    rc, first, ui = rendered(args, env)
    assert rc == 0 and "Usage" in first and "typer" in ui
    rc, again, ui = rendered(args, env)
    assert (rc, again, ui) == (0, first, [])
    narrow = {**env, "COLUMNS": "72"}  # another width: rendered again, at that width
    rc, slim, ui = rendered(args, narrow)
    assert rc == 0 and "typer" in ui and slim != first
    assert max(len(line) for line in slim.splitlines()) <= 72
    assert rendered(args, narrow)[1:] == (slim, [])


def test_only_a_successful_help_request_is_kept(env, tmp_path):
    for args in (["no-such-command", "--help"], ["backup", "--limit", "3", "--help"],
                 ["backup", "list"]):
        rendered(args, env)
    assert not (tmp_path / "cache" / "vowvault" / "help").exists() or not list(
        (tmp_path / "cache" / "vowvault" / "help").iterdir())
    rc, _, ui = rendered(["no-such-command", "--help"], env)
    assert rc == 2 and "typer" in ui


def test_a_changed_module_or_version_makes_another_key(tmp_path, monkeypatch):
    import shutil

    from vowvault.cli import helpcache

    root = tmp_path / "vowvault"
    shutil.copytree(helpcache.PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    before = helpcache.key(["--help"], root)
    assert helpcache.key(["--help"], root) == before
    assert helpcache.key(["backup", "--help"], root) != before
    module = root / "cli" / "backups.py"
    os.utime(module, ns=(module.stat().st_atime_ns, module.stat().st_mtime_ns + 1))
    assert helpcache.key(["--help"], root) != before
    after = helpcache.key(["--help"], root)
    monkeypatch.setattr("vowvault.__version__", "99.0")
    versioned = helpcache.key(["--help"], root)
    assert versioned != after
    monkeypatch.setenv("NO_COLOR", "1")  # renders without colour: another page
    assert helpcache.key(["--help"], root) != versioned


def test_backup_list_loads_no_codec_and_no_cipher(env):
    """Listing reads the catalog only: the frame codec and the key wrapping (zstandard,
    cryptography) are imported by commands that move or open data."""
    from vowvault.codec.frames import DEFAULT_FRAME_SIZE
    from vowvault.engine.context import Context

    assert Context.__dataclass_fields__["frame_size"].default == DEFAULT_FRAME_SIZE
    code = ("import sys; sys.argv = ['vowvault', 'backup', 'list']\n"
            "from vowvault.cli.entry import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "sys.stdout.flush()\n"
            "print(sorted(m for m in ('zstandard', 'cryptography', 'blake3') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout.splitlines()
    assert out[-1] == "[]", out
