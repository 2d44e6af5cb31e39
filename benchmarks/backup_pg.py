"""PostgreSQL backup and restore: vowvault against the equivalent command-line pipeline.

    .venv/bin/python benchmarks/backup_pg.py [--size-gib 1.0] [--runs 3] [--keep] [--drop]

1. Builds (or reuses) a database ``vv_bench`` of at least ``--size-gib`` GiB whose dump
   compresses about 3x with ``zstd -3`` (mixed ints, timestamps, numerics, short text from
   vocabularies, longer semi-random text), generated server-side in SQL.
2. Sets up a throw-away ``VOWVAULT_HOME`` (embedded SQLite catalog, ``file://`` target in
   it) and applies a one-policy file with the real CLI.
3. Backup, alternating ``--runs`` times each: ``vowvault backup run POLICY --direct`` (wall
   time, stage seconds from the catalog, peak RSS of the vowvault process alone and of its
   pg_dump / pg_restore children) against
   ``pg_dump -Fc -Z0 | zstd -3 -T2 | openssl enc -aes-256-ctr > file``.
4. Restore, alternating: ``vowvault restore ID --to-database DSN`` against
   ``openssl enc -d | zstd -dc | pg_restore``.
5. restic (0.14 from the Debian registry, installed when missing): ``pg_dump -Fc -Z0 |
   restic backup --stdin`` into a fresh repository each run (no deduplication against an
   earlier run), and ``restic check --read-data`` of it against ``vowvault backup verify``
   of vowvault's newest backup (both read and authenticate every stored byte).
6. Prints medians and ratios. vowvault's backup includes its verification (every object
   read back, decrypted and fed to ``pg_restore -f /dev/null``) and its restore includes
   validation (per-table row counts and checksums), which the reference pipelines do not
   do; both are reported separately as well.

Both sides run with a warm page cache (the database is read once for the ratio check
first); OS caches are never dropped. Each run also reports the PostgreSQL server's CPU
seconds meanwhile (/proc, its reaped backends included) and the busy CPU seconds of
everything else on the machine ("outside": what disturbed the run). Numbers from a shared
2-core machine are noisy: the load average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchproc import CURRENT as _CURRENT
from benchproc import (
    install_references,
    kill_current,
    least_squares,
    load,
    machine_cpu,
    server_cpu,
    shell,
    start_warm,
    stop_warm,
)

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
VOWVAULT = str(BIN / "vowvault")
SERVER = "postgresql://postgres@127.0.0.1:5432"
GENERATOR = "vowvault-bench-data v2"
POLICY = "bench-pg"
OPENSSL_PASS = "pass:bench"  # noqa: S105 - a fixed benchmark passphrase
MIB = 1 << 20
GIB = 1 << 30
TARGET_RATIO = 1.0
TARGET_RSS_MIB = 64
TARGET_RESTIC = 0.6      # backup with verify against restic backup --stdin
TARGET_VERIFY = 1.0      # vowvault backup verify against restic check --read-data
RESTIC_PASSWORD = "bench"  # noqa: S105 - a fixed benchmark passphrase

# --------------------------------------------------------------------------------------------
# Test data: three tables of a wedding platform, generated server-side.
# --------------------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE weddings (
    id integer PRIMARY KEY,
    organization text NOT NULL,
    wedding_date date NOT NULL,
    venue text NOT NULL,
    city text NOT NULL,
    budget numeric(12,2) NOT NULL,
    guest_count integer NOT NULL,
    status text NOT NULL,
    created_at timestamptz NOT NULL,
    notes text
);
CREATE TABLE guest_events (
    id bigint PRIMARY KEY,
    wedding_id integer NOT NULL,
    guest_id bigint NOT NULL,
    created_at timestamptz NOT NULL,
    amount numeric(12,2),
    quantity integer,
    status text NOT NULL,
    channel text NOT NULL,
    first_name text,
    last_name text,
    email text,
    city text,
    token text,
    note text
);
CREATE TABLE messages (
    id bigint PRIMARY KEY,
    wedding_id integer NOT NULL,
    sent_at timestamptz NOT NULL,
    sender text NOT NULL,
    recipient text NOT NULL,
    is_read boolean NOT NULL,
    subject text,
    body text
);
"""

FIRST = ("Olivia Amelia Isla Ava Mia Ivy Lily Isabella Rosie Sophia Grace Willow Freya Florence "
         "Emily Ella Poppy Evie Elsie Charlotte Noah Oliver George Arthur Muhammad Leo Harry "
         "Oscar Archie Henry Theodore Freddie Jack Charlie Theo Alfie Jacob Thomas Finley Arlo")
LAST = ("Smith Jones Taylor Brown Williams Wilson Johnson Davies Patel Robinson Wright Thompson "
        "Evans Walker White Roberts Green Hall Thomas Clarke Jackson Wood Harris Edwards Turner "
        "Martin Cooper Hill Ward Hughes Moore Clark King Harrison Lewis Baker Lee Allen Morris "
        "Khan")
CITIES = ("London Paris Leeds York Bath Bristol Cardiff Glasgow Edinburgh Dublin Lyon Nice Rome "
          "Milan Porto Lisbon Madrid Seville Berlin Munich")
