"""ArchiveTap reads a real ``pg_dump -Fc -Z0`` stream, and a real restore gives the same digests.

Empirical facts these tests pin down (pg_dump/pg_restore 15, archive 1.14): pg_dump ends each
table's data with a ``\\.`` line; it sets DateStyle, IntervalStyle and extra_float_digits but
inherits TimeZone from the database default; a table restored by COPY returns its rows in dump
order (20 MB and TOASTed tables included); a partitioned table's data is dumped per partition.
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.conninfo import make_conninfo

from vowvault.errors import RestoreError
from vowvault.sources.pgarchive import (
    ArchiveSummary,
    ArchiveTap,
    TableDigest,
    copy_column_list,
    database_digests,
    session_settings,
    split_column_list,
    table_digest,
)

SOURCE_TZ = "Asia/Tokyo"
RESTORE_TZ = "America/New_York"

RICH_SCHEMA = r'''
CREATE SCHEMA "Sales Data";
CREATE SCHEMA audit;
CREATE TABLE "Sales Data"."Mixed Case ""Quoted"" Table" (
    id int PRIMARY KEY, "Weird ""Col""" text, "UPPER" int, "with space" jsonb);
INSERT INTO "Sales Data"."Mixed Case ""Quoted"" Table" VALUES
    (1, 'a', 1, '{"k": [1, 2.50, "\u00e9"]}'), (2, NULL, NULL, NULL), (3, 'c', 3, '[]');
CREATE TABLE public.empty_table (id int, note text);
CREATE TABLE public.no_columns ();
INSERT INTO public.no_columns DEFAULT VALUES;
INSERT INTO public.no_columns DEFAULT VALUES;
CREATE TABLE audit.kinds (
    id serial PRIMARY KEY, t text, b bytea, ts timestamptz, iv interval, f4 real,
    f8 double precision, n numeric, j jsonb, a int[], ta text[], d date, m money);
INSERT INTO audit.kinds (t, b, ts, iv, f4, f8, n, j, a, ta, d, m) VALUES
    (E'tab\there\nnew line\\back slash', '\x00ff5c0a', '2024-01-01 00:00:00+00',
     '1 year 2 mons 3 days 04:05:06.789', 'NaN', 'NaN', 'NaN', '{"a": null}',
     '{1,NULL,3}', '{"x y","q\"uote",NULL}', '2024-02-29', 12.34),
    (E'\\.', '', '1999-12-31 23:59:59.999999+05:30', '-1 day', 'Infinity', 'Infinity',
     '12345678901234567890.123456789', '"\u2603 snowman"', '{}', '{}', 'infinity', -1),
    (E'caf\u00e9 \u65e5\u672c \U0001F600 emoji', NULL, 'infinity', '0', '-Infinity',
     '-Infinity', '-0.000001', '[1, {"b": [true, false]}]', NULL, NULL, '0001-01-01 BC', 0),
    (E'\\.\\N\r\\', '\x5c2e0a', '2038-01-19 03:14:08+00', '100 hours', 1e-40, 1e-310,
     '0', '{}', '{{1,2},{3,4}}', '{"\\\\"}', NULL, NULL),
    (NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    ('', '\x', '2024-06-30 12:00:00-07', '1 mon', 0.1, 0.1, 1e-20, 'null', '{0}', '{""}',
     '2000-01-01', 0.01);
CREATE TABLE audit.measurements (id int, at timestamptz NOT NULL, v float8)
    PARTITION BY RANGE (at);
CREATE TABLE audit.measurements_2023 PARTITION OF audit.measurements
    FOR VALUES FROM ('2023-01-01 00:00+00') TO ('2024-01-01 00:00+00');
CREATE TABLE audit.measurements_2024 PARTITION OF audit.measurements
    FOR VALUES FROM ('2024-01-01 00:00+00') TO ('2025-01-01 00:00+00');
CREATE TABLE audit.measurements_other PARTITION OF audit.measurements DEFAULT;
INSERT INTO audit.measurements
    SELECT g, timestamptz '2022-12-01 00:00+00' + g * interval '7 hours', g / 7.0
    FROM generate_series(1, 5000) g;
CREATE TABLE public.big (id int, payload text);
INSERT INTO public.big
    SELECT g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text)
    FROM generate_series(1, 200000) g;
