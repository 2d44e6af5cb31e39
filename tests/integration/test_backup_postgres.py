"""PostgreSQL logical backups through the real engine and the real server: round trip with
per-table validation, and the faults a database source can have."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from trees import backup_files

from vowvault.catalog.models import BackupJob, BackupStorage
from vowvault.domain import BackupStatus
from vowvault.engine.backup import run_backup
from vowvault.engine.context import Context
from vowvault.engine.restore import restore_backup
from vowvault.errors import RestoreError, SourceError

SCHEMA = """
CREATE SCHEMA venue;
CREATE TABLE venue.bookings (id serial PRIMARY KEY, couple text NOT NULL, wedding_date date,
    deposit numeric(10,2), booked_at timestamptz DEFAULT now(), notes jsonb);
CREATE TABLE venue."Guest List" (booking_id int REFERENCES venue.bookings, name text,
    meal text, seat int, photo bytea);
CREATE TABLE public.empty_table (x int);
CREATE TABLE venue.messages (id int, body text);
INSERT INTO venue.messages
    SELECT g, repeat(md5(g::text), (g * 7919) % 90) FROM generate_series(1, 40000) g;
INSERT INTO venue.bookings (couple, wedding_date, deposit, notes)
    SELECT 'couple ' || g || E'\\twith tab', date '2027-05-01' + g, 500 + g / 7.0,
           jsonb_build_object('band', g % 3 = 0, 'note', repeat('ü', g % 5))
    FROM generate_series(1, 3000) g;
INSERT INTO venue."Guest List"
    SELECT 1 + g % 3000, 'guest ' || g, (ARRAY['fish','veg','beef'])[1 + g % 3], g % 12,
           CASE WHEN g % 100 = 0 THEN decode(md5(g::text), 'hex') END
    FROM generate_series(1, 60000) g;