DOMAINS = ("gmail.com yahoo.com outlook.com hotmail.co.uk icloud.com proton.me example.org "
           "btinternet.com")
WORDS = ("the a guest table menu vegan please seat near band late arrive bring child plus one "
         "dietary gluten free allergy nut wheelchair access parking hotel room shuttle ceremony "
         "reception speech dance photo cake flowers music toast early leave family friend uncle "
         "aunt cousin bride groom best man maid honour ring bearer kids wine champagne no yes "
         "maybe confirm call back email sent paid deposit invoice balance due venue garden "
         "marquee tent rain plan catering canapes dessert evening buffet booked transport "
         "coach taxi timing schedule rehearsal dinner florist bouquet buttonhole centrepiece "
         "candles lighting dj playlist first song photographer album drone video edit")
# Syllables for invented words (surnames, venue names, rare terms): 24 x 24 combinations.
ONSETS = "br cl dr fl gr kl pr st tr sh ch th wh bl cr gl pl sl sp sw tw v m n"
CODAS = "an en in on un ar er or ley ton ham ford wick by worth field well more dale ridge " \
        "wood moor stead hurst"


def _arr(words: str) -> str:
    return "ARRAY[" + ",".join(f"'{w}'" for w in words.split()) + "]"


def _pick(words: str) -> str:
    n = len(words.split())
    return f"({_arr(words)})[1 + floor(random() * {n})::int]"


def _word() -> str:
    """A word of free text: mostly common words, sometimes an invented one or a code."""
    return (f"CASE WHEN random() < 0.88 THEN {_pick(WORDS)} "
            f"WHEN random() < 0.55 THEN {_pick(ONSETS)} || {_pick(CODAS)} "
            f"ELSE substr(md5(random()::text), 1, 3 + floor(random() * 8)::int) END")


def _text(min_words: int, spread: int, seed: str) -> str:
    # The (seed * 0) term makes the subquery correlated, so it is evaluated once per row.
    return (f"(SELECT string_agg({_word()}, ' ') FROM generate_series(1, {min_words} + "
            f"floor(random() * {spread})::int + ({seed} * 0)))")


def batch_sql(table: str, start: int, stop: int) -> str:
    """INSERT rows with ids in [start, stop) into one table."""
    if table == "guest_events":
        return f"""
INSERT INTO guest_events
SELECT g, floor(random() * 100000)::int, floor(random() * 5e7)::bigint,
       timestamptz '2024-01-01' + random() * interval '900 days',
       round((random() * random() * 5000)::numeric, 2), 1 + floor(random() * random() * 20)::int,
       {_pick("invited confirmed declined tentative checked_in no_show cancelled waitlisted")},
       {_pick("web email phone app import planner")},
       f, l,
       lower(f) || '.' || lower(l) || floor(random() * 1000)::int || '@' || {_pick(DOMAINS)},
       {_pick(CITIES)},
       CASE WHEN random() < 0.15 THEN md5(random()::text) END,
       CASE WHEN random() < 0.7 THEN {_text(3, 15, "g")} END
FROM (SELECT g, {_pick(FIRST)} AS f, {_pick(LAST)} AS l
      FROM generate_series({start}, {stop - 1}) g) s"""
    if table == "messages":
        return f"""
INSERT INTO messages
SELECT g, floor(random() * 100000)::int,
       timestamptz '2024-01-01' + random() * interval '900 days',
       {_pick(FIRST)} || ' ' || {_pick(LAST)},
       {_pick("planner venue couple caterer florist photographer band guest")},
       random() < 0.8,
       'Re: ' || {_text(2, 5, "g")},
       {_text(20, 100, "g")}
FROM generate_series({start}, {stop - 1}) g"""
    if table == "weddings":
        return f"""
INSERT INTO weddings
SELECT g, {_pick("lumiere-photo grand-hall bloom-florals harbour-view moonlit-band")},
       date '2024-01-01' + floor(random() * 1200)::int,
       {_pick(ONSETS)} || {_pick(CODAS)} || ' ' || {_pick("Hall Manor House Barn Castle Hotel")},
       {_pick(CITIES)}, round((5000 + random() * 60000)::numeric, 2),
       20 + floor(random() * 200)::int,
       {_pick("enquiry booked confirmed completed cancelled")},
       timestamptz '2023-06-01' + random() * interval '700 days',
       {_text(5, 30, "g")}
FROM generate_series({start}, {stop - 1}) g"""
    raise ValueError(table)


# Per round of batches: rows of each table (about 60 MB of heap in all).
ROUND = {"guest_events": 200_000, "messages": 40_000}
WEDDINGS = 100_000


def connect(db: str, **kw: Any) -> Any:
    import psycopg

    return psycopg.connect(f"{SERVER}/{db}", autocommit=True, **kw)


def server_sql(sql: str, *params: Any) -> Any:
    with connect("postgres") as conn:
        row = conn.execute(sql, params or None).fetchone()
        return row[0] if row else None


def db_exists(db: str) -> bool:
    return bool(server_sql("SELECT count(*) FROM pg_database WHERE datname = %s", db))


def drop_db(db: str) -> None:
    with connect("postgres") as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def create_db(db: str) -> None:
    with connect("postgres") as conn:
        conn.execute(f'CREATE DATABASE "{db}"')


