"""Physical backups, restores and WAL archiving: vowvault against pgBackRest, one cluster.

    .venv/bin/python benchmarks/physical.py [--size-mib 1024] [--load-seconds 60]
        [--warmup-seconds 10] [--burst-segments 32] [--sample-interval 1] [--keep]

Run as root: the throw-away cluster and every restored one run as ``postgres``; pgBackRest
and zstd are installed from the Debian registry first when missing. In one run:

1. ``initdb`` (as postgres) in a temporary directory under /tmp, its own port on
   127.0.0.1, ``wal_level = replica``, ``archive_mode = on``; filled with at least
   ``--size-mib`` MiB that compress about 3x with ``zstd -3``: ``pgbench -i`` (about an
   eighth of it, the tables the write load uses) and a table of notes (hex tokens between
   recurring phrases) in 8 hash partitions, so that no relation file is near 1 GiB
   (pgBackRest parallelises over files: one huge file would hold it to one core; vowvault
   compresses one stream with two threads, whatever the files). The cluster's size, the
   size of its ``pg_basebackup`` tar and that tar's ``zstd -3`` ratio are measured and
   printed (that pass also warms the page cache for both sides).
2. Base backup, wall time of the whole process: ``vowvault backup run POLICY --direct``
   (a physical policy, ``file://`` target, private ``VOWVAULT_HOME``; it includes
   vowvault's read-back verification, reported apart) against ``pgbackrest backup
   --type=full`` (zstd level 3, aes-256-cbc, process-max=2, start-fast, async archiving).
   Each side runs with its own ``archive_command`` set (ALTER SYSTEM and a reload), as in
   production.
3. Restore, wall time to a data directory ready to start: ``vowvault backup restore
   --policy POLICY --latest --to-datadir DIR`` against ``pgbackrest restore
   --pg1-path=DIR``; then each restored directory is started the same way (``pg_ctl
   start``, its own port, archiving off) and timed until recovery ends and the server is
   promoted, and its row count checked against the original.
4. WAL archiving under ``pgbench -c 4 -j 2 -T --load-seconds``: vowvault's push
   (``vowvault-wal``, installed for the system's python3) with ``vowvault wal archiver``
   running, then pgBackRest's ``archive-push`` with ``archive-async=y`` (after an unmeasured
   ``--warmup-seconds`` pgbench run: the first run after the fill is slower, whoever
   archives). Sampled every
   ``--sample-interval`` seconds: the insert position (which segments are complete), what
   the repository holds (vowvault: the receipts the archiver leaves after recording a
   segment in the catalog; pgBackRest: the segment files in its repository), the spool
   and the server's ``.ready`` queue. The lag at a sample is the age of the oldest
   complete segment the repository does not hold yet (0 when it holds them all): how far
   the archive is behind everything but the segment being written. Also the per-segment
   latency (complete to in the repository; both have the sampling's resolution), the
   throughput, and how long the backlog takes to drain once the load stops.
5. Capacity: ``--burst-segments`` complete segments queued on the server (written while
   ``archive_command`` is ``/bin/false``), then each tool's ``archive_command``: the time
   until the repository holds them all (pgbench -c 4 writes little WAL on 2 cores; this
   says how much headroom each archiving path has).

Numbers from a shared 2-core machine are noisy: the load average is printed at the start
and the end, and the machine's busy CPU seconds for every timed step.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchproc import CURRENT as _CURRENT
from benchproc import (
    install_references,
    kill_current,
    load,
    machine_cpu,
    shell,
    start_warm,
    stop_warm,
)

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
VOWVAULT = str(BIN / "vowvault")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
POLICY = "bench-physical"
STANZA = "bench"
CIPHER_PASS = "benchmark-only-passphrase"  # noqa: S105 - a throw-away repository
MIB = 1 << 20
SEGMENT = 16 * MIB
TARGET_BACKUP = 0.9
TARGET_RESTORE = 1.0
TARGET_LAG = 10.0
DRAIN_TIMEOUT = 120.0

# --------------------------------------------------------------------------------------------
# Running and measuring processes.
# --------------------------------------------------------------------------------------------

@dataclass
class Measured:
    wall: float
    cpu: float            # user + sys of the process and every child it waited for
    sys_cpu: float
    maxrss_kib: int       # wait4: the largest of the process and its waited descendants
    machine: float        # busy CPU seconds of the whole machine meanwhile (the server too)
    iowait: float
    stdout: str
    stderr: str
    returncode: int

    def cpu_line(self) -> str:
        return (f"cpu {self.cpu:.1f} s (sys {self.sys_cpu:.1f}) in the process and its "
                f"children; machine busy {self.machine:.1f} s of {2 * self.wall:.1f} "
                f"({100 * self.machine / max(2 * self.wall, 1e-9):.0f}% of 2 cores), "
                f"iowait {self.iowait:.1f} s; peak RSS {self.maxrss_kib / 1024:.0f} MiB")


def measured(cmd: list[str], *, env: dict[str, str] | None = None, check: bool = True
             ) -> Measured:
    """Run ``cmd`` in its own process group; wall time and CPU via wait4."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        busy0, io0 = machine_cpu()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
        _CURRENT[proc.pid] = proc
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        busy1, io1 = machine_cpu()
        proc.returncode = os.waitstatus_to_exitcode(status)
        _CURRENT.pop(proc.pid, None)
        out.seek(0)
        err.seek(0)
        result = Measured(wall, usage.ru_utime + usage.ru_stime, usage.ru_stime,
                          usage.ru_maxrss, busy1 - busy0, io1 - io0,
                          out.read().decode(errors="replace"),
                          err.read().decode(errors="replace"), proc.returncode)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)[:300]} exited {result.returncode}:\n"
                           f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def run(cmd: list[str], *, env: dict[str, str] | None = None, check: bool = True,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)[:300]} exited {proc.returncode}:\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd]



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])



def tree_bytes(path: Path, skip: tuple[str, ...] = ()) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        if Path(dirpath) == path:
            dirnames[:] = [d for d in dirnames if d not in skip]
        for name in filenames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --------------------------------------------------------------------------------------------
# The cluster.
# --------------------------------------------------------------------------------------------

def lsn_int(lsn: str) -> int:
    high, low = lsn.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def segment_name(number: int, timeline: int = 1) -> str:
    return f"{timeline:08X}{number // 0x100:08X}{number % 0x100:08X}"