"""


@pytest.fixture
def venue_db(pg_database) -> str:
    url = pg_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)
    return url


def counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("venue.bookings", 'venue."Guest List"', "public.empty_table",
                          "venue.messages")}


def test_database_round_trip_is_validated_table_by_table(ctx: Context, policy, venue_db: str,
                                                        pg_database) -> None:
    name = policy("venue-db", f"{{kind: postgres, dsn: '{venue_db}'}}")
    result = run_backup(ctx, name)
    assert result.status == "COMPLETED" and result.tables == 4
    target = pg_database()
    restored = restore_backup(ctx, result.job_id, to_database=target, force=False)
    # Rows of very different widths: restored in another order, they would not validate.
    assert restored.validation == {"tables": 4, "rows": 103000, "checked": True,
                                   "erasures_applied": 0}
    assert counts(target) == counts(venue_db)
    with ctx.catalog.session() as s:
        job = s.get(BackupJob, uuid.UUID(result.job_id))
        assert job.source_info["tables"] == 4 and job.source_info["rows"] == 103000
        assert "password" not in str(job.source_info).lower()


def test_restore_creates_a_missing_database_and_refuses_a_non_empty_one(
        ctx: Context, policy, venue_db: str, pg_database, pg_admin) -> None:
    result = run_backup(ctx, policy("venue-db", f"{{kind: postgres, dsn: '{venue_db}'}}"))
    fresh = f"vvtest_new_{uuid.uuid4().hex[:8]}"
    target = venue_db.rsplit("/", 1)[0] + "/" + fresh
    try:
        restore_backup(ctx, result.job_id, to_database=target)
        assert counts(target) == counts(venue_db)
        with pytest.raises(RestoreError, match="is not empty"):
            restore_backup(ctx, result.job_id, to_database=target)
        restore_backup(ctx, result.job_id, to_database=target, force=True)
        assert counts(target) == counts(venue_db)
    finally:
        pg_admin.execute(f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)')


def test_validation_catches_a_restore_that_differs(ctx: Context, policy, venue_db: str,
                                                   pg_database) -> None:
    """Validation is not a formality: a database that differs from the dump is refused."""
    from vowvault.engine import objects
    from vowvault.sources.postgres import validate

    result = run_backup(ctx, policy("venue-db", f"{{kind: postgres, dsn: '{venue_db}'}}"))
    target = pg_database()
    restore_backup(ctx, result.job_id, to_database=target)
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("UPDATE venue.bookings SET couple = 'someone else' WHERE id = 7")
    with ctx.catalog.read() as s:
        stored = objects.read_stored(s, uuid.UUID(result.job_id))
    database = objects.open_reader(ctx, stored).manifest.sections["database"]
    with pytest.raises(RestoreError, match=r"venue\.bookings: 3000 rows .* content differs"):
        validate(database, target, None)


def test_unreachable_database_fails_cleanly(ctx: Context, policy) -> None:
    name = policy("venue-db", "{kind: postgres, dsn: 'postgresql://postgres@127.0.0.1:1/x'}")
    with pytest.raises(SourceError, match=r"cannot connect to postgresql://postgres@127.0.0.1:1/x"):
        run_backup(ctx, name)
    assert_failed_and_clean(ctx)


def test_pg_dump_dying_mid_stream_fails_the_job(ctx: Context, policy, venue_db: str) -> None:
    name = policy("venue-db", f"{{kind: postgres, dsn: '{venue_db}'}}")
    killed = []

    def kill_pg_dump(what: str, done: int, total: int | None) -> None:
        if what == "dump" and not killed:
            for pid in _children_named("pg_dump"):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    ctx.progress = kill_pg_dump
    with pytest.raises(SourceError, match=r"pg_dump .* failed"):
        run_backup(ctx, name)
    assert killed
    assert_failed_and_clean(ctx)


def assert_failed_and_clean(ctx: Context) -> None:
    with ctx.catalog.session() as s:
        job = s.execute(sa.select(BackupJob)).scalar_one()
        assert job.status == BackupStatus.FAILED and job.error_message
        assert "\n" not in job.error_message
        rows = list(s.execute(sa.select(BackupStorage)).scalars())
        assert all(r.status.value == "DELETED" for r in rows)
    assert backup_files(Path(ctx.settings.home).parent / "storage") == []


def _children_named(name: str) -> list[int]:
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if comm == name and ppid == me:
            found.append(int(entry.name))
    return found


def test_wrong_password_and_password_from_the_environment(
        ctx: Context, policy, password_cluster, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    url = str(password_cluster["url"])
    with psycopg.connect(url, password=password_cluster["password"], autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS vows")
        conn.execute("CREATE DATABASE vows")
    dsn = url.rsplit("/", 1)[0] + "/vows"
    name = policy("venue-db", f"{{kind: postgres, dsn: '{dsn}', password_env: VENUE_PW}}")
    monkeypatch.setenv("VENUE_PW", "not-the-password")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    with pytest.raises(SourceError, match="password authentication failed"):
        run_backup(ctx, name)
    monkeypatch.setenv("VENUE_PW", str(password_cluster["password"]))
    result = run_backup(ctx, name)
    assert result.status == "COMPLETED"
    with ctx.catalog.session() as s:
        statuses = sorted(j.status.value for j in s.execute(sa.select(BackupJob)).scalars())
        assert statuses == ["COMPLETED", "FAILED"]
        text = " ".join(str(j.source_info) + str(j.error_message)
                        for j in s.execute(sa.select(BackupJob)).scalars())
    assert "s3cret" not in text and "not-the-password" not in text


def _logging_wrappers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                      dump_args: str = '"$@"') -> Path:
    """pg_dump and pg_restore on PATH that log each run and exec the real tools."""
    import shutil

    bindir, log = tmp_path / "bin", tmp_path / "tools.log"
    bindir.mkdir()
    real = {name: shutil.which(name) for name in ("pg_dump", "pg_restore")}
    (bindir / "pg_dump").write_text(
        f'#!/bin/sh\necho "pg_dump $*" >> {log}\nexec {real["pg_dump"]} {dump_args}\n')
    (bindir / "pg_restore").write_text(
        f'#!/bin/sh\necho "pg_restore $*" >> {log}\nexec {real["pg_restore"]} "$@"\n')
    for tool in bindir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log


def test_a_dump_the_tap_parsed_is_only_authenticated_on_its_read_back(
        ctx: Context, policy, venue_db: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The tap proves the archive as it streams (every TOC entry and data block), so the
    backup's own read-back does not decode it again; ``backup verify`` still reads it all
    with pg_restore."""
    from vowvault.engine.verify import verify_backup

    log = _logging_wrappers(tmp_path, monkeypatch)
    result = run_backup(ctx, policy("venue-db", f"{{kind: postgres, dsn: '{venue_db}'}}"))
    assert result.status == "COMPLETED" and result.tables == 4
    assert [ln.split()[0] for ln in log.read_text().splitlines()] == ["pg_dump"]
    verify_backup(ctx, result.job_id)
    assert "pg_restore --file=/dev/null" in log.read_text()