def db_size(db: str) -> int:
    return int(server_sql("SELECT pg_database_size(%s)", db))


def checkpoint() -> None:
    with connect("postgres") as conn:
        conn.execute("CHECKPOINT")


def marker(size_gib: float) -> str:
    return f"{GENERATOR}; size_gib={size_gib:g}"


def ensure_database(db: str, size_gib: float) -> None:
    want = marker(size_gib)
    if db_exists(db):
        comment = server_sql("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                             "WHERE datname = %s", db)
        size = db_size(db)
        if comment == want and size >= size_gib * GIB:
            print(f"reusing database {db}: {size / GIB:.2f} GiB (marker {comment!r})")
            return
        print(f"database {db} has marker {comment!r} and {size / GIB:.2f} GiB: rebuilding")
        drop_db(db)
    build_database(db, size_gib)


def build_database(db: str, size_gib: float) -> None:
    t0 = time.perf_counter()
    create_db(db)
    with connect(db) as conn:
        conn.execute(SCHEMA)
        conn.execute(batch_sql("weddings", 1, WEDDINGS + 1))
    target = size_gib * GIB
    conns = [connect(db) for _ in range(2)]
    for c in conns:
        c.execute("SET synchronous_commit = off")
    free = list(conns)
    lock = threading.Lock()

    def run(sql: str) -> None:
        with lock:
            conn = free.pop()
        try:
            conn.execute(sql)
        finally:
            with lock:
                free.append(conn)

    def jobs() -> Iterator[str]:
        n = 0
        while True:
            for table, rows in ROUND.items():
                yield batch_sql(table, n * rows + 1, (n + 1) * rows + 1)
            n += 1

    pool = ThreadPoolExecutor(2)
    try:
        pending: list[Any] = []
        source = jobs()
        while True:
            for f in [f for f in pending if f.done()]:
                f.result()  # raises what the batch raised
                pending.remove(f)
            if len(pending) < 2:
                size = db_size(db)
                print(f"\r  building {db}: {size / GIB:.2f} of {size_gib:g} GiB",
                      end="", flush=True)
                if size >= target:
                    break
                pending.append(pool.submit(run, next(source)))
            else:
                time.sleep(0.05)
        for f in pending:
            f.result()
    except BaseException:
        for c in conns:
            with contextlib.suppress(Exception):
                c.cancel()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for c in conns:
            with contextlib.suppress(Exception):
                c.close()
    print()
    t1 = time.perf_counter()
    with connect(db) as conn:
        # Hint bits and visibility set once, so the first dump does not pay for them.
        conn.execute("VACUUM (FREEZE, ANALYZE)")
        conn.execute(f"COMMENT ON DATABASE \"{db}\" IS '{marker(size_gib)}'")
    checkpoint()
    print(f"built {db} in {time.perf_counter() - t0:.1f} s (insert {t1 - t0:.1f} s, "
          f"vacuum+checkpoint {time.perf_counter() - t1:.1f} s)")


def table_sizes(db: str) -> str:
    with connect(db) as conn:
        rows = conn.execute(
            "SELECT relname, n_live_tup, pg_total_relation_size(relid) FROM pg_stat_user_tables "
            "ORDER BY 3 DESC").fetchall()
    return ", ".join(f"{name} {rows_:,} rows {size / MIB:.0f} MiB" for name, rows_, size in rows)


def dump_ratio(db: str) -> tuple[int, int, float]:
    """(archive bytes, zstd -3 bytes, seconds) of the whole ``pg_dump -Fc -Z0``."""
    cmd = (f"set -o pipefail; pg_dump -Fc -Z0 -d {SERVER}/{db} | tee >(wc -c >&2) "
           f"| zstd -3 -T2 -c | wc -c")
    t0 = time.perf_counter()
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - t0
    packed = int(out.stdout.strip())
    raw = int(out.stderr.strip().splitlines()[-1])
    return raw, packed, seconds


# --------------------------------------------------------------------------------------------
# Running and measuring processes.
# --------------------------------------------------------------------------------------------

def _status_kib(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _children_of(pids: set[int]) -> dict[int, str]:
    """{pid: comm} of every process whose parent is in ``pids``."""
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        close = stat.rfind(")")
        ppid = int(stat[close + 2:].split()[1])
        if ppid in pids:
            found[int(entry)] = stat[stat.find("(") + 1:close]
    return found


class Sampler(threading.Thread):
    """Polls the peak RSS (VmHWM) of one process and of its descendants, by command name."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.own_kib = 0
        self.children_kib: dict[str, int] = {}
        self._halt = threading.Event()
        self._tick = 0

    def run(self) -> None:
        known: dict[int, str] = {}
        while not self._halt.is_set():
            hwm = _status_kib(self.pid, "VmHWM")
            if hwm:
                self.own_kib = max(self.own_kib, hwm)
            if self._tick % 4 == 0:  # the /proc scan costs more: every 4th tick
                frontier = {self.pid}
                while frontier:
                    new = _children_of(frontier)
                    known.update(new)
                    frontier = set(new)
            for pid, comm in list(known.items()):
                kib = _status_kib(pid, "VmHWM")
                if kib is None:
                    known.pop(pid)
                    continue
                self.children_kib[comm] = max(self.children_kib.get(comm, 0), kib)
            self._tick += 1
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


@dataclass
class Measured:
    wall: float
    cpu: float            # user + sys of the process and every child it waited for
    sys_cpu: float        # the sys part of it
    minflt: int           # minor page faults, same scope
    maxrss_kib: int       # wait4: the largest of the process and its waited descendants
    own_kib: int          # sampled VmHWM of the process itself
    children_kib: dict[str, int]
    stdout: str
    stderr: str
    returncode: int
    server: float = 0.0   # CPU seconds of the PostgreSQL server meanwhile
    outside: float = 0.0  # busy CPU seconds of everything else on the machine meanwhile

    def noise(self) -> str:
        return f"server {self.server:.1f} s, outside {self.outside:.1f} s"


def measured(cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
             check: bool = True) -> Measured:
    """Run ``cmd`` in its own process group; wall time, CPU and peak memory via wait4."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        busy0, server0 = machine_cpu()[0], server_cpu()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                cwd=cwd, start_new_session=True)
        _CURRENT[proc.pid] = proc
        sampler = Sampler(proc.pid)
        sampler.start()
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        finally:
            sampler.stop()
        wall = time.perf_counter() - t0
        busy = machine_cpu()[0] - busy0
        server = server_cpu() - server0
        proc.returncode = os.waitstatus_to_exitcode(status)
        _CURRENT.pop(proc.pid, None)
        out.seek(0)
        err.seek(0)
        cpu = usage.ru_utime + usage.ru_stime
        result = Measured(wall, cpu, usage.ru_stime,
                          usage.ru_minflt, usage.ru_maxrss,
                          sampler.own_kib, sampler.children_kib,
                          out.read().decode(errors="replace"), err.read().decode(errors="replace"),
                          proc.returncode, server, max(0.0, busy - cpu - server))
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)[:200]} exited {result.returncode}:\n"
                           f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return result