@dataclass
class Cluster:
    datadir: Path
    port: int
    socket_dir: Path

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)

    def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        with self.connect() as conn:
            cur = conn.execute(query, args or None)
            return list(cur.fetchall()) if cur.description else []

    def one(self, query: str, *args: Any) -> Any:
        return self.sql(query, *args)[0][0]

    def set_archive_command(self, command: str) -> None:
        self.sql("ALTER SYSTEM SET archive_command = '" + command.replace("'", "''") + "'")
        self.sql("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 10
        while self.one("SHOW archive_command") != command:
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not take the new archive_command")
            time.sleep(0.05)

    def start(self, log: Path, extra: str = "") -> None:
        run(as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-l", str(log),
                         "-w", "-t", "600", "-o",
                         f"-p {self.port} -c listen_addresses=127.0.0.1 "
                         f"-c unix_socket_directories={self.socket_dir} {extra}", "start"]))

    def stop(self, mode: str = "fast") -> None:
        run(as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w",
                         "stop"]), check=False, timeout=120)

    def insert_segment(self) -> int:
        return lsn_int(self.one("SELECT pg_current_wal_insert_lsn()::text")) // SEGMENT

    def ready(self) -> int:
        return int(self.one("SELECT count(*) FROM pg_ls_archive_statusdir() "
                            "WHERE name LIKE '%.ready'"))

    def cluster_bytes(self) -> int:
        return int(self.one("SELECT sum(pg_database_size(oid)) FROM pg_database"))


def init_cluster(root: Path) -> Cluster:
    c = Cluster(root / "data", free_port(), root)
    run(as_postgres([str(PG_BIN / "initdb"), "-D", str(c.datadir), "-A", "trust", "-U",
                     "postgres", "--no-sync"]))
    with open(c.datadir / "postgresql.conf", "a") as f:
        # archive_command changes per phase (ALTER SYSTEM, reload); /bin/true while loading.
        f.write(f"port = {c.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{root}'\nwal_level = replica\n"
                f"archive_mode = on\narchive_command = '/bin/true'\nmax_wal_senders = 8\n"
                f"shared_buffers = 256MB\n")
    c.start(root / "server.log")
    return c


# Notes: 6 MD5 hex tokens (random) between recurring phrases, about 290 bytes a row;
# as heap pages, with pgbench's tables beside them, about 3x with zstd -3.
NOTES = """
INSERT INTO notes
SELECT g, floor(random() * 100000)::int, timestamptz '2024-01-01' + random() * interval '900 days',
       md5(random()::text) || ' guest table menu vegan please seat ' || md5(random()::text)
       || ' near band late arrive bring child ' || md5(random()::text) || md5(random()::text)
       || ' dietary gluten free allergy nut ' || md5(random()::text)
       || ' parking hotel room shuttle ' || md5(random()::text)
FROM generate_series(%s, %s) g"""
BATCH = 50_000
NOTES_PARTITIONS = 8