CREATE TABLE public.toasty (id int, t text, b bytea);
INSERT INTO public.toasty
    SELECT i, encode(r, 'base64'), r
    FROM generate_series(1, 30) i,
         LATERAL (SELECT decode(string_agg(md5(random()::text || j), ''), 'hex') AS r
                  FROM generate_series(1, 1200) j WHERE i > 0) x;
SELECT lo_from_bytea(0, 'a small large object');
SELECT lo_from_bytea(0, decode(string_agg(md5(g::text), ''), 'hex'))
    FROM generate_series(1, 10000) g;
'''

SMALL_SCHEMA = r'''
CREATE SCHEMA "odd ""schema""";
CREATE TABLE "odd ""schema"""."T (1).x" ("a, b" text, "c)" int, "Ünï" text);
INSERT INTO "odd ""schema"""."T (1).x" VALUES
    (E'line\nbreak\\.', 1, E'\U0001F389'), (E'\\.', NULL, ''), (NULL, 3, E'\t');
CREATE TABLE public.events (id int, at timestamptz NOT NULL) PARTITION BY LIST (id);
CREATE TABLE public.events_a PARTITION OF public.events FOR VALUES IN (1, 2);
CREATE TABLE public.events_b PARTITION OF public.events FOR VALUES IN (3);
INSERT INTO public.events VALUES (1, '2024-01-01 10:00+00'), (3, '2024-01-02 10:00+00'),
    (2, '2024-01-03 10:00+00');