# --------------------------------------------------------------------------------------------
# vowvault home, policy and catalog.
# --------------------------------------------------------------------------------------------

POLICY_FILE = """\
version: 1
organizations:
  - slug: bench
    name: Benchmark
    vendor_type: platform
policies:
  - name: {policy}
    organization: bench
    description: benchmarks/backup_pg.py
    source:
      kind: postgres
      dsn: {server}/{db}
    backup_type: full
    priority: normal
    schedule: {{cron: "0 3 * * *", timezone: UTC}}
    peak_season: {{multiplier: 1}}
    retention: {{days: 7}}
    storage:
      - {{url: "file://{store}", tier: HOT}}
  - name: {policy}-empty
    organization: bench
    description: the same backup of a database with one 100-row table (fixed overhead)
    source:
      kind: postgres
      dsn: {server}/{empty_db}
    backup_type: full
    schedule: {{cron: "0 3 * * *", timezone: UTC}}
    peak_season: {{multiplier: 1}}
    retention: {{days: 7}}
    storage:
      - {{url: "file://{store}", tier: HOT}}
"""


@dataclass
class Bench:
    args: argparse.Namespace
    tmp: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def home(self) -> Path:
        return self.tmp / "home"

    @property
    def empty_db(self) -> str:
        return f"{self.args.db}_empty"

    @property
    def restore_dsn(self) -> str:
        return f"{SERVER}/{self.args.restore_db}"

    def setup(self) -> None:
        self.home.mkdir()
        (self.tmp / "store").mkdir()
        (self.tmp / "ref").mkdir()
        self.env = dict(os.environ, VOWVAULT_HOME=str(self.home), VOWVAULT_ACTOR="benchmark",
                        COLUMNS="250", NO_COLOR="1", PATH=f"{BIN}:{os.environ['PATH']}")
        self.env.pop("VOWVAULT_DATABASE_URL", None)
        policy = self.tmp / "policies.yaml"
        policy.write_text(POLICY_FILE.format(policy=POLICY, server=SERVER, db=self.args.db,
                                             empty_db=self.empty_db, store=self.tmp / "store"))
        r = measured([VOWVAULT, "policies", "apply", str(policy)], env=self.env)
        print("policies apply: " + " ".join(r.stdout.split()))
        if getattr(self.args, "warm", False):  # every later vowvault command forks from it
            print(f"vowvault warm: {start_warm(VOWVAULT, self.env)}")

    def stop_warm(self) -> None:
        if getattr(self.args, "warm", False) and self.env:
            stop_warm(VOWVAULT, self.env)

    def settings(self) -> Any:
        from vowvault.settings import Settings

        return Settings(home=self.home, database_url=f"sqlite:///{self.home / 'catalog.db'}",
                        actor="benchmark")

    def newest_job(self) -> dict[str, Any]:
        with contextlib.closing(sqlite3.connect(self.home / "catalog.db")) as db:
            row = db.execute("SELECT stage_durations, source_bytes, stored_bytes, status "
                             "FROM backup_jobs ORDER BY started_at DESC LIMIT 1").fetchone()
        stages = row[0] if isinstance(row[0], dict) else json.loads(row[0] or "{}")
        return {"stages": stages, "source_bytes": row[1], "stored_bytes": row[2],
                "status": row[3]}