def test_a_dump_the_tap_cannot_parse_is_read_whole_by_pg_restore_before_it_counts(
        ctx: Context, policy, venue_db: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A compressed archive (here: a pg_dump that ignores --compress=0) has no per-table
    digests and no in-stream proof: the backup's read-back decodes it and pg_restore reads
    every entry, and the backup still completes, with a warning."""
    log = _logging_wrappers(tmp_path, monkeypatch, dump_args='"$@" --compress=6')
    result = run_backup(ctx, policy("venue-db", f"{{kind: postgres, dsn: '{venue_db}'}}"))
    assert result.status == "COMPLETED"
    assert any("per-table checksums unavailable" in w and "compressed" in w
               for w in result.warnings), result.warnings
    assert [ln.split()[:2] for ln in log.read_text().splitlines()] == \
        [["pg_dump", "--format=custom"], ["pg_restore", "--file=/dev/null"]]


def test_psql_readers_take_the_password_from_the_environment_not_the_command_line(
        password_cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation's psql readers log in like the main connection, and a password is never
    on a command line (where ps shows it)."""
    import shutil
    import subprocess
    from unittest import mock

    from psycopg.conninfo import make_conninfo

    from vowvault.sources import pgarchive

    url, password = str(password_cluster["url"]), str(password_cluster["password"])
    with psycopg.connect(url, password=password, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS digests")
        conn.execute("CREATE DATABASE digests")
    dsn = url.rsplit("/", 1)[0] + "/digests"
    with psycopg.connect(dsn, password=password, autocommit=True) as conn:
        conn.execute("CREATE TABLE guests AS SELECT g AS id, md5(g::text) AS name "
                     "FROM generate_series(1, 5000) g")
        settings = pgarchive.session_settings(conn)
    dump = subprocess.run(["pg_dump", "-Fc", "-Z0", f"--dbname={dsn}"], capture_output=True,
                          check=True, env={**os.environ, "PGPASSWORD": password}).stdout
    tap = pgarchive.ArchiveTap()
    tap.feed(dump)
    summary = tap.finish()
    summary.settings = settings
    bindir, log = tmp_path / "bin", tmp_path / "psql.log"
    bindir.mkdir()
    (bindir / "psql").write_text(f'#!/bin/sh\necho "psql $*" >> {log}\n'
                                 f'exec {shutil.which("psql")} "$@"\n')
    (bindir / "psql").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    with mock.patch.object(pgarchive, "PSQL_FROM", 0):
        got = pgarchive.database_digests(make_conninfo(dsn, password=password), summary)
    assert got == summary.digests() and got[("public", "guests")][0] == 5000
    assert "psql" in log.read_text() and password not in log.read_text()
