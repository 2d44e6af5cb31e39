"""Every mistake a user can make at the command line is one line on stderr, with the code
of the exit-code table (docs/OPERATIONS.md: 2 bad input, 3 integrity, 4 the catalog), no
traceback, no password, and nothing changed; ``-v`` adds the cause chain.

One set-up for the module (a directory backup, a database backup, an escrow bundle, a
second id sharing the first one's 8-character prefix); each row of the table is one run
of the real command, with its arguments and environment."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import textwrap
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from cliutil import VOWVAULT

SECRET = "s3cr3t-pw"
CLOSED_PG = f"postgresql://postgres:{SECRET}@127.0.0.1:1/vv"
PASSPHRASE = "a long enough escrow passphrase"
PG_ADMIN_URL = os.environ.get("VOWVAULT_TEST_PG_URL",
                              "postgresql://postgres@127.0.0.1:5432/postgres")  # as conftest


def _pg_url(admin_url: str, dbname: str) -> str:
    return f"{admin_url.rpartition('/')[0]}/{dbname}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pg_admin: psycopg.Connection
          ) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("cli-errors")
    src = tmp / "src"
    src.mkdir()
    (src / "IMG_1.jpg").write_bytes(os.urandom(20_000))
    source_db = f"vvtest_{uuid.uuid4().hex[:12]}"
    pg_admin.execute(f'CREATE DATABASE "{source_db}"')
    with psycopg.connect(_pg_url(PG_ADMIN_URL, source_db), autocommit=True) as conn:
        conn.execute("CREATE TABLE guests (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO guests SELECT g, 'guest ' || g FROM generate_series(1, 20) g")
    storage = tmp / "storage"
    (tmp / "p.yaml").write_text(textwrap.dedent(f"""\
        version: 1
        organizations:
          - {{slug: lumiere, name: Lumiere, vendor_type: photographer}}
        policies:
          - name: photos
            organization: lumiere
            source: {{kind: directory, path: {src}}}
            schedule: {{cron: "0 2 * * *", timezone: UTC}}
            peak_season: {{multiplier: 1}}
            storage:
              - {{url: "file://{storage}", tier: HOT}}
          - name: guests-db
            organization: lumiere
            source: {{kind: postgres, dsn: "{_pg_url(PG_ADMIN_URL, source_db)}"}}
            schedule: {{cron: "0 3 * * *", timezone: UTC}}
            peak_season: {{multiplier: 1}}
            storage:
              - {{url: "file://{storage}", tier: HOT}}
        """))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("VOWVAULT_", "PREFECT_", "AWS_"))}
    env.update(VOWVAULT_HOME=str(tmp / "home"), VOWVAULT_ACTOR="tester", COLUMNS="200",
               NO_COLOR="1", ESCROW_PASS=PASSPHRASE)

    def run(*args: str) -> str:
        proc = subprocess.run([VOWVAULT, *args], capture_output=True, text=True, env=env,
                              timeout=120)
        assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
        return proc.stdout

    run("policies", "apply", str(tmp / "p.yaml"))
    backup_id = run("backup", "run", "photos", "--direct").split()[1]
    db_backup = run("backup", "run", "guests-db", "--direct").split()[1]
    run("keys", "export", "lumiere", "--out", str(tmp / "good.escrow"), "--passphrase-env",
        "ESCROW_PASS")
    with sqlite3.connect(tmp / "home" / "catalog.db") as db:  # a FAILED twin of the prefix
        db.execute(
            "INSERT INTO backup_jobs (id, organization_id, policy_id, job_name, backup_type, "
            "status, priority, scheduled_at, is_wedding_day_backup, retry_count, legal_hold, "
            "created_at, updated_at) SELECT ?, organization_id, policy_id, job_name, 'FULL', "
            "'FAILED', 'NORMAL', scheduled_at, 0, 0, 0, created_at, updated_at "
            "FROM backup_jobs WHERE id = ?",
            (backup_id.replace("-", "")[:8] + "0" * 24, backup_id.replace("-", "")))
    good = (tmp / "good.escrow").read_bytes()
    (tmp / "truncated.escrow").write_bytes(good[: len(good) // 2])
    (tmp / "list.escrow").write_text("[1, 2]")
    (tmp / "garbage.yaml").write_bytes(b"\x9b\xff" + os.urandom(2000))
    (tmp / "service.yaml").write_text("organizations: [\n")
    (tmp / "not-sqlite.db").write_text("hello, not a database\n" * 50)
    (tmp / "a-file").write_text("x")
    (tmp / "a-dir").mkdir()
    yield {"tmp": tmp, "env": env, "id": backup_id, "db_id": db_backup, "src": src,
           "storage": storage, "home": tmp / "home", "fresh": tmp / "fresh-home",
           "source_dsn": _pg_url(PG_ADMIN_URL, source_db)}
    pg_admin.execute(f'DROP DATABASE IF EXISTS "{source_db}" WITH (FORCE)')


def _vowvault(world: dict[str, Any], args: list[str], env: dict[str, str]
              ) -> subprocess.CompletedProcess[str]:
    # A session of its own: no terminal to prompt on, as in cron or a pipeline.
    return subprocess.run([VOWVAULT, *args], capture_output=True, text=True,
                          env={**world["env"], **env}, timeout=120,
                          stdin=subprocess.DEVNULL, start_new_session=True)


def _state(world: dict[str, Any]) -> tuple[object, ...]:
    """What no refused command may change: backups, copies, policies, organizations,
    erasure requests, the stored objects and the key files."""
    with sqlite3.connect(world["home"] / "catalog.db") as db:
        rows = tuple(db.execute(sql).fetchall() for sql in (
            "SELECT id, status FROM backup_jobs ORDER BY id",
            "SELECT backup_job_id, storage_url, status FROM backup_storage ORDER BY 1, 2",
            "SELECT name, is_active FROM backup_policies ORDER BY name",
            "SELECT slug FROM organizations", "SELECT count(*) FROM erasure_requests"))
    files = tuple(sorted((str(p.relative_to(world["tmp"])), p.stat().st_size)
                         for d in (world["storage"], world["home"] / "keys", world["src"])
                         for p in d.rglob("*") if p.is_file()))
    return rows, files


NO_AWS = {"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
          "AWS_EC2_METADATA_DISABLED": "true"}

CASES: list[tuple[str, list[str], dict[str, str], int, str]] = [
    # The command line itself: Typer's usage errors were tracebacks (exit 1).
    ("missing argument", ["backup", "show"], {}, 2, "Missing argument 'BACKUP'"),
    ("unknown command", ["backup", "lst"], {}, 2, "No such command 'lst'"),
    # Numbers, dates and files to write: checked as they are parsed.
    ("negative limit", ["backup", "list", "--limit", "-1"], {}, 2, "not a number of rows"),
    ("nan seconds", ["backup", "restore", "{id}", "--to-dir", "{tmp}/r", "--wait-archive", "nan"],
     {}, 2, "nan is not a number of seconds"),
    ("bad day", ["analytics", "--day", "2027-13-01"], {}, 2, "--day '2027-13-01': give a date"),
    ("report into no directory", ["report", "--html", "{tmp}/nodir/r.html"], {}, 2,
     "cannot write {tmp}/nodir/r.html"),
    # Names and ids.
    ("ambiguous id (worked)", ["backup", "verify", "{prefix}"], {}, 2, "is ambiguous"),
    ("unknown policy, Prefect mode", ["backup", "run", "nosuch"], {}, 2,
     "no policy named 'nosuch'"),
    ("unknown policy to retention", ["retention", "--dry-run", "--policy", "nosuch"], {}, 2,
     "no policy named 'nosuch'"),
    ("random:-1 drill", ["drill", "photos", "--backup", "random:-1"], {}, 2, "random:N"),
    ("malformed audit head", ["audit", "verify", "--expect-head", "garbage"], {}, 2,
     "is not an audit head"),
    # Files.
    ("directory as policy file", ["policies", "apply", "{tmp}/a-dir"], {}, 2,
     "cannot read: Is a directory"),
    ("bundle of another shape", ["keys", "import", "{tmp}/list.escrow", "--passphrase-env",
                                 "ESCROW_PASS"], {}, 2, "not a readable escrow bundle"),
    ("no terminal for the passphrase", ["keys", "import", "{tmp}/good.escrow"], {}, 2,
     "give --passphrase-env"),
    # Restore targets.
    ("restore inside the source", ["backup", "restore", "{id}", "--to-dir", "{src}/restored"],
     {}, 2, "is inside {src}"),
    ("restore onto a file", ["backup", "restore", "{id}", "--to-dir", "{tmp}/a-file"], {}, 2,
     "exists and is not a directory"),
    ("restore under a file", ["backup", "restore", "{id}", "--to-dir", "{tmp}/a-file/x"], {}, 2,
     "cannot restore into {tmp}/a-file/x: Not a directory"),
    ("unset password variable", ["backup", "restore", "{db_id}", "--to-database",
                                 "postgresql://postgres@127.0.0.1/x", "--password-env", "NOPE"],
     {}, 2, "environment variable NOPE"),
    ("DSN that is none", ["backup", "restore", "{db_id}", "--to-database",
                          f"host=x password={SECRET} garbage"], {}, 2,
     "not a PostgreSQL connection string"),
    ("DSN without a database", ["backup", "restore", "{db_id}", "--to-database",
                                "postgresql://postgres@127.0.0.1:5432/"], {}, 2,
     "names no database"),
    ("closed database port", ["backup", "restore", "{db_id}", "--to-database", CLOSED_PG], {},
     1, "Connection refused"),
    # Erasure requests that could never match.
    ("erasure outside the tree", ["gdpr", "request", "lumiere", "c1", "--path", "../*"], {}, 2,
     "--path '../*'"),
    # Settings (passwords in them never shown).
    ("catalog of another kind", ["backup", "list"],
     {"VOWVAULT_DATABASE_URL": f"mysql://u:{SECRET}@127.0.0.1:1/x"}, 2,
     "neither PostgreSQL nor SQLite"),
    ("catalog on a closed port", ["catalog", "upgrade"], {"VOWVAULT_DATABASE_URL": CLOSED_PG},
     4, "cannot reach the catalog"),
    ("catalog that is not SQLite", ["catalog", "current"],
     {"VOWVAULT_DATABASE_URL": "sqlite:///{tmp}/not-sqlite.db"}, 4, "is damaged"),
    ("home is a file", ["backup", "list"], {"VOWVAULT_HOME": "{tmp}/a-file"}, 2,
     "VOWVAULT_HOME {tmp}/a-file is not a directory"),
    ("home cannot be made", ["backup", "list"], {"VOWVAULT_HOME": "/proc/vowvault-home"}, 4,
     "cannot create /proc/vowvault-home"),
    ("service file YAML error", ["orgs", "list"],
     {"VOWVAULT_SERVICE_CONFIG": "{tmp}/service.yaml"}, 2, "is not valid YAML"),
    ("Prefect API not answering", ["deploy"], {"PREFECT_API_URL": "http://127.0.0.1:1/api"}, 1,
     "the Prefect API at http://127.0.0.1:1/api does not answer"),
    # Storage URLs (into a new, empty catalog).
    ("S3 endpoint that is none", ["catalog", "rebuild", "--from",
                                  "s3://some-bucket/x?endpoint_url=nonsense"],
     {"VOWVAULT_HOME": "{fresh}"}, 2, "endpoint_url"),
    ("S3 without credentials (worked)", ["catalog", "rebuild", "--from",
                                         "s3://some-bucket/x?endpoint_url=http://127.0.0.1:1"],
     {"VOWVAULT_HOME": "{fresh}", **NO_AWS}, 2, "no usable AWS credentials"),
]


@pytest.mark.parametrize("what, args, env, code, fragment", CASES, ids=[c[0] for c in CASES])
def test_one_line_and_the_documented_code(world: dict[str, Any], what: str, args: list[str],
                                          env: dict[str, str], code: int, fragment: str) -> None:
    values = {k: str(world[k]) for k in ("tmp", "id", "db_id", "src", "fresh")}
    values["prefix"] = world["id"][:8]
    args = [a.format(**values) for a in args]
    env = {k: v.format(**values) for k, v in env.items()}
    before = _state(world)
    proc = _vowvault(world, args, env)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("vowvault: error: "), lines[0]
    assert fragment.format(**values) in lines[0], lines[0]
    assert SECRET not in proc.stderr + proc.stdout
    assert _state(world) == before


def test_minus_v_adds_the_cause_chain(world: dict[str, Any]) -> None:
    env = {"VOWVAULT_DATABASE_URL": CLOSED_PG}
    quiet = _vowvault(world, ["catalog", "current"], env)
    loud = _vowvault(world, ["-v", "catalog", "current"], env)
    assert quiet.returncode == loud.returncode == 4
    first, *rest = [ln for ln in loud.stderr.splitlines() if ln.strip()]
    assert quiet.stderr.strip() == first
    assert rest and rest[0].startswith("  caused by ") and all(ln.startswith("  ") for ln in rest)
    assert any("OperationalError" in ln for ln in rest) and "Traceback" not in loud.stderr
    assert SECRET not in loud.stderr
    usage = _vowvault(world, ["-v", "backup", "show"], {})
    assert usage.returncode == 2 and "Usage: vowvault backup show" in usage.stderr


def test_no_arguments_is_help_and_targets_check_works(world: dict[str, Any]) -> None:
    bare = _vowvault(world, [], {})
    assert bare.returncode == 0 and "Usage: vowvault" in bare.stdout and not bare.stderr
    checked = _vowvault(world, ["targets", "list", "--check", "--json"], {})  # was a TypeError
    assert checked.returncode == 0 and not checked.stderr, checked.stderr
    assert [t["available"] for t in json.loads(checked.stdout)] == [True]