# --------------------------------------------------------------------------------------------
# The runs.
# --------------------------------------------------------------------------------------------

@dataclass
class BackupRun:
    wall: float
    cpu: float
    sys_cpu: float
    minflt: int
    verify: float
    stages: dict[str, float]
    own_mib: float
    maxrss_mib: float
    children_mib: dict[str, float]
    source_bytes: int
    stored_bytes: int
    job_id: str
    noise: str = ""


@dataclass
class RefRun:
    wall: float
    cpu: float
    sys_cpu: float
    minflt: int
    fsync: float
    stored_bytes: int
    path: Path
    noise: str = ""


def vowvault_backup(b: Bench) -> BackupRun:
    checkpoint()
    r = measured([VOWVAULT, "backup", "run", POLICY, "--direct"], env=b.env)
    text = " ".join(r.stdout.split())
    m = re.search(r"backup ([0-9a-f-]{36}) of", text)
    if not m:
        raise RuntimeError(f"cannot find the backup id in: {text}")
    job = b.newest_job()
    stages = job["stages"]
    return BackupRun(r.wall, r.cpu, r.sys_cpu, r.minflt, float(stages.get("verify", 0.0)), stages,
                     r.own_kib / 1024, r.maxrss_kib / 1024,
                     {k: v / 1024 for k, v in r.children_kib.items()},
                     job["source_bytes"], job["stored_bytes"], m.group(1), r.noise())


def reference_backup(b: Bench, n: int) -> RefRun:
    checkpoint()
    path = b.tmp / "ref" / f"dump-{n}.zst.enc"
    r = measured(shell(f"pg_dump -Fc -Z0 -d {SERVER}/{b.args.db} | zstd -3 -T2 -q | "
                       f"openssl enc -aes-256-ctr -pbkdf2 -pass {OPENSSL_PASS} > {path}"),
                 env=b.env)
    # What the same file costs to make durable (vowvault fsyncs what it writes); reported
    # apart, not added to the reference time.
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return RefRun(r.wall, r.cpu, r.sys_cpu, r.minflt, time.perf_counter() - t0,
                  path.stat().st_size, path, r.noise())


@dataclass
class ResticRun:
    wall: float
    cpu: float
    stored_bytes: int
    repo: Path
    noise: str = ""


def restic_env(b: Bench) -> dict[str, str]:
    return dict(b.env, RESTIC_PASSWORD=RESTIC_PASSWORD, RESTIC_CACHE_DIR=str(b.tmp / "rcache"))


def restic_backup(b: Bench, n: int) -> ResticRun:
    """A fresh repository (untimed ``init``), then the dump piped into ``restic backup``."""
    repo = b.tmp / f"restic-{n}"
    env = restic_env(b)
    subprocess.run(["restic", "init", "-q", "--repository-version", "2", "-r", str(repo)],
                   env=env, check=True, capture_output=True)
    checkpoint()
    r = measured(shell(f"pg_dump -Fc -Z0 -d {SERVER}/{b.args.db} | restic -q -r {repo} "
                       f"backup --stdin --stdin-filename {b.args.db}.dump"), env=env)
    return ResticRun(r.wall, r.cpu, tree_bytes(repo), repo, r.noise())


def restic_check(b: Bench, run: ResticRun) -> Measured:
    return measured(["restic", "-q", "-r", str(run.repo), "check", "--read-data"],
                    env=restic_env(b))


def vowvault_verify(b: Bench, job_id: str) -> Measured:
    return measured([VOWVAULT, "backup", "verify", job_id], env=b.env)


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@dataclass
class RestoreRun:
    wall: float
    cpu: float
    validation: float = 0.0
    validated_on: str = ""
    create: float = 0.0
    error: str | None = None
    noise: str = ""


def vowvault_restore(b: Bench, job_id: str) -> RestoreRun:
    drop_db(b.args.restore_db)
    checkpoint()
    r = measured([VOWVAULT, "backup", "restore", job_id, "--to-database", b.restore_dsn], env=b.env,
                 check=False)
    run = RestoreRun(r.wall, r.cpu, noise=r.noise())
    if r.returncode != 0:
        lines = [ln for ln in (r.stderr + r.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if "error" in ln.lower()]
        run.error = " ".join((errors or lines or [f"exit {r.returncode}"])[-1].split())
    # A failed restore drops the database it created: then the validation is timed against
    # the source database, which holds the same rows in dump order.
    on = b.args.restore_db if db_exists(b.args.restore_db) else b.args.db
    run.validation, run.validated_on = validation_seconds(b, job_id, on), on
    return run


def validation_seconds(b: Bench, job_id: str, db: str) -> float:
    """The validation step of a vowvault restore (per-table row counts and COPY checksums),
    timed alone in this process: the same call ``restore_backup`` makes after pg_restore."""
    from vowvault.engine import objects
    from vowvault.engine.context import Context
    from vowvault.engine.lookup import find_backup
    from vowvault.errors import RestoreError
    from vowvault.sources.postgres import validate

    ctx = Context.from_settings(b.settings())
    try:
        with ctx.catalog.read() as s:
            stored = objects.read_stored(s, find_backup(s, job_id))
        database = objects.open_reader(ctx, stored).manifest.sections["database"]
        t0 = time.perf_counter()
        try:
            result = validate(database, f"{SERVER}/{db}", None)
        except RestoreError as exc:
            result = {"checked": True, "mismatch": str(exc)}
        seconds = time.perf_counter() - t0
    finally:
        ctx.close()
    if not result.get("checked"):
        print(f"  note: vowvault does not validate this restore: {result.get('reason')}")
    if result.get("mismatch"):
        print(f"  note: validation against {db}: {result['mismatch']}")
    return seconds


def reference_restore(b: Bench, path: Path) -> RestoreRun:
    drop_db(b.args.restore_db)
    t0 = time.perf_counter()
    create_db(b.args.restore_db)
    create = time.perf_counter() - t0
    checkpoint()
    r = measured(shell(f"openssl enc -d -aes-256-ctr -pbkdf2 -pass {OPENSSL_PASS} < {path} | "
                       f"zstd -dc -q | pg_restore --exit-on-error --no-owner --no-privileges "
                       f"-d {b.restore_dsn}"), env=b.env)
    return RestoreRun(r.wall, r.cpu, create=create, noise=r.noise())


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f}" if len(values) > 1 else f"{values[0]:.1f}"