def fill(c: Cluster, size_mib: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    scale = max(2, round(size_mib / 8 / 15))  # pgbench: about 15 MiB per scale unit
    run(["pgbench", "-i", "-q", "-s", str(scale), "-h", "127.0.0.1", "-p", str(c.port), "-U",
         "postgres", "postgres"])
    # Hash partitions: no relation file near 1 GiB, so pgBackRest, which runs process-max
    # workers over files, is not held to one core by the data set's shape.
    c.sql("CREATE TABLE notes (id bigint PRIMARY KEY, wedding integer NOT NULL, "
          "at timestamptz NOT NULL, body text NOT NULL) PARTITION BY HASH (id)")
    for i in range(NOTES_PARTITIONS):
        c.sql(f"CREATE TABLE notes_{i} PARTITION OF notes "
              f"FOR VALUES WITH (MODULUS {NOTES_PARTITIONS}, REMAINDER {i})")
    conns = [c.connect() for _ in range(2)]
    pool = ThreadPoolExecutor(2)
    try:
        for conn in conns:
            conn.execute("SET synchronous_commit = off")
        n = 0
        while True:
            size = c.cluster_bytes()
            if sys.stdout.isatty():
                print(f"\r  filling: {size / MIB:.0f} of {size_mib} MiB", end="", flush=True)
            if size >= size_mib * MIB:
                break
            # Two batches at once, one on each connection (two server processes).
            batches = [pool.submit(conn.execute, NOTES, ((n + i) * BATCH + 1,
                                                         (n + i + 1) * BATCH))
                       for i, conn in enumerate(conns)]
            n += len(conns)
            for b in batches:
                b.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
    if sys.stdout.isatty():
        print()
    c.sql("VACUUM (FREEZE, ANALYZE)")  # hint bits set once: no side pays for them
    c.sql("CHECKPOINT")
    return {"scale": scale, "notes": int(c.one("SELECT count(*) FROM notes")),
            "seconds": time.perf_counter() - t0}


def measure_tar(c: Cluster) -> tuple[int, int, float]:
    """(tar bytes, zstd -3 bytes, seconds) of ``pg_basebackup -Ft -X fetch -D -``."""
    t0 = time.perf_counter()
    out = run(shell(f"pg_basebackup -h 127.0.0.1 -p {c.port} -U postgres -D - -Ft -X fetch "
                    f"--checkpoint=fast | tee >(wc -c >&2) | zstd -3 -T2 -q -c | wc -c"))
    seconds = time.perf_counter() - t0
    return int(out.stderr.strip().splitlines()[-1]), int(out.stdout.strip()), seconds


# --------------------------------------------------------------------------------------------
# vowvault.
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
    description: benchmarks/physical.py
    source: {{kind: postgres, dsn: "{dsn}", mode: physical}}
    backup_type: full
    schedule: {{cron: "0 3 * * *", timezone: UTC}}
    peak_season: {{multiplier: 1}}
    retention: {{days: 7}}
    storage:
      - {{url: "file://{store}", tier: HOT}}
"""


class Vowvault:
    def __init__(self, root: Path, cluster: Cluster) -> None:
        self.root, self.cluster = root, cluster
        self.home = root / "vowvault-home"
        self.store = root / "vowvault-store"
        self.spool = root / "vowvault-spool"
        self.bindir = root / "vowvault-bin"
        self.env = dict(os.environ, VOWVAULT_HOME=str(self.home), VOWVAULT_ACTOR="benchmark",
                        COLUMNS="400", NO_COLOR="1",
                        PATH=f"{BIN}:{PG_BIN}:{os.environ['PATH']}")
        self.env.pop("VOWVAULT_DATABASE_URL", None)
        self.env.pop("VOWVAULT_WAL_SPOOL", None)
        self.env.pop("VOWVAULT_WARM", None)
        # Commands measured cold, and everything not measured, start cold; the ones
        # measured warm fork from the `vowvault warm` process of self.env.
        self.cold_env = {**self.env, "VOWVAULT_WARM": "off"}
        self.archive_command = ""

    def setup(self) -> None:
        self.home.mkdir()
        self.store.mkdir()
        self.spool.mkdir()
        shutil.chown(self.spool, "postgres")  # the server pushes, the archiver (root) takes
        policy = self.root / "policies.yaml"
        policy.write_text(POLICY_FILE.format(policy=POLICY, dsn=self.cluster.dsn,
                                             store=self.store))
        out = run([VOWVAULT, "policies", "apply", str(policy)], env=self.cold_env).stdout
        print("policies apply: " + " ".join(out.split()))
        out = run([VOWVAULT, "wal", "install-command", str(self.bindir), "--policy", POLICY,
                   "--spool", str(self.spool)], env=self.cold_env).stdout
        m = re.search(r"archive_command = '(.*)'", out)
        if not m:
            raise RuntimeError(f"no archive_command in: {out}")
        self.archive_command = m.group(1)
        print(f"vowvault archive_command: {self.archive_command}")

    def start_warm(self) -> str:
        """`vowvault warm` for the measured environment (not timed)."""
        return start_warm(VOWVAULT, self.env)

    def stop_warm(self) -> None:
        stop_warm(VOWVAULT, self.env)

    def backup(self, warm: bool = False) -> tuple[Measured, dict[str, Any], float]:
        """The run, the job as `backup show --json` gives it, and how long that show took
        (a command's fixed cost: interpreter, imports, catalog; forked, or cold)."""
        env = self.env if warm else self.cold_env
        m = measured([VOWVAULT, "backup", "run", POLICY, "--direct"], env=env)
        found = re.search(r"backup ([0-9a-f-]{36}) of", " ".join(m.stdout.split()))
        if not found:
            raise RuntimeError(f"cannot find the backup id in: {m.stdout}")
        show = measured([VOWVAULT, "backup", "show", found.group(1), "--json"], env=env)
        job = json.loads(show.stdout)
        return m, job.get("backup", job), show.wall

    def archiver_cmd(self, once: bool) -> list[str]:
        return [VOWVAULT, "wal", "archiver", "--policy", POLICY, "--spool", str(self.spool),
                *(["--once"] if once else [])]

    def archive_once(self) -> str:
        return " ".join(run(self.archiver_cmd(True), env=self.cold_env).stdout.split())

    def start_archiver(self) -> subprocess.Popen[bytes]:
        with open(self.root / "archiver.log", "ab") as log:
            proc = subprocess.Popen(self.archiver_cmd(False), env=self.cold_env, stdout=log,
                                    stderr=log, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        _CURRENT[proc.pid] = proc
        return proc

    def restore(self, datadir: Path, warm: bool = False) -> Measured:
        return measured([VOWVAULT, "backup", "restore", "--policy", POLICY, "--latest",
                         "--to-datadir", str(datadir)], env=self.env if warm else self.cold_env)

    def archived(self) -> set[str]:
        """Segments recorded in the catalog: the archiver leaves a receipt only then."""
        try:
            return set(os.listdir(self.spool / POLICY / ".archived"))
        except FileNotFoundError:
            return set()

    def spooled(self) -> int:
        try:
            return sum(1 for n in os.listdir(self.spool / POLICY)
                       if re.fullmatch(r"[0-9A-F]{24}", n))
        except FileNotFoundError:
            return 0

    def wal_status(self) -> dict[str, Any] | None:
        out = run([VOWVAULT, "wal", "status", POLICY, "--spool", str(self.spool), "--json"],
                  env=self.cold_env, check=False)
        try:
            return json.loads(out.stdout)
        except ValueError:
            return None


# --------------------------------------------------------------------------------------------
# pgBackRest.
# --------------------------------------------------------------------------------------------

class PgBackRest:
    def __init__(self, root: Path, cluster: Cluster) -> None:
        self.root, self.cluster = root, cluster
        self.dir = root / "pgbackrest"
        self.conf = self.dir / "pgbackrest.conf"
        self.repo = self.dir / "repo"
        self.archive_command = (f"pgbackrest --config={self.conf} --stanza={STANZA} "
                                f"archive-push %p")

    def setup(self) -> None:
        for d in ("repo", "spool", "lock", "log"):
            (self.dir / d).mkdir(parents=True)
        self.conf.write_text(f"""\
[global]
repo1-path={self.repo}
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass={CIPHER_PASS}
repo1-retention-full=4
compress-type=zst
compress-level=3
process-max=2
start-fast=y
archive-async=y
spool-path={self.dir / "spool"}
lock-path={self.dir / "lock"}
log-path={self.dir / "log"}
log-level-console=warn
log-level-file=info

[{STANZA}]
pg1-path={self.cluster.datadir}
pg1-port={self.cluster.port}
pg1-socket-path={self.cluster.socket_dir}
pg1-user=postgres
""")
        self.conf.chmod(0o600)
        for path in [self.dir, *self.dir.rglob("*")]:
            shutil.chown(path, "postgres", "postgres")

    def cmd(self, *args: str) -> list[str]:
        return as_postgres(["pgbackrest", f"--config={self.conf}", f"--stanza={STANZA}", *args])

    def stanza_create(self) -> None:
        run(self.cmd("stanza-create"))
        run(self.cmd("check"))

    def backup(self) -> Measured:
        return measured(self.cmd("--type=full", "backup"))

    def restore(self, datadir: Path) -> Measured:
        return measured(self.cmd(f"--pg1-path={datadir}", "restore"))

    def backup_bytes(self) -> int:
        """Of the newest full backup."""
        labels = sorted((self.repo / "backup" / STANZA).glob("*F"))
        return tree_bytes(labels[-1]) if labels else 0

    def backup_phases(self) -> list[dict[str, float]]:
        """Seconds of each step of every backup so far, from pgBackRest's own log."""
        marks = {"backup command begin": "begin", "execute non-exclusive backup start": "start",
                 "backup start archive": "checkpointed",
                 "execute non-exclusive backup stop": "copied",
                 "new backup label": "archived", "backup command end": "end"}
        runs: list[dict[str, float]] = []
        log = self.dir / "log" / f"{STANZA}-backup.log"
        for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
            m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) P00 +INFO: (.*)", line)
            if not m:
                continue
            for text, key in marks.items():
                if m.group(2).startswith(text):
                    at = dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
                    if key == "begin":
                        runs.append({})
                    if runs:
                        runs[-1].setdefault(key, at)
                    break
        steps = (("connect", "begin", "start"), ("checkpoint", "start", "checkpointed"),
                 ("copy", "checkpointed", "copied"), ("stop+archive", "copied", "archived"),
                 ("end", "archived", "end"))
        return [{name: r[b] - r[a] for name, a, b in steps if a in r and b in r}
                for r in runs]

    def archived(self) -> set[str]:
        found: set[str] = set()
        for path in (self.repo / "archive" / STANZA).glob("*/*/*"):
            m = re.match(r"([0-9A-F]{24})-[0-9a-f]{40}", path.name)
            if m:
                found.add(m.group(1))
        return found

    def spooled(self) -> int:
        """No spool of waiting segments: the async archive-push answers PostgreSQL once the
        segment is in the repository, so the server's .ready queue is the whole backlog."""
        return 0


# --------------------------------------------------------------------------------------------
# Restored clusters.
# --------------------------------------------------------------------------------------------

@dataclass
class Started:
    seconds: float
    rows: int
    reached: str


def start_restored(root: Path, datadir: Path, label: str) -> Started:
    """Start a restored directory (its own port, archiving off: it must not write into the
    repositories) and wait until recovery has ended and the server is promoted."""
    c = Cluster(datadir, free_port(), root)
    log = root / f"{label}.log"
    t0 = time.perf_counter()
    c.start(log, "-c archive_mode=off")
    deadline = time.monotonic() + 600
    while c.one("SELECT pg_is_in_recovery()"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{label}: still in recovery after 600 s")
        time.sleep(0.05)
    seconds = time.perf_counter() - t0
    rows = int(c.one("SELECT count(*) FROM notes"))
    text = log.read_text(errors="replace") if log.exists() else ""
    reached = [ln.split("LOG:", 1)[-1].strip() for ln in text.splitlines()
               if "redo done at" in ln or "archive recovery complete" in ln]
    c.stop()
    return Started(seconds, rows, reached[0] if reached else "?")


# --------------------------------------------------------------------------------------------
# WAL archiving under load.
# --------------------------------------------------------------------------------------------

@dataclass
class LoadResult:
    tool: str
    seconds: float = 0.0
    tps: float = 0.0
    generated: int = 0
    archived_during: int = 0
    drain: float | None = None
    lags: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    max_backlog: int = 0
    max_ready: int = 0
    max_spool: int = 0
    failed: int = 0
    machine: float = 0.0
    archiver_cpu: float | None = None
    missing: int = 0

    @property
    def generated_rate(self) -> float:
        return self.generated / self.seconds if self.seconds else 0.0

    @property
    def archived_rate(self) -> float:
        return self.archived_during / self.seconds if self.seconds else 0.0

    @property
    def keeps_up(self) -> bool:
        return bool(self.lags) and max(self.lags) < TARGET_LAG and self.missing == 0


def wait_quiet(c: Cluster, archived: Any, spooled: Any, timeout: float = DRAIN_TIMEOUT) -> None:
    """Until the server has handed every complete segment over (nothing .ready; pgBackRest's
    async archive-push answers only once its segment is in the repository) and nothing waits
    in vowvault's spool (a segment leaves it once recorded)."""
    deadline = time.monotonic() + timeout
    while c.ready() or spooled():
        if time.monotonic() > deadline:
            print(f"  note: archive not quiet after {timeout:.0f} s (ready {c.ready()}, "
                  f"spooled {spooled()})")
            return
        time.sleep(0.25)


def load_phase(tool: str, c: Cluster, archived: Any, spooled: Any, seconds: int,
               interval: float, log: Path) -> LoadResult:
    res = LoadResult(tool)
    c.sql("TRUNCATE pgbench_history")
    c.sql("VACUUM pgbench_branches, pgbench_tellers")
    c.sql("CHECKPOINT")  # each side starts from a checkpoint: the same full-page writes
    failed0 = int(c.one("SELECT failed_count FROM pg_stat_archiver"))
    first = c.insert_segment()
    completed: dict[int, float] = {}
    arrived: dict[int, float] = {}
    last = first
    busy0, _ = machine_cpu()
    out = open(log, "w+b")  # noqa: SIM115 - read back below
    t0 = time.monotonic()
    bench = subprocess.Popen(
        ["pgbench", "-n", "-c", "4", "-j", "2", "-T", str(seconds), "-h", "127.0.0.1", "-p",
         str(c.port), "-U", "postgres", "postgres"], stdout=out, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True)
    _CURRENT[bench.pid] = bench
    end: float | None = None
    try:
        while True:
            tick = time.monotonic()
            cur = c.insert_segment()
            ready = c.ready()
            for n in range(last, cur):
                completed.setdefault(n, tick)
            last = max(last, cur)
            have = archived()
            for n in completed:
                if n not in arrived and segment_name(n) in have:
                    arrived[n] = tick
            waiting = [completed[n] for n in completed if n not in arrived]
            res.lags.append(tick - min(waiting) if waiting else 0.0)
            res.max_backlog = max(res.max_backlog, len(waiting))
            res.max_ready = max(res.max_ready, ready)
            res.max_spool = max(res.max_spool, spooled())
            if end is None and bench.poll() is not None:
                end = time.monotonic()
                res.machine = machine_cpu()[0] - busy0
            if end is not None:
                # The segments completed during the load, all in the repository: drained.
                due = [n for n, t in completed.items() if t <= end]
                if all(n in arrived for n in due):
                    res.drain = max(0.0, max((arrived[n] for n in due), default=end) - end)
                    break
                if time.monotonic() - end > DRAIN_TIMEOUT:
                    break
            time.sleep(max(0.0, interval - (time.monotonic() - tick)))
    finally:
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGTERM)
        bench.wait()
        _CURRENT.pop(bench.pid, None)
    assert end is not None
    res.seconds = end - t0
    out.seek(0)
    text = out.read().decode(errors="replace")
    out.close()
    if bench.returncode != 0:
        raise RuntimeError(f"pgbench exited {bench.returncode}:\n{text[-2000:]}")
    m = re.search(r"tps = ([0-9.]+)", text)
    res.tps = float(m.group(1)) if m else 0.0
    due = [n for n, t in completed.items() if t <= end]
    res.generated = len(due)
    res.archived_during = sum(1 for n in due if arrived.get(n, float("inf")) <= end)
    res.latencies = [arrived[n] - completed[n] for n in due if n in arrived]
    res.missing = sum(1 for n in due if n not in arrived)
    res.failed = int(c.one("SELECT failed_count FROM pg_stat_archiver")) - failed0
    return res


@dataclass
class BurstResult:
    tool: str
    segments: int
    seconds: float        # from the archive_command switch to the last segment in the repo
    first: float          # from the switch to the first segment in the repository
    wal_bytes: int
    handed: float | None  # from the switch until the server had no .ready left
    max_spool: int

    @property
    def rate(self) -> float:
        return self.segments / self.seconds if self.seconds else 0.0

    @property
    def steady(self) -> float:
        span = self.seconds - self.first
        return (self.segments - 1) / span if span > 0 else float("nan")


def burst_phase(tool: str, c: Cluster, command: str, archived: Any, spooled: Any,
                segments: int) -> BurstResult:
    """A backlog of ``segments`` complete segments (written while archive_command fails,
    so they wait as .ready), then the tool's archive_command: the time until all are in
    the repository. What the archiving path sustains, with no load in the way."""
    wait_quiet(c, archived, spooled)
    c.set_archive_command("/bin/false")
    first = c.insert_segment()
    next_id = int(c.one("SELECT max(id) FROM notes")) + 1
    with c.connect() as conn:
        conn.execute("SET synchronous_commit = off")
        while c.insert_segment() < first + segments:
            conn.execute(NOTES, (next_id, next_id + BATCH - 1))
            next_id += BATCH
        conn.execute("SELECT pg_switch_wal()")
    wanted = {segment_name(n) for n in range(first, c.insert_segment())}
    deadline = time.monotonic() + 60
    while c.ready() < len(wanted) and time.monotonic() < deadline:
        time.sleep(0.1)
    t0 = time.monotonic()
    c.set_archive_command(command)
    first_at: float | None = None
    handed: float | None = None
    max_spool = 0
    deadline = t0 + 600
    while True:
        have = archived() & wanted
        now = time.monotonic()
        if have and first_at is None:
            first_at = now - t0
        if handed is None and c.ready() == 0:
            handed = time.monotonic() - t0
        max_spool = max(max_spool, spooled())
        if len(have) == len(wanted) or now > deadline:
            break
        time.sleep(0.1)
    settle = time.monotonic() + 10
    while handed is None and time.monotonic() < settle:
        if c.ready() == 0:
            handed = time.monotonic() - t0
        time.sleep(0.05)
    if len(have) < len(wanted):
        print(f"  note: {tool}: {len(wanted) - len(have)} of {len(wanted)} segments not in the "
              f"repository after 600 s")
    return BurstResult(tool, len(have), now - t0, first_at or 0.0, len(have) * SEGMENT,
                       handed, max_spool)


def stop_process(proc: subprocess.Popen[bytes]) -> float:
    """SIGTERM, wait; the CPU seconds it used (wait4)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            _CURRENT.pop(proc.pid, None)
            return usage.ru_utime + usage.ru_stime
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    _pid, _status, usage = os.wait4(proc.pid, 0)
    _CURRENT.pop(proc.pid, None)
    return usage.ru_utime + usage.ru_stime


def describe_load(r: LoadResult) -> str:
    drained = f"{r.drain:.1f} s" if r.drain is not None else f"NOT within {DRAIN_TIMEOUT:.0f} s"
    return (f"{r.tool:<10} pgbench {r.seconds:.0f} s at {r.tps:.0f} tps; "
            f"{r.generated} segments completed ({r.generated_rate:.2f}/s), "
            f"{r.archived_during} in the repository by the load's end "
            f"({r.archived_rate:.2f}/s); lag p50 {pct(r.lags, 0.5):.1f} s, max "
            f"{max(r.lags, default=0):.1f} s; per-segment latency p50 "
            f"{pct(r.latencies, 0.5):.1f} s, p95 {pct(r.latencies, 0.95):.1f} s, max "
            f"{max(r.latencies, default=float('nan')):.1f} s; backlog max {r.max_backlog} "
            f"segments (server .ready max {r.max_ready}"
            + (f", spool max {r.max_spool}" if r.tool == "vowvault" else "")
            + f"); drained {drained} after the load; archive_command failures {r.failed}; "
            f"machine busy "
            f"{r.machine:.0f} s of {2 * r.seconds:.0f}"
            + (f"; archiver process cpu {r.archiver_cpu:.1f} s" if r.archiver_cpu is not None
               else ""))


# --------------------------------------------------------------------------------------------
# The run.
# --------------------------------------------------------------------------------------------

def stop_all_clusters(root: Path) -> None:
    for pid_file in root.glob("**/postmaster.pid"):
        stop = [str(PG_BIN / "pg_ctl"), "-D", str(pid_file.parent), "-w", "-t", "60", "stop"]
        if run(as_postgres([*stop, "-m", "fast"]), check=False, timeout=120).returncode:
            run(as_postgres([*stop, "-m", "immediate"]), check=False, timeout=120)


def helpers_of(root: Path) -> list[int]:
    """Processes the clusters started that still work in ``root`` (pgBackRest's async
    archive-push outlives the server that started it by a moment)."""
    found = []
    needle = str(root).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if needle in f.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def remove(root: Path) -> None:
    deadline = time.monotonic() + 30
    while helpers_of(root) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in helpers_of(root):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for _ in range(3):  # a helper may still have written a file behind the first pass
        shutil.rmtree(root, ignore_errors=True)
        if not root.exists():
            return
        time.sleep(1)
    print(f"note: could not remove all of {root}", file=sys.stderr)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def mid(runs: list[Measured]) -> Measured:
    """The run with the median wall time (the lower middle one of an even number)."""
    return sorted(runs, key=lambda m: m.wall)[(len(runs) - 1) // 2]


def spread(runs: list[Measured]) -> str:
    walls = [m.wall for m in runs]
    return f"{min(walls):.1f}-{max(walls):.1f}"


def started_line(st: Started, notes: int) -> str:
    return (f"started: {st.seconds:.1f} s to promoted; {st.rows:,} notes "
            f"({'same as' if st.rows == notes else 'DIFFERENT from'} the original); "
            f"{st.reached}")


def handed(b: BurstResult) -> str:
    return f"{b.handed:.1f} s" if b.handed is not None else "?"


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mib", type=int, default=1024, help="cluster size (default 1024)")
    p.add_argument("--load-seconds", type=int, default=60,
                   help="pgbench -T for each archiving run (default 60)")
    p.add_argument("--sample-interval", type=float, default=1.0,
                   help="seconds between archive samples (default 1)")
    p.add_argument("--runs", type=int, default=3,
                   help="base backups and restores of each side, alternating (default 3)")
    p.add_argument("--warmup-seconds", type=int, default=10,
                   help="an unmeasured pgbench run before the archiving runs (default 10)")
    p.add_argument("--burst-segments", type=int, default=32,
                   help="backlog of WAL segments for the drain measurement (default 32)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory "
                   "(the clusters are stopped)")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        p.error("run as root: the clusters run as the postgres user (runuser)")
    if args.size_mib < 64 or args.load_seconds < 5 or args.runs < 1:
        p.error("--size-mib must be >= 64, --load-seconds >= 5 and --runs >= 1")
    install_references({"pgbackrest": "pgbackrest", "zstd": "zstd"})
    for tool in ("pgbench", "pg_basebackup", "zstd", "runuser", "pgbackrest"):
        if shutil.which(tool) is None:
            p.error(f"{tool} is not on PATH (apt-get install -y {tool} failed)")
    if not (PG_BIN / "initdb").exists():
        p.error(f"{PG_BIN}/initdb is missing (PostgreSQL 15 server package)")
    if run([VOWVAULT, "wal", "--help"], check=False).returncode != 0:
        p.error(f"{VOWVAULT} has no `wal` commands (install the project: make install)")

    signal.signal(signal.SIGTERM, _interrupt)  # a kill cleans up like Ctrl-C
    version = run(["pgbackrest", "version"]).stdout.strip()
    server = run([str(PG_BIN / "postgres"), "--version"]).stdout.split()
    print(f"start: {load()}; {version}; PostgreSQL {server[2] if len(server) > 2 else '?'}")
    root = Path(tempfile.mkdtemp(prefix="vv-physical-", dir="/tmp"))
    os.chmod(root, 0o755)  # noqa: S103 - the server (postgres) and this script (root) share it
    shutil.chown(root, "postgres", "postgres")
    vv: Vowvault | None = None
    try:
        c = init_cluster(root)
        filled = fill(c, args.size_mib)
        size = c.cluster_bytes()
        on_disk = tree_bytes(c.datadir, skip=("pg_wal",))
        tar, packed, tar_s = measure_tar(c)
        print(f"cluster: {size / MIB:.0f} MiB (sum of pg_database_size; {on_disk / MIB:.0f} MiB "
              f"on disk without pg_wal), pgbench scale {filled['scale']}, {filled['notes']:,} "
              f"notes, filled in {filled['seconds']:.0f} s")
        print(f"pg_basebackup -Ft -X fetch: {tar / MIB:.0f} MiB tar; zstd -3 -> "
              f"{packed / MIB:.0f} MiB, ratio {tar / packed:.2f}x; pg_basebackup | zstd -3 -T2 "
              f"> /dev/null took {tar_s:.1f} s (also warms the page cache for both sides)")

        vv = Vowvault(root, c)
        vv.setup()
        print(f"vowvault warm: {vv.start_warm()}")
        br = PgBackRest(root, c)
        br.setup()

        # Base backups, alternating, each side with its own archive_command as deployed.
        vbs: list[Measured] = []
        wbs: list[Measured] = []
        rbs: list[Measured] = []
        jobs: list[dict[str, Any]] = []
        fixed = fixed_warm = 0.0
        for i in range(args.runs):
            n = f"{i + 1}/{args.runs}"
            c.set_archive_command(vv.archive_command)
            c.sql("CHECKPOINT")
            vb, job, fixed = vv.backup()
            vbs.append(vb)
            jobs.append(job)
            print(f"backup {n} vowvault   {vb.wall:6.1f} s  "
                  f"{int(job.get('stored_bytes') or 0) / MIB:.0f} MiB stored; stages "
                  + " ".join(f"{k} {v:.1f}" for k, v in (job.get("stage_durations") or {}
                                                         ).items())
                  + f"\n           {vb.cpu_line()}")
            print(f"           then `wal archiver --once`: {vv.archive_once()}")
            c.sql("CHECKPOINT")
            wb, wjob, fixed_warm = vv.backup(warm=True)
            wbs.append(wb)
            print(f"backup {n} vowvault forked from `vowvault warm` {wb.wall:6.1f} s; stages "
                  + " ".join(f"{k} {v:.1f}" for k, v in (wjob.get("stage_durations") or {}
                                                         ).items())
                  + f"\n           machine busy {wb.machine:.1f} s of {2 * wb.wall:.1f} (the "
                    f"fork is the warm process's child: its CPU is not the client's)")
            print(f"           then `wal archiver --once`: {vv.archive_once()}")
            c.set_archive_command(br.archive_command)
            if i == 0:
                br.stanza_create()
            c.sql("CHECKPOINT")
            rb = br.backup()
            rbs.append(rb)
            print(f"backup {n} pgBackRest {rb.wall:6.1f} s  {br.backup_bytes() / MIB:.0f} MiB "
                  f"stored\n           {rb.cpu_line()}")
        names = list(jobs[-1].get("stage_durations") or {})
        stages = {k: statistics.median(float((j.get("stage_durations") or {}).get(k, 0.0))
                                       for j in jobs) for k in names}
        stored = int(jobs[-1].get("stored_bytes") or 0)
        verify = stages.get("verify", 0.0)

        # Restores into new directories, alternating; each started and promoted the same way.
        vrs: list[Measured] = []
        wrs: list[Measured] = []
        rrs: list[Measured] = []
        vss: list[Started] = []
        rss: list[Started] = []
        engines: list[float] = []
        vdir, rdir = root / "restored-vowvault", root / "restored-pgbackrest"
        for i in range(args.runs):
            n = f"{i + 1}/{args.runs}"
            vr = vv.restore(vdir)
            vrs.append(vr)
            said = " ".join(vr.stdout.split())
            engine = re.search(r"fetched, ([0-9.]+) s", said)
            if engine:
                engines.append(float(engine.group(1)))
            print(f"restore {n} vowvault   {vr.wall:6.1f} s  ({said[:160]})"
                  f"\n            {vr.cpu_line()}")
            vss.append(start_restored(root, vdir, "restored-vowvault"))
            print(f"            {started_line(vss[-1], filled['notes'])}")
            for d in (vdir, root / "restored-vowvault.wal"):
                shutil.rmtree(d, ignore_errors=True)
            wr = vv.restore(vdir, warm=True)
            wrs.append(wr)
            print(f"restore {n} vowvault forked from `vowvault warm` {wr.wall:6.1f} s; machine "
                  f"busy {wr.machine:.1f} s of {2 * wr.wall:.1f}")
            for d in (vdir, root / "restored-vowvault.wal"):
                shutil.rmtree(d, ignore_errors=True)
            rr = br.restore(rdir)
            rrs.append(rr)
            print(f"restore {n} pgBackRest {rr.wall:6.1f} s\n            {rr.cpu_line()}")
            rss.append(start_restored(root, rdir, "restored-pgbackrest"))
            print(f"            {started_line(rss[-1], filled['notes'])}")
            shutil.rmtree(rdir, ignore_errors=True)
        restore_engine = statistics.median(engines) if engines else None

        # WAL archiving under the same pgbench load, vowvault first, after a warm-up run (the
        # first pgbench run after the fill is slower whoever archives).
        c.set_archive_command(vv.archive_command)
        archiver = vv.start_archiver()
        if args.warmup_seconds:
            warm = run(["pgbench", "-n", "-c", "4", "-j", "2", "-T", str(args.warmup_seconds),
                        "-h", "127.0.0.1", "-p", str(c.port), "-U", "postgres", "postgres"])
            m = re.search(r"tps = ([0-9.]+)", warm.stdout)
            print(f"warm-up  pgbench {args.warmup_seconds} s at "
                  f"{float(m.group(1)) if m else float('nan'):.0f} tps "
                  f"(vowvault archiving, not measured)")
        wait_quiet(c, vv.archived, vv.spooled)
        lv = load_phase("vowvault", c, vv.archived, vv.spooled, args.load_seconds,
                        args.sample_interval, root / "pgbench-vowvault.log")
        status = vv.wal_status()
        print("archive  " + describe_load(lv))
        if status is not None:
            print(f"         vowvault wal status right after: lag_seconds "
                  f"{status.get('lag_seconds')}, spooled {status.get('spooled')}, gaps "
                  f"{len(status.get('gaps') or [])} (its lag is the time since the newest "
                  f"archive job; the WAL of pgBackRest's phases is not in vowvault's archive)")
        bv = burst_phase("vowvault", c, vv.archive_command, vv.archived, vv.spooled,
                         args.burst_segments)
        lv.archiver_cpu = stop_process(archiver)
        print(f"backlog  vowvault   {bv.segments} segments ({bv.wal_bytes / MIB:.0f} MiB) in "
              f"{bv.seconds:.1f} s: {bv.rate:.1f} segments/s, {bv.rate * 16:.0f} MiB/s (first "
              f"after {bv.first:.1f} s, then {bv.steady:.1f}/s); the server had pushed them "
              f"all into the spool after {handed(bv)}, spool max {bv.max_spool}; archiver "
              f"process cpu {lv.archiver_cpu:.1f} s over both")
        c.set_archive_command(br.archive_command)
        wait_quiet(c, br.archived, br.spooled)
        lb = load_phase("pgBackRest", c, br.archived, br.spooled, args.load_seconds,
                        args.sample_interval, root / "pgbench-pgbackrest.log")
        print("archive  " + describe_load(lb))
        bb = burst_phase("pgBackRest", c, br.archive_command, br.archived, br.spooled,
                         args.burst_segments)
        print(f"backlog  pgBackRest {bb.segments} segments ({bb.wal_bytes / MIB:.0f} MiB) in "
              f"{bb.seconds:.1f} s: {bb.rate:.1f} segments/s, {bb.rate * 16:.0f} MiB/s (first "
              f"after {bb.first:.1f} s, then {bb.steady:.1f}/s); no .ready left after "
              f"{handed(bb)}")

        vb, rb, vr, rr = mid(vbs), mid(rbs), mid(vrs), mid(rrs)
        wb, wr = mid(wbs), mid(wrs)
        warm_backup_ratio = wb.wall / rb.wall
        warm_restore_ratio = wr.wall / rr.wall
        vs_s = statistics.median(x.seconds for x in vss)
        rs_s = statistics.median(x.seconds for x in rss)
        vready = statistics.median(a.wall + b.seconds for a, b in zip(vrs, vss, strict=True))
        rready = statistics.median(a.wall + b.seconds for a, b in zip(rrs, rss, strict=True))
        backup_ratio = vb.wall / rb.wall
        restore_ratio = vr.wall / rr.wall
        ready_ratio = vready / rready
        print()
        print(f"results  cluster {size / MIB:.0f} MiB, tar {tar / MIB:.0f} MiB, zstd -3 "
              f"{tar / packed:.2f}x; pgBackRest zst:3, aes-256-cbc, process-max=2")
        print(f"{'':34}{'vowvault':>10}{'pgBackRest':>12}{'ratio':>8}  target   "
              f"(medians of {args.runs}; min-max: vowvault {spread(vbs)} / {spread(vrs)} s, "
              f"pgBackRest {spread(rbs)} / {spread(rrs)} s, backup / restore)")
        print(f"{'base backup wall (s)':34}{vb.wall:10.1f}{rb.wall:12.1f}{backup_ratio:8.2f}"
              f"  <= {TARGET_BACKUP:.1f}: {verdict(backup_ratio <= TARGET_BACKUP)}")
        print(f"{'  without vowvault verify (s)':34}{vb.wall - verify:10.1f}{rb.wall:12.1f}"
              f"{(vb.wall - verify) / rb.wall:8.2f}")
        print(f"{'  forked from vowvault warm (s)':34}{wb.wall:10.1f}{rb.wall:12.1f}"
              f"{warm_backup_ratio:8.2f}  <= {TARGET_BACKUP:.1f}: "
              f"{verdict(warm_backup_ratio <= TARGET_BACKUP)}")
        if "wall" in stages:
            print(f"{'  vowvault engine only (s)':34}{stages['wall']:10.1f}{rb.wall:12.1f}"
                  f"{stages['wall'] / rb.wall:8.2f}  (the job's own wall: no CLI start-up)")
        print(f"{'restore to a data dir (s)':34}{vr.wall:10.1f}{rr.wall:12.1f}"
              f"{restore_ratio:8.2f}  <= {TARGET_RESTORE:.1f}: "
              f"{verdict(restore_ratio <= TARGET_RESTORE)}")
        print(f"{'  forked from vowvault warm (s)':34}{wr.wall:10.1f}{rr.wall:12.1f}"
              f"{warm_restore_ratio:8.2f}  <= {TARGET_RESTORE:.1f}: "
              f"{verdict(warm_restore_ratio <= TARGET_RESTORE)}")
        if restore_engine is not None:
            print(f"{'  vowvault engine only (s)':34}{restore_engine:10.1f}{rr.wall:12.1f}"
                  f"{restore_engine / rr.wall:8.2f}  (restore_to's own duration)")
        print(f"{'restore + start to promoted (s)':34}{vready:10.1f}{rready:12.1f}"
              f"{ready_ratio:8.2f}  (start alone {vs_s:.1f} / {rs_s:.1f} s)")
        print(f"{'stored (MiB)':34}{stored / MIB:10.0f}{br.backup_bytes() / MIB:12.0f}"
              f"{stored / max(br.backup_bytes(), 1):8.2f}")
        print(f"{'pgbench -c 4 -j 2 (tps)':34}{lv.tps:10.0f}{lb.tps:12.0f}")
        print(f"{'WAL generated (segments/s)':34}{lv.generated_rate:10.2f}"
              f"{lb.generated_rate:12.2f}")
        print(f"{'WAL archived during load (seg/s)':34}{lv.archived_rate:10.2f}"
              f"{lb.archived_rate:12.2f}")
        print(f"{'archive lag p50 (s)':34}{pct(lv.lags, 0.5):10.1f}{pct(lb.lags, 0.5):12.1f}")
        print(f"{'archive lag max (s)':34}{max(lv.lags, default=0):10.1f}"
              f"{max(lb.lags, default=0):12.1f}          < {TARGET_LAG:.0f}: "
              f"{verdict(lv.keeps_up)} (pgBackRest: {verdict(lb.keeps_up)})")
        print(f"{'segment latency p50 / max (s)':34}"
              f"{pct(lv.latencies, 0.5):5.1f} /{max(lv.latencies, default=0):4.1f}"
              f"{pct(lb.latencies, 0.5):7.1f} /{max(lb.latencies, default=0):4.1f}")
        print(f"{'backlog drain (segments/s)':34}{bv.rate:10.1f}{bb.rate:12.1f}"
              f"{bv.rate / bb.rate if bb.rate else float('nan'):8.2f}  ({args.burst_segments} "
              f"segments queued, then the archive_command)")
        print(f"{'drained after the load (s)':34}"
              f"{(lv.drain if lv.drain is not None else float('nan')):10.1f}"
              f"{(lb.drain if lb.drain is not None else float('nan')):12.1f}")
        print(f"targets  base backup <= {TARGET_BACKUP}x: {verdict(backup_ratio <= TARGET_BACKUP)}"
              f" cold ({backup_ratio:.3f}), {verdict(warm_backup_ratio <= TARGET_BACKUP)} "
              f"forked ({warm_backup_ratio:.3f}); restore <= {TARGET_RESTORE}x: "
              f"{verdict(restore_ratio <= TARGET_RESTORE)} cold ({restore_ratio:.3f}), "
              f"{verdict(warm_restore_ratio <= TARGET_RESTORE)} forked "
              f"({warm_restore_ratio:.3f}); archiving keeps"
              f" up with pgbench -c 4, lag < {TARGET_LAG:.0f} s: {verdict(lv.keeps_up)} (max "
              f"{max(lv.lags, default=0):.1f} s)")
        if backup_ratio > TARGET_BACKUP or restore_ratio > TARGET_RESTORE or not lv.keeps_up:
            print("profile  vowvault backup stages (s): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
                  + f"; process+children cpu {vb.cpu:.1f} s vs pgBackRest {rb.cpu:.1f} s; "
                    f"machine busy {vb.machine:.1f} s vs {rb.machine:.1f} s (vowvault's "
                    f"includes the server's walsender streaming the tar)")
            phases = br.backup_phases()
            if len(phases) == len(rbs):
                print("         pgBackRest backup steps (s, its log, the median run): "
                      + ", ".join(f"{k} {v:.1f}" for k, v in phases[rbs.index(rb)].items()))
            print(f"         fixed cost of a vowvault command (backup show --json): {fixed:.1f} s"
                  f" cold, {fixed_warm:.2f} s forked;"
                  f" backup process wall {vb.wall:.1f} s, job wall {stages.get('wall', 0):.1f} s;"
                  f" restore process wall {vr.wall:.1f} s, restore_to "
                  f"{restore_engine if restore_engine is not None else float('nan'):.1f} s")
            print(f"         restore cpu {vr.cpu:.1f} s vs {rr.cpu:.1f} s; machine busy "
                  f"{vr.machine:.1f} s vs {rr.machine:.1f} s; iowait {vr.iowait:.1f} s vs "
                  f"{rr.iowait:.1f} s")
        print(f"end: {load()}")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        kill_current()
        if vv is not None:
            vv.stop_warm()
        stop_all_clusters(root)
        if args.keep:
            print(f"kept {root} (clusters stopped)")
        else:
            remove(root)


if __name__ == "__main__":
    sys.exit(main())