CREATE TABLE public.empty ();
'''


@dataclass
class Dumped:
    url: str
    archive: Path
    summary: ArchiveSummary
    counts: dict[tuple[str, str], int]   # SELECT count(*) on the source
    tables: set[tuple[str, str]]          # every ordinary table of the source


def _dump(url: str, *options: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["pg_dump", "-Fc", *options, "--dbname", url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _dump_bytes(url: str, *options: str) -> bytes:
    return subprocess.run(["pg_dump", "-Fc", *options, "--dbname", url], check=True,
                          capture_output=True).stdout


def _restore(archive: Path, url: str) -> None:
    subprocess.run(["pg_restore", "--no-owner", "--exit-on-error", "-j", "2", "-d", url,
                    str(archive)], check=True, capture_output=True)


def digest_hex(data: bytes) -> str:
    """The table digest new backups record (BLAKE3 since 2026-12-03)."""
    import blake3

    return blake3.blake3(data).hexdigest()


def _tap(data: bytes, sizes: Callable[[], int]) -> ArchiveSummary:
    tap = ArchiveTap()
    pos = 0
    while pos < len(data):
        n = sizes()
        tap.feed(data[pos:pos + n])
        pos += n
    return tap.finish()


def _source_facts(url: str) -> tuple[dict[tuple[str, str], int], set[tuple[str, str]]]:
    with psycopg.connect(url) as conn:
        tables = {(s, n) for s, n in conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n "
            "ON n.oid = c.relnamespace WHERE c.relkind = 'r' "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema')")}
        counts = {
            (s, n): conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
                sql.Identifier(s, n))).fetchone()[0]
            for s, n in tables}
    return counts, tables


def _toasted_rows(url: str, table: str) -> int:
    with psycopg.connect(url) as conn:
        toast = conn.execute("SELECT reltoastrelid::regclass::text FROM pg_class "
                             "WHERE oid = %s::regclass", (table,)).fetchone()[0]
        return conn.execute(f"SELECT count(*) FROM {toast}").fetchone()[0]


@pytest.fixture(scope="module")
def databases(pg_admin: psycopg.Connection) -> Iterator[Callable[..., str]]:
    """Like conftest's pg_database, shared by the module: the rich database takes seconds."""
    created: list[str] = []

    def make(timezone: str | None = None) -> str:
        name = f"vvtest_{uuid.uuid4().hex[:12]}"
        pg_admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        if timezone:
            pg_admin.execute(sql.SQL("ALTER DATABASE {} SET timezone = {}").format(
                sql.Identifier(name), sql.Literal(timezone)))
        info = pg_admin.info  # not info.dsn: pg_dump's libpq may be older than psycopg's
        return make_conninfo(host=info.host, port=info.port, user=info.user,
                             password=info.password or None, dbname=name)

    yield make
    for name in created:
        pg_admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


@pytest.fixture(scope="module")
def rich(databases: Callable[..., str], tmp_path_factory: pytest.TempPathFactory) -> Dumped:
    url = databases(SOURCE_TZ)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(RICH_SCHEMA)
    archive = tmp_path_factory.mktemp("pgarchive") / "rich.dump"
    rng = random.Random(20240613)
    tap = ArchiveTap()
    proc = _dump(url, "-Z0")
    assert proc.stdout is not None
    with archive.open("wb") as out:
        while True:  # random reads from the pipe: 1 byte to 4 MiB
            chunk = proc.stdout.read(int(2 ** rng.uniform(0, 22)))
            if not chunk:
                break
            tap.feed(chunk)
            out.write(chunk)
    assert proc.wait() == 0, proc.stderr.read() if proc.stderr else ""
    summary = tap.finish()
    with psycopg.connect(url) as conn:
        conn.execute("SET TimeZone = 'UTC'")  # a session SET must not leak into the record
        summary.settings = session_settings(conn)
    counts, tables = _source_facts(url)
    return Dumped(url, archive, summary, counts, tables)


@pytest.fixture(scope="module")
def restored(rich: Dumped, databases: Callable[..., str]) -> str:
    url = databases(RESTORE_TZ)
    _restore(rich.archive, url)
    return url


def test_header_toc_and_row_counts(rich: Dumped) -> None:
    s = rich.summary
    assert s.error is None
    assert (1, 12) <= s.version[:2] <= (1, 16)
    assert s.dbname == psycopg.conninfo.conninfo_to_dict(rich.url)["dbname"]
    version = subprocess.run(["pg_dump", "--version"], capture_output=True, text=True).stdout
    assert s.pg_dump_version and s.pg_dump_version in version
    assert s.server_version and s.encoding == "UTF8"
    assert s.archive_bytes == rich.archive.stat().st_size > 20_000_000
    # One TABLE DATA per ordinary table; the partitioned parent has none, its partitions do.
    assert {(t.schema, t.name) for t in s.tables} == rich.tables
    assert len(s.tables) == len(rich.tables)
    assert ("audit", "measurements") not in s.digests()
    assert {t.name for t in s.tables if t.schema == "audit"} >= {
        "measurements_2023", "measurements_2024", "measurements_other"}
    assert {(t.schema, t.name): t.rows for t in s.tables} == rich.counts
    assert rich.counts[("public", "big")] == 200_000
    assert rich.counts[("public", "empty_table")] == 0
    assert s.blobs == 2
    assert s.blob_bytes == len(b"a small large object") + 16 * 10_000
    assert s.settings["TimeZone"] == SOURCE_TZ
    assert s.settings["server_encoding"] == "UTF8"


def test_column_lists_are_pg_dumps_text(rich: Dumped) -> None:
    by_name = {t.name: t for t in rich.summary.tables}
    weird = by_name['Mixed Case "Quoted" Table']
    assert weird.schema == "Sales Data"
    assert weird.columns == 'id, "Weird ""Col""", "UPPER", "with space"'
    assert split_column_list(weird.columns) == ["id", 'Weird "Col"', "UPPER", "with space"]
    assert by_name["no_columns"].columns == ""
    assert by_name["no_columns"].rows == 2
    empty = digest_hex(b"")
    assert (by_name["empty_table"].rows, by_name["empty_table"].hexdigest) == (0, empty)


def test_terminator_is_not_part_of_the_digest(rich: Dumped) -> None:
    # A value of "\." is escaped by COPY ("\\."), only the end-of-data marker is a bare "\.".
    with psycopg.connect(rich.url) as conn:
        conn.execute("SET DateStyle = ISO; SET extra_float_digits = 3; "
                     "SET IntervalStyle = postgres; SET search_path = ''")
        cur = conn.cursor()
        with cur.copy('COPY "Sales Data"."Mixed Case ""Quoted"" Table" TO STDOUT') as copy:
            text = b"".join(bytes(b) for b in copy)
    by_name = {t.name: t for t in rich.summary.tables}
    assert by_name['Mixed Case "Quoted" Table'].hexdigest == digest_hex(text)
    assert by_name['Mixed Case "Quoted" Table'].rows == text.count(b"\n") == 3


def test_restored_database_gives_the_same_digests(rich: Dumped, restored: str) -> None:
    with psycopg.connect(restored) as conn:  # the restore's own default differs from the source
        assert conn.execute("SHOW TimeZone").fetchone()[0] == RESTORE_TZ
    expected = rich.summary.digests()
    assert database_digests(restored, rich.summary) == expected
    # TOASTed values and a ~20 MB table come back in dump order.
    assert _toasted_rows(rich.url, "public.toasty") > 0
    assert _toasted_rows(restored, "public.toasty") > 0
    big = next(t for t in rich.summary.tables if t.name == "big")
    assert table_digest(restored, "public", "big", big.columns, rich.summary.settings) == (
        big.rows, big.hexdigest)
    weird = next(t for t in rich.summary.tables if t.schema == "Sales Data")
    assert table_digest(restored, weird.schema, weird.name, weird.columns,
                        rich.summary.settings) == (weird.rows, weird.hexdigest)


def test_psql_readers_give_the_main_connections_digests(rich: Dumped, restored: str) -> None:
    """Every table read by psql processes beside the main connection (in its snapshot, with
    its settings) digests as on the main connection alone; a wrong zone shows in both."""
    from vowvault.sources import pgarchive

    alone = database_digests(restored, rich.summary, workers=0)
    assert alone == rich.summary.digests()
    with mock.patch.object(pgarchive, "PSQL_FROM", 0):
        assert database_digests(restored, rich.summary, workers=3) == alone
        wrong = {**rich.summary.settings, "TimeZone": "UTC"}
        assert database_digests(restored, rich.summary, settings=wrong, workers=2) == \
            database_digests(restored, rich.summary, settings=wrong, workers=0) != alone


def test_a_summary_of_sha256_digests_still_validates(rich: Dumped, restored: str) -> None:
    """Backups taken before 2026-12-03 recorded each table's SHA-256: their summaries (as
    the manifest holds them) are validated by SHA-256, on the main connection and by psql
    readers, and a wrong digest of either kind is told apart."""
    import hashlib

    from vowvault.sources import pgarchive

    old = pgarchive.ArchiveSummary.from_json(rich.summary.to_json())
    for t in old.tables:
        rows, hexd = table_digest(restored, t.schema, t.name, t.columns, old.settings,
                                  algorithm="sha256")
        assert rows == t.rows
        t.sha256, t.blake3 = hexd, None
    as_stored = old.to_json()
    assert all("blake3" not in t and len(t["sha256"]) == 64 for t in as_stored["tables"])
    old = pgarchive.ArchiveSummary.from_json(as_stored)
    assert all(t.algorithm == "sha256" for t in old.tables)
    assert database_digests(restored, old, workers=0) == old.digests()
    with mock.patch.object(pgarchive, "PSQL_FROM", 0):
        assert database_digests(restored, old, workers=2) == old.digests()
    empty = next(t for t in old.tables if t.rows == 0)
    assert empty.sha256 == hashlib.sha256(b"").hexdigest()
    assert old.digests() != rich.summary.digests()  # the two kinds never compare equal


def test_a_table_missing_from_the_restore_is_named(rich: Dumped, databases) -> None:
    from vowvault.sources import pgarchive

    url = databases(RESTORE_TZ)
    _restore(rich.archive, url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE public.big")
    with mock.patch.object(pgarchive, "PSQL_FROM", 0), \
            pytest.raises(RestoreError, match=r"cannot digest public\.big"):
        database_digests(url, rich.summary)


def test_timezone_must_be_the_sources(rich: Dumped, restored: str) -> None:
    # pg_dump does not set TimeZone: its timestamptz text is in the source's default zone.
    wrong = {**rich.summary.settings, "TimeZone": "UTC"}
    got = database_digests(restored, rich.summary, settings=wrong)
    expected = rich.summary.digests()
    differing = {key for key in expected if got[key] != expected[key]}
    with psycopg.connect(rich.url) as conn:
        with_tstz = {(s, n) for s, n in conn.execute(
            "SELECT DISTINCT table_schema, table_name FROM information_schema.columns "
            "WHERE data_type = 'timestamp with time zone' AND table_schema <> 'pg_catalog'")}
    assert differing == with_tstz & set(expected)
    assert ("audit", "kinds") in differing


def test_a_changed_row_changes_only_its_table(rich: Dumped, restored: str,
                                              databases: Callable[..., str]) -> None:
    url = databases(RESTORE_TZ)
    _restore(rich.archive, url)
    with psycopg.connect(url) as conn:
        conn.execute('UPDATE audit.kinds SET f8 = f8 WHERE id = 2')  # same value, new place
        conn.execute('UPDATE "Sales Data"."Mixed Case ""Quoted"" Table" '
                     'SET "UPPER" = 4 WHERE id = 3')
    got = database_digests(url, rich.summary)
    expected = rich.summary.digests()
    differing = {key for key in expected if got[key] != expected[key]}
    assert differing == {("audit", "kinds"), ("Sales Data", 'Mixed Case "Quoted" Table')}
    assert got[("audit", "kinds")][0] == expected[("audit", "kinds")][0]


def test_one_byte_chunks_and_whole_archive_agree(pg_database: Callable[[], str]) -> None:
    url = pg_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET timezone = 'Pacific/Chatham'").format(
            sql.Identifier(conn.info.dbname)))
        conn.execute(SMALL_SCHEMA)
    data = _dump_bytes(url, "-Z0")
    whole = _tap(data, lambda: len(data))
    single = _tap(data, lambda: 1)
    assert whole.error is None
    assert single == whole
    with psycopg.connect(url) as conn:
        whole.settings = session_settings(conn)
    assert whole.settings["TimeZone"] == "Pacific/Chatham"
    weird = next(t for t in whole.tables if t.schema == 'odd "schema"')
    assert (weird.name, weird.columns, weird.rows) == ("T (1).x", '"a, b", "c)", "Ünï"', 3)
    assert {t.name for t in whole.tables} == {"T (1).x", "events_a", "events_b", "empty"}
    # The source itself, read the way pg_dump reads it, gives the same digests.
    assert database_digests(url, whole) == whole.digests()


def test_load_via_partition_root_keeps_per_partition_digests(
        pg_database: Callable[[], str], tmp_path: Path) -> None:
    url = pg_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SMALL_SCHEMA)
    data = _dump_bytes(url, "-Z0", "--load-via-partition-root")
    rng = random.Random(7)
    summary = _tap(data, lambda: rng.randint(1, 300))
    assert summary.error is None
    with psycopg.connect(url) as conn:
        summary.settings = session_settings(conn)
    archive = tmp_path / "root.dump"
    archive.write_bytes(data)
    target = pg_database()
    _restore(archive, target)
    assert database_digests(target, summary) == summary.digests()


def test_compressed_archive_sets_error(pg_database: Callable[[], str]) -> None:
    url = pg_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g")
    data = _dump_bytes(url, "-Z1")
    summary = _tap(data, lambda: 100)
    assert summary.error is not None and "compressed" in summary.error
    assert "\n" not in summary.error
    assert summary.tables == []
    assert summary.archive_bytes == len(data)


def test_broken_archives_never_raise(pg_database: Callable[[], str]) -> None:
    url = pg_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SMALL_SCHEMA)
        conn.execute("SELECT lo_from_bytea(0, 'blob')")
    data = _dump_bytes(url, "-Z0")
    assert _tap(data, lambda: 7).error is None
    rng = random.Random(99)
    cuts = sorted({rng.randrange(1, len(data)) for _ in range(40)} | {5, 20, len(data) - 1})
    for cut in cuts:
        summary = _tap(data[:cut], lambda: 13)
        assert summary.error, cut
    # Cut exactly between data blocks: the TOC promised more data.
    last_block = data.rindex(b"\x03\x00")  # the large-object block near the end
    assert _tap(data[:last_block], lambda: 64).error
    # Not an archive at all, an unknown version, trailing garbage: an error, no exception.
    assert "PGDMP" in (_tap(b"hello world", lambda: 3).error or "")
    future = data[:5] + bytes([1, 99, 0]) + data[8:]
    assert "version 1.99.0" in (_tap(future, lambda: 4096).error or "")
    garbage = _tap(data + b"\x07junk", lambda: 4096)
    assert garbage.error and "block" in garbage.error
    tap = ArchiveTap()
    tap.feed(b"XXXXX")
    tap.feed(data)  # ignored once the archive is known to be unreadable
    assert tap.finish().tables == []


def test_summary_round_trips_through_json(pg_database: Callable[[], str]) -> None:
    url = pg_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SMALL_SCHEMA)
        summary = _tap(_dump_bytes(url, "-Z0"), lambda: 1000)
        summary.settings = session_settings(conn)
    text = json.dumps(summary.to_json())
    again = ArchiveSummary.from_json(json.loads(text))
    assert again == summary
    assert isinstance(again.version, tuple) and isinstance(again.tables[0], TableDigest)


@pytest.mark.parametrize(("stmt", "columns"), [
    ("COPY public.t (id, data) FROM stdin;\n", "id, data"),
    ("COPY public.empty  FROM stdin;\n", ""),
    ('COPY "a.b"."c (d)" ("x"")", y) FROM stdin;\n', '"x"")", y'),
    ('COPY s."T" ("a, b", "c)") FROM stdin;\n', '"a, b", "c)"'),
])
def test_copy_column_list(stmt: str, columns: str) -> None:
    assert copy_column_list(stmt) == columns


@pytest.mark.parametrize("stmt", [
    "INSERT INTO t VALUES (1);", "COPY t (a FROM stdin;", "COPY t (a) TO stdout;", "",
])
def test_copy_column_list_rejects(stmt: str) -> None:
    with pytest.raises(ValueError):
        copy_column_list(stmt)


def test_memory_stays_bounded(rich: Dumped) -> None:
    """Table data is hashed as it passes: 20 MB through the tap in 64 KiB reads, < 1 MiB held."""
    tap = ArchiveTap()
    tracemalloc.start()
    try:
        with rich.archive.open("rb") as f:
            while chunk := f.read(65536):
                tap.feed(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tap.finish().digests() == rich.summary.digests()
    assert peak < 1 << 20


# -- archive versions pg_dump 15 cannot write: layouts as read in PostgreSQL's source ----------

def _int(value: int) -> bytes:
    return bytes([value < 0]) + abs(value).to_bytes(4, "little")


def _str(value: str | bytes | None) -> bytes:
    if value is None:
        return _int(-1)
    raw = value.encode() if isinstance(value, str) else value
    return _int(len(raw)) + raw


def _synthetic(minor: int, *, algorithm: int = 0, relkind: bool | None = None,
               rows: bytes = b"1\tone\n\\N\t\\\\.\n", terminator: bool = True,
               chunks: list[bytes] | None = None) -> bytes:
    """An archive of one table (``rows``, one chunk per row as pg_dump writes them, or the
    given ``chunks``) and two large objects."""
    out = b"PGDMP" + bytes([1, minor, 0, 4, 8, 1])
    out += bytes([algorithm]) if minor >= 15 else _int(-1 if algorithm else 0)
    out += b"".join(_int(v) for v in (1, 2, 3, 4, 5, 124, 0))
    out += _str("db") + _str("17.2") + _str("17.2")
    entries = [  # dumpId, hadDumper, tag, desc, defn, copyStmt, namespace
        (1, 0, "ENCODING", "ENCODING", "SET client_encoding = 'UTF8';\n", None, None),
        (7, 1, "t", "TABLE DATA", "", 'COPY public.t (a, "B") FROM stdin;\n', "public"),
        (9, 1, "BLOBS", "BLOBS", "", None, None),
    ]
    out += _int(len(entries))
    for dump_id, dumper, tag, desc, defn, copy, namespace in entries:
        out += _int(dump_id) + _int(dumper) + _str("0") + _str("0") + _str(tag) + _str(desc)
        out += _int(2) + _str(defn) + _str("") + _str(copy) + _str(namespace) + _str("")
        if minor >= 14:
            out += _str("heap" if dumper else "")
        if relkind if relkind is not None else minor >= 16:
            out += _int(ord("r"))
        out += _str("postgres") + _str("false") + _str("1") + _str(None)
        out += bytes([1 if dumper else 3]) + bytes(8)
    out += b"\x01" + _int(7)
    for row in rows.splitlines(keepends=True) if chunks is None else chunks:
        out += _int(len(row)) + row
    if terminator:
        out += _int(5) + b"\\.\n\n\n"
    out += _int(0)
    out += b"\x03" + _int(9)
    out += _int(-5) + _int(3) + b"abc" + _int(0)   # an OID above 2^31 arrives negative
    out += _int(16384) + _int(2) + b"xy" + _int(0) + _int(0)
    return out


@pytest.mark.parametrize("minor", [12, 13, 14, 15, 16])
def test_synthetic_archive_versions(minor: int) -> None:
    data = _synthetic(minor)
    for size in (1, 3, len(data)):
        summary = _tap(data, lambda size=size: size)
        assert summary.error is None, summary.error
        assert summary.version == (1, minor, 0)
        assert summary.encoding == "UTF8"
        assert summary.tables == [TableDigest("public", "t", 'a, "B"', 2,
                                              blake3=digest_hex(b"1\tone\n\\N\t\\\\.\n"))]
        assert (summary.blobs, summary.blob_bytes) == (2, 5)


def test_synthetic_archive_errors() -> None:
    assert "zstd" in (_tap(_synthetic(16, algorithm=3), lambda: 10).error or "")
    assert "compressed" in (_tap(_synthetic(13, algorithm=1), lambda: 10).error or "")
    # 1.16 entries carry relkind; without it the TOC does not parse, and that is reported.
    assert _tap(_synthetic(16, relkind=False), lambda: 10).error
    assert _tap(_synthetic(15, relkind=True), lambda: 10).error
    assert "unsupported archive version 1.11.0" in (_tap(_synthetic(11), lambda: 9).error or "")
    cut = _synthetic(14, rows=b"1\tone", terminator=False)
    assert "middle of a row" in (_tap(cut, lambda: 9).error or "")
    after = _synthetic(14, rows=b"1\tone\n\\.\nmore\n", terminator=False)
    assert "after the end-of-copy marker" in (_tap(after, lambda: 9).error or "")


def test_terminator_is_optional() -> None:
    """Should a pg_dump stop writing the "\\." line, the digest stays the same."""
    with_marker = _tap(_synthetic(16), lambda: 2)
    without = _tap(_synthetic(16, terminator=False), lambda: 2)
    assert without.error is None
    assert without.tables == with_marker.tables


# -- the chunk walk: any framing, any feed sizes ----------------------------------------------

_ROW_BYTES = bytes(b for b in range(1, 256) if b not in b"\n\\") + b"\\"


@contextlib.contextmanager
def _vector_walk_from(size: int) -> Iterator[None]:
    """The walk of whole buffers (``framed_rows``) on buffers this small too."""
    from vowvault.sources import pgarchive

    with mock.patch.object(pgarchive, "VECTOR_MIN", size):
        yield


@st.composite
def _framings(draw: st.DrawFn) -> tuple[list[bytes], bytes]:
    """Rows (lengths whose bytes hold 0x0a next to 0x00, as 10, 266 or 2570 do; the
    shortest rows; long ones), cut into chunks mostly as pg_dump does (one per row), and
    sometimes not (several rows in one chunk, a row over two): what the tap must digest
    whatever the framing."""
    lengths = draw(st.lists(st.one_of(
        st.sampled_from([1, 2, 3, 9, 10, 11, 266, 267, 2570, 2571, 0x0A0A]),
        st.integers(1, 600)), min_size=0, max_size=120))
    seed = draw(st.integers(0, 2**32))
    rnd = random.Random(seed)
    # (no row starts with a backslash: only the end-of-copy marker does in COPY text)
    rows = [bytes(rnd.choice(_ROW_BYTES[:-1] if k == 0 else _ROW_BYTES) for k in range(n - 1))
            + b"\n" for n in lengths]
    text = b"".join(rows)
    chunks: list[bytes] = []
    mode = draw(st.sampled_from(["rows", "rows", "mixed", "random"]))
    for row in rows:
        if mode == "rows" or (mode == "mixed" and rnd.random() < 0.9):
            chunks.append(row)
        elif mode == "mixed" and chunks and rnd.random() < 0.5:
            chunks[-1] += row
        else:
            cut = rnd.randint(1, len(row))
            chunks.extend(c for c in (row[:cut], row[cut:]) if c)
    if mode == "random" and text:
        chunks, at = [], 0
        while at < len(text):
            n = rnd.randint(1, 3000)
            chunks.append(text[at:at + n])
            at += n
    return chunks, text


@settings(max_examples=150, deadline=None)
@given(framing=_framings(), feed=st.sampled_from([1, 7, 4096, 65536, 1 << 20]))
def test_every_framing_and_feed_size_gives_the_rows_digest(
        framing: tuple[list[bytes], bytes], feed: int) -> None:
    chunks, text = framing
    data = _synthetic(14, chunks=chunks)
    with _vector_walk_from(16):
        summary = _tap(data, lambda: feed)
    assert summary.error is None, summary.error
    assert summary.tables == [TableDigest("public", "t", 'a, "B"', text.count(b"\n"),
                                          blake3=digest_hex(text))]
    assert (summary.blobs, summary.blob_bytes) == (2, 5)


@settings(max_examples=100, deadline=None)
@given(framing=_framings(), at=st.integers(0, 1 << 16), value=st.integers(0, 255))
def test_a_damaged_chunk_header_is_never_digested_as_rows(
        framing: tuple[list[bytes], bytes], at: int, value: int) -> None:
    """A byte changed anywhere in the data block: the tap reports an error, or digests
    exactly the rows the damaged framing holds (a walk chunk by chunk says which)."""
    chunks, _ = framing
    if not chunks:
        return
    data = bytearray(_synthetic(14, chunks=chunks))
    start = _synthetic(14, chunks=[]).index(b"\x01" + _int(7)) + 6  # the table's chunks
    at = start + at % (sum(len(c) + 5 for c in chunks))
    data[at] = value
    with _vector_walk_from(16):
        summary = _tap(bytes(data), lambda: 1 << 20)
    expected = _walk_one_by_one(bytes(data), start)
    if summary.error is None:
        assert expected is not None
        assert [(t.rows, t.hexdigest) for t in summary.tables] == [expected]


def _walk_one_by_one(data: bytes, pos: int) -> tuple[int, str] | None:
    """The table's rows and digest as a plain chunk-by-chunk walk reads them, or None when
    the framing does not end where a table's data may."""
    text = bytearray()
    while pos + 5 <= len(data):
        if data[pos]:
            return None
        n = int.from_bytes(data[pos + 1:pos + 5], "little")
        pos += 5
        if n == 0:
            break
        text += data[pos:pos + n]
        pos += n
    body = bytes(text)
    if body.startswith(b"\\."):
        return 0, digest_hex(b"")
    end = body.find(b"\n\\.")
    if end >= 0:
        body = body[:end + 1]
    return body.count(b"\n"), digest_hex(body)