def fixed_overhead(b: Bench) -> Measured:
    """The same backup command on a database with one 100-row table: what vowvault holds
    whatever the size of the data (interpreter, imports, catalog, connections)."""
    drop_db(b.empty_db)
    create_db(b.empty_db)
    with connect(b.empty_db) as conn:
        conn.execute("CREATE TABLE t (id integer PRIMARY KEY, v text)")
        conn.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 100) g")
    return measured([VOWVAULT, "backup", "run", f"{POLICY}-empty", "--direct"], env=b.env)


def memory_bound(b: Bench) -> tuple[int, str]:
    from vowvault.engine.context import Context

    ctx = Context.from_settings(b.settings())
    try:
        return ctx.memory_bound(), (f"frame_size {ctx.frame_size // 1024} KiB, workers "
                                    f"{ctx.workers}, queue_depth {ctx.queue_depth}")
    finally:
        ctx.close()



def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def growth(args: argparse.Namespace, sizes: list[float]) -> int:
    """Backups of a database of each size (``<db>_<MiB>m``, built or reused): vowvault and
    the pipeline, ``--runs`` each alternating, medians, the least-squares slope in seconds
    per GiB of pg_database_size and vowvault's own peak RSS (flat if memory is bounded)."""
    import copy

    rows: list[tuple[float, float, float, float, float]] = []
    for gib in sizes:
        a = copy.copy(args)
        a.db, a.size_gib = f"{args.db}_{round(gib * 1024)}m", gib
        ensure_database(a.db, gib)
        size = db_size(a.db)
        tmp = Path(tempfile.mkdtemp(prefix="vv-bench-"))
        try:
            bench = Bench(a, tmp)
            bench.setup()
            vs: list[BackupRun] = []
            rs: list[RefRun] = []
            for i in range(args.runs):
                vs.append(vowvault_backup(bench))
                rs.append(reference_backup(bench, i))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            if args.drop:
                drop_db(a.db)
        v = statistics.median(x.wall for x in vs)
        r = statistics.median(x.wall for x in rs)
        rss = statistics.median(x.own_mib for x in vs)
        rows.append((size / GIB, v, r, rss, statistics.median(x.cpu for x in vs)))
        print(f"  {size / GIB:5.2f} GiB  vowvault {v:6.1f} s (cpu {rows[-1][4]:.1f} s, own rss "
              f"{rss:.0f} MiB)  pipeline {r:6.1f} s  ratio {v / r:.2f}", flush=True)
    print(f"\nlogical backup with verify, medians of {args.runs}")
    print("  size GiB   vowvault s   pipeline s   ratio   vv own rss MiB")
    for g, v, r, rss, _cpu in rows:
        print(f"  {g:8.2f} {v:12.1f} {r:12.1f} {v / r:7.2f} {rss:16.0f}")
    xs = [row[0] for row in rows]
    for name, col in (("vowvault", 1), ("pipeline", 2)):
        b, a0 = least_squares(xs, [row[col] for row in rows])
        print(f"  {name:<9} {b:.2f} s per GiB + {a0:.2f} s fixed")
    rss_all = [row[3] for row in rows]
    print(f"  vowvault own peak RSS {min(rss_all):.0f}-{max(rss_all):.0f} MiB over "
          f"{xs[0]:.2f}-{xs[-1]:.2f} GiB")
    print(f"end: {load()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-gib", type=float, default=1.0, help="database size (default 1.0)")
    p.add_argument("--runs", type=int, default=3, help="runs of each side (default 3)")
    p.add_argument("--keep", action="store_true",
                   help="keep the temporary VOWVAULT_HOME and the restored database")
    p.add_argument("--drop", action="store_true", help="drop the benchmark database at the end")
    p.add_argument("--db", default="vv_bench", help="benchmark database (default vv_bench)")
    p.add_argument("--restore-db", default="vv_bench_restore", help="restore target database")
    p.add_argument("--skip-restore", action="store_true", help="backup comparison only")
    p.add_argument("--warm", action="store_true",
                   help="vowvault's commands forked from `vowvault warm` (its RSS and CPU are "
                        "then the warm process's child's: shown as the client's only)")
    p.add_argument("--sizes", metavar="GIB,GIB,...",
                   help="only how cost grows: backups (vowvault and the pipeline) of a database "
                        "of each size, with the per-GiB slope and vowvault's peak RSS")
    args = p.parse_args(argv)
    if args.runs < 1 or args.size_gib <= 0:
        p.error("--runs must be >= 1 and --size-gib > 0")
    install_references({"zstd": "zstd", "restic": "restic"})
    for tool in ("pg_dump", "pg_restore", "zstd", "openssl", "restic"):
        if shutil.which(tool) is None:
            p.error(f"{tool} is not on PATH")
    sys.path.insert(0, str(ROOT / "src"))

    signal.signal(signal.SIGTERM, _interrupt)  # a kill cleans up like Ctrl-C
    print(f"start: {load()}")
    if args.sizes:
        try:
            return growth(args, [float(x) for x in args.sizes.split(",")])
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return 130
    tmp = Path(tempfile.mkdtemp(prefix="vv-bench-"))
    bench = Bench(args, tmp)
    interrupted = False
    try:
        t0 = time.perf_counter()
        ensure_database(args.db, args.size_gib)
        size = db_size(args.db)
        print(f"database {args.db}: pg_database_size {size / GIB:.3f} GiB ({size / MIB:.0f} MiB;"
              f" ready in {time.perf_counter() - t0:.1f} s); {table_sizes(args.db)}")
        raw, packed, secs = dump_ratio(args.db)
        print(f"pg_dump -Fc -Z0: {raw / MIB:.0f} MiB in {secs:.1f} s; zstd -3 -> "
              f"{packed / MIB:.0f} MiB, ratio {raw / packed:.2f}x (whole dump; also warms the "
              f"cache for both sides)")
        drop_db(args.restore_db)
        bench.setup()
        bound, how = memory_bound(bench)
        empty = fixed_overhead(bench)
        print(f"fixed overhead: the same backup of a 100-row database takes {empty.wall:.1f} s "
              f"and peaks at {empty.own_kib / 1024:.0f} MiB RSS")

        backups: list[BackupRun] = []
        refs: list[RefRun] = []
        for i in range(args.runs):
            v = vowvault_backup(bench)
            backups.append(v)
            st = v.stages
            print(f"backup {i + 1}/{args.runs} vowvault  {v.wall:6.1f} s  cpu {v.cpu:5.1f} s "
                  f"(sys {v.sys_cpu:.1f}, {v.minflt / 1000:.0f}k minor faults)  "
                  f"verify {v.verify:.1f} s  stages "
                  + " ".join(f"{k} {st[k]:.1f}" for k in ("snapshot", "compress", "encrypt",
                                                          "upload", "record", "wall") if k in st)
                  + f"  rss own {v.own_mib:.0f} MiB (wait4 max {v.maxrss_mib:.0f}, children "
                  + ", ".join(f"{k} {m:.0f}" for k, m in sorted(v.children_mib.items()))
                  + f")  {v.source_bytes / MIB:.0f} -> {v.stored_bytes / MIB:.0f} MiB; "
                  f"{v.noise}")
            r = reference_backup(bench, i)
            refs.append(r)
            print(f"backup {i + 1}/{args.runs} reference {r.wall:6.1f} s  cpu {r.cpu:5.1f} s "
                  f"(sys {r.sys_cpu:.1f}, {r.minflt / 1000:.0f}k minor faults)  "
                  f"(+ fsync {r.fsync:.1f} s)  {r.stored_bytes / MIB:.0f} MiB; {r.noise}")

        restics: list[ResticRun] = []
        verifies: list[Measured] = []
        checks: list[Measured] = []
        for i in range(args.runs):
            rr_ = restic_backup(bench, i)
            restics.append(rr_)
            print(f"backup {i + 1}/{args.runs} restic    {rr_.wall:6.1f} s  cpu {rr_.cpu:5.1f} s  "
                  f"{rr_.stored_bytes / MIB:.0f} MiB; {rr_.noise}")
            vv_ = vowvault_verify(bench, backups[-1].job_id)
            verifies.append(vv_)
            ck = restic_check(bench, rr_)
            checks.append(ck)
            print(f"verify {i + 1}/{args.runs} vowvault  {vv_.wall:6.1f} s  cpu {vv_.cpu:5.1f} s"
                  f" ({vv_.noise()})   restic check --read-data {ck.wall:6.1f} s  cpu "
                  f"{ck.cpu:5.1f} s ({ck.noise()})")
            if i:  # one repository is enough to keep for the next check
                shutil.rmtree(restics[i - 1].repo, ignore_errors=True)

        restores: list[RestoreRun] = []
        ref_restores: list[RestoreRun] = []
        if not args.skip_restore:
            for i in range(args.runs):
                v2 = vowvault_restore(bench, backups[-1].job_id)
                restores.append(v2)
                print(f"restore {i + 1}/{args.runs} vowvault  {v2.wall:6.1f} s  cpu "
                      f"{v2.cpu:5.1f} s  (validation alone {v2.validation:.1f} s on "
                      f"{v2.validated_on}); {v2.noise}"
                      + (f"  FAILED: {v2.error}" if v2.error else ""))
                r2 = reference_restore(bench, refs[-1].path)
                ref_restores.append(r2)
                print(f"restore {i + 1}/{args.runs} reference {r2.wall:6.1f} s  cpu "
                      f"{r2.cpu:5.1f} s  (+ CREATE DATABASE {r2.create:.1f} s, untimed); "
                      f"{r2.noise}")

        vb = median([x.wall for x in backups])
        vv = median([x.verify for x in backups])
        vnv = median([x.wall - x.verify for x in backups])
        rb = median([x.wall for x in refs])
        rss = max(x.own_mib for x in backups)
        ratio, ratio_nv = vb / rb, vnv / rb
        print()
        print(f"size     {size / GIB:.2f} GiB database, dump {raw / MIB:.0f} MiB, zstd -3 ratio "
              f"{raw / packed:.2f}x; {args.runs} runs each, medians (min-max)")
        print(f"backup   vowvault {vb:.1f} s ({spread([x.wall for x in backups])}, verify "
              f"{vv:.1f} s)  reference {rb:.1f} s ({spread([x.wall for x in refs])})  "
              f"ratio {ratio:.2f} ({ratio_nv:.2f} without verify)")
        print(f"cpu      vowvault {median([x.cpu for x in backups]):.1f} s (sys "
              f"{median([x.sys_cpu for x in backups]):.1f}, "
              f"{median([x.minflt for x in backups]) / 1000:.0f}k minor faults; incl. pg_dump, "
              f"pg_restore)  reference {median([x.cpu for x in refs]):.1f} s (sys "
              f"{median([x.sys_cpu for x in refs]):.1f}, "
              f"{median([x.minflt for x in refs]) / 1000:.0f}k faults; pg_dump, zstd, openssl);"
              f" PostgreSQL server not counted")
        rs = median([x.wall for x in restics])
        vver = median([x.wall for x in verifies])
        rck = median([x.wall for x in checks])
        print(f"restic   backup {rs:.1f} s ({spread([x.wall for x in restics])}, "
              f"{median([x.stored_bytes for x in restics]) / MIB:.0f} MiB stored)  vowvault "
              f"backup/restic {vb / rs:.2f};  vowvault verify {vver:.1f} s "
              f"({spread([x.wall for x in verifies])}) against restic check --read-data "
              f"{rck:.1f} s ({spread([x.wall for x in checks])}) ratio {vver / rck:.2f}")
        if restores:
            vr = median([x.wall for x in restores])
            rr = median([x.wall for x in ref_restores])
            val = median([x.validation for x in restores])
            print(f"restore  vowvault {vr:.1f} s ({spread([x.wall for x in restores])}, "
                  f"validation ~{val:.1f} s)  reference {rr:.1f} s "
                  f"({spread([x.wall for x in ref_restores])})  ratio {vr / rr:.2f} "
                  f"({(vr - val) / rr:.2f} without validation)")
            failed = [x for x in restores if x.error]
            if failed:
                print(f"         vowvault restore FAILED in {len(failed)} of {len(restores)} "
                      f"runs (time is to the failure, after pg_restore and validation): "
                      f"{failed[0].error}")
        children = {}
        for x in backups:
            for k, m in x.children_mib.items():
                children[k] = max(children.get(k, 0.0), m)
        print(f"peak RSS vowvault {rss:.0f} MiB (process alone; {empty.own_kib / 1024:.0f} MiB "
              f"for an empty database; in-flight data bound {bound / MIB:.0f} MiB: {how}); "
              f"children "
              + ", ".join(f"{k} {m:.0f} MiB" for k, m in sorted(children.items())))
        print(f"target   backup ratio <= {TARGET_RATIO:.1f}: "
              f"{'met' if ratio <= TARGET_RATIO else 'NOT met'} ({ratio:.2f}; without verify "
              f"{ratio_nv:.2f}: {'met' if ratio_nv <= TARGET_RATIO else 'NOT met'});  "
              f"RSS <= {TARGET_RSS_MIB} MiB: {'met' if rss <= TARGET_RSS_MIB else 'NOT met'} "
              f"({rss:.0f} MiB)")
        print(f"target   backup <= {TARGET_RESTIC:.1f}x restic: "
              f"{'met' if vb / rs <= TARGET_RESTIC else 'NOT met'} ({vb / rs:.2f});  verify <= "
              f"{TARGET_VERIFY:.1f}x restic check --read-data: "
              f"{'met' if vver / rck <= TARGET_VERIFY else 'NOT met'} ({vver / rck:.2f})")
        print(f"end: {load()}")
        return 0
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        kill_current(grace=5)
        bench.stop_warm()
        with contextlib.suppress(Exception):
            drop_db(bench.empty_db)
        if not args.keep:
            with contextlib.suppress(Exception):
                drop_db(args.restore_db)
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp} (VOWVAULT_HOME {bench.home}) and database {args.restore_db}")
        if args.drop and not interrupted:
            with contextlib.suppress(Exception):
                drop_db(args.db)
                print(f"dropped {args.db}")


if __name__ == "__main__":
    sys.exit(main())
