"""Storage throughput: vowvault backups against each SDK's own bulk upload, per backend.

    .venv/bin/python benchmarks/storage_throughput.py [--mib 512] [--runs 3]
        [--backends s3,gcs,azure,local] [--s3-concurrency 10] [--azure-concurrency 4]
        [--no-source-size-sdk] [--keep]

1. Builds (once, in a temporary directory) a directory of ``--mib`` MiB that compresses
   about 3x with zstd -3 as a whole: incompressible "photos" beside guest lists (JSON),
   event logs (CSV) and short notes (text); the photo share is chosen from the measured
   ratio of the text so that the whole lands near 3x.
2. Backs it up once to a local target, untimed (warm page cache, imports, and the stored
   size), and writes a file of random bytes of exactly that stored size for the SDKs.
3. For each backend, starts its emulator once (S3: moto server; GCS: gcp-storage-emulator,
   here in a child process so that its CPU is its own; Azure: Azurite; local: none) and
   alternates ``--runs`` times, each on a fresh bucket / container / directory:

   - vowvault: ``run_backup`` in this process (the engine ``vowvault backup run --direct``
     runs), a full directory backup: wall time, stored bytes and ``stage_seconds``;
     ``verify`` (every object read back and checked) is also reported apart.
   - backend save: vowvault's storage backend alone (``open_backend(url).save``) storing
     the pre-generated file: the storage layer without snapshot, compression, encryption
     or verification.
   - SDK bulk: the SDK's own bulk upload of the same file, i.e. the same number of bytes
     as vowvault stored, and also (unless ``--no-source-size-sdk``) a file of the source's
     size, as a reference for "uploading the data as it is":
     S3 ``upload_fileobj`` with ``TransferConfig(8 MiB parts, max_concurrency)``; GCS
     ``transfer_manager.upload_chunks_concurrently`` when the emulator takes it, else a
     resumable ``upload_from_file`` in 8 MiB chunks; Azure ``upload_blob(max_concurrency)``
     with 8 MiB blocks; local ``shutil.copyfile`` + fsync (vowvault fsyncs too).

   Objects are deleted after each step (untimed), so the emulators' state does not grow.
4. Prints medians, the ratios (vowvault time / SDK time for the same stored bytes) and,
   per side, where the CPU went: this process, the emulator process (from
   ``/proc/<pid>/stat``, its descendants included) and the whole machine (``/proc/stat``).

The emulators share the machine's cores with the client: a side whose emulator burns about
one core for the whole upload is emulator-bound, not client-bound. Numbers from a shared
2-core machine are noisy: the load average is printed at the start and the end. Ctrl-C
(or SIGTERM) stops the emulators and removes the temporary data.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import random
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20
PART = 8 * MIB
TARGET_COMPRESSION = 3.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1
BACKENDS = ("s3", "gcs", "azure", "local")
TARGET_VERIFY_DOWNLOAD = 1.5

for _path in (ROOT / "src", ROOT / "tests", ROOT / "tests" / "contract"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

# --------------------------------------------------------------------------------------------
# Test data: a photographer's file tree that compresses about 3x as a whole.
# --------------------------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return text.split()


FIRST = _words("""
    Olivia Amelia Isla Ava Mia Ivy Lily Isabella Rosie Sophia Grace Willow Freya Florence Emily
    Ella Poppy Evie Elsie Charlotte Noah Oliver George Arthur Muhammad Leo Harry Oscar Archie
    Henry Theodore Freddie Jack Charlie Theo Alfie Jacob Thomas Finley Arlo""")
LAST = _words("""
    Smith Jones Taylor Brown Williams Wilson Johnson Davies Patel Robinson Wright Thompson Evans
    Walker White Roberts Green Hall Thomas Clarke Jackson Wood Harris Edwards Turner Martin Cooper
    Hill Ward Hughes Moore Clark King Harrison Lewis Baker Lee Allen Morris Khan""")
CITIES = _words("""
    London Paris Leeds York Bath Bristol Cardiff Glasgow Edinburgh Dublin Lyon Nice Rome Milan
    Porto Lisbon Madrid Seville Berlin Munich""")
DOMAINS = _words("""
    gmail.com yahoo.com outlook.com hotmail.co.uk icloud.com proton.me example.org
    btinternet.com""")
WORDS = _words("""
    the a guest table menu vegan please seat near band late arrive bring child plus one dietary
    gluten free allergy nut wheelchair access parking hotel room shuttle ceremony reception speech
    dance photo cake flowers music toast early leave family friend uncle aunt cousin bride groom
    best man maid honour ring bearer kids wine champagne no yes maybe confirm call back email sent
    paid deposit invoice balance due venue garden marquee tent rain plan catering canapes dessert
    evening buffet booked transport coach taxi timing schedule rehearsal dinner florist bouquet
    buttonhole centrepiece candles lighting dj playlist first song photographer album drone video
    edit""")
STATUSES = _words("invited confirmed declined tentative checked_in no_show cancelled waitlisted")
CHANNELS = _words("web email phone app import planner")


def csv_text(rng: random.Random, size: int) -> bytes:
    """An event log: ids, timestamps, amounts, names, e-mails, a token now and then, notes."""
    out = ["id,wedding_id,guest_id,created_at,amount,quantity,status,channel,first_name,"
           "last_name,email,city,token,note\n"]
    total, i = len(out[0]), 0
    r, ch, ri = rng.random, rng.choice, rng.randrange
    while total < size:
        i += 1
        f, last = ch(FIRST), ch(LAST)
        token = f"{rng.getrandbits(64):016x}" if r() < 0.3 else ""
        note = " ".join(rng.choices(WORDS, k=3 + ri(12)))
        line = (f"{i},{ri(100000)},{ri(50_000_000)},2025-{1 + ri(12):02d}-{1 + ri(28):02d}T"
                f"{ri(24):02d}:{ri(60):02d}:{ri(60):02d}Z,{r() * r() * 5000:.2f},{1 + ri(20)},"
                f"{ch(STATUSES)},{ch(CHANNELS)},{f},{last},{f.lower()}.{last.lower()}{ri(1000)}"
                f"@{ch(DOMAINS)},{ch(CITIES)},{token},{note}\n")
        out.append(line)
        total += len(line)
    return "".join(out).encode()[:size]


def json_text(rng: random.Random, size: int) -> bytes:
    """A guest list: one JSON object per guest, the same keys every time."""
    out = ["[\n"]
    total, i = 2, 0
    r, ch, ri = rng.random, rng.choice, rng.randrange
    while total < size:
        i += 1
        f, last = ch(FIRST), ch(LAST)
        note = " ".join(rng.choices(WORDS, k=2 + ri(10)))
        rec = (f'  {{"guest_id": {i}, "first_name": "{f}", "last_name": "{last}", '
               f'"email": "{f.lower()}.{last.lower()}{ri(100)}@{ch(DOMAINS)}", '
               f'"rsvp": "{ch(STATUSES)}", "table": {1 + ri(40)}, '
               f'"plus_one": {"true" if r() < 0.3 else "false"}, "dietary": "{ch(WORDS)}", '
               f'"city": "{ch(CITIES)}", "note": "{note}"}},\n')
        out.append(rec)
        total += len(rec)
    return "".join(out).encode()[:size]


def note_text(rng: random.Random, size: int) -> bytes:
    lines, total = [], 0
    while total < size:
        line = " ".join(rng.choices(WORDS, k=6 + rng.randrange(14))).capitalize() + ".\n"
        lines.append(line)
        total += len(line)
    return "".join(lines).encode()[:size]


def photo_bytes(rng: random.Random, size: int) -> bytes:
    return b"\xff\xd8\xff\xe1" + rng.randbytes(max(0, size - 4))


GENERATORS: dict[str, Callable[[random.Random, int], bytes]] = {
    "csv": csv_text, "json": json_text, "note": note_text, "photo": photo_bytes}


def write_file(job: tuple[str, str, int, int]) -> int:
    """Write one generated file: (path, kind, size, seed)."""
    path, kind, size, seed = job
    data = GENERATORS[kind](random.Random(seed), size)
    Path(path).write_bytes(data)
    return len(data)


def photo_jobs(folder: Path, wedding: int, budget: int, rng: random.Random
               ) -> list[tuple[str, str, int, int]]:
    """Photos of 1.5 to 6 MiB filling ``budget`` bytes of ``folder`` (files to write)."""
    jobs = []
    n = 0
    while budget > 0:
        size = min(budget, rng.randrange(int(1.5 * MIB), 6 * MIB))
        jobs.append((str(folder / f"IMG_{wedding:03d}{n:03d}.jpg"), "photo", size,
                     rng.getrandbits(32)))
        budget -= size
        n += 1
    return jobs


def zstd_ratio(data: bytes) -> float:
    """Ratio of zstd -3 in 1 MiB frames, as vowvault compresses."""
    import zstandard

    c = zstandard.ZstdCompressor(level=3)
    packed = sum(min(len(c.compress(data[i:i + MIB])), MIB)
                 for i in range(0, len(data), MIB))
    return len(data) / packed


@dataclass
class Source:
    path: Path
    files: int
    size: int
    photo_share: float
    estimate: float
    """Expected zstd -3 ratio of the whole tree, from samples."""


def build_source(root: Path, mib: int, seed: int = 20_240_601) -> Source:
    t0 = time.perf_counter()
    rng = random.Random(seed)
    sample = {k: zstd_ratio(GENERATORS[k](random.Random(seed + i), 2 * MIB))
              for i, k in enumerate(("csv", "json", "note"))}
    # Text shares of the text part: csv 50%, json 44%, notes 6%.
    shares = {"csv": 0.50, "json": 0.44, "note": 0.06}
    text_ratio = 1 / sum(s / sample[k] for k, s in shares.items())
    want = 1 / TARGET_COMPRESSION
    photo = (want - 1 / text_ratio) / (1 - 1 / text_ratio) if text_ratio > 1 else 0.05
    photo = min(0.6, max(0.05, photo))
    total = mib * MIB
    weddings = max(2, mib // 16)
    per = total // weddings
    jobs: list[tuple[str, str, int, int]] = []
    for w in range(weddings):
        base = root / f"wedding-{w:03d}"
        (base / "photos").mkdir(parents=True)
        (base / "notes").mkdir()
        budget = per if w < weddings - 1 else total - per * (weddings - 1)
        jobs += photo_jobs(base / "photos", w, int(budget * photo), rng)
        text = budget - int(budget * photo)
        notes = int(text * shares["note"])
        k = 0
        while notes > 0:
            size = min(notes, rng.randrange(2048, 48 * 1024))
            jobs.append((str(base / "notes" / f"note-{k:03d}.txt"), "note", size,
                         rng.getrandbits(32)))
            notes -= size
            k += 1
        rest = text - int(text * shares["note"])
        guests = int(rest * shares["json"] / (shares["json"] + shares["csv"]))
        jobs.append((str(base / "guests.json"), "json", guests, rng.getrandbits(32)))
        jobs.append((str(base / "events.csv"), "csv", rest - guests, rng.getrandbits(32)))
    with ProcessPoolExecutor(NCPU) as pool:
        size = sum(pool.map(write_file, jobs, chunksize=4))
    share = sum(j[2] for j in jobs if j[1] == "photo") / size
    estimate = 1 / (share + (1 - share) / text_ratio)
    print(f"source: {len(jobs)} files, {size / MIB:.0f} MiB in {weddings} wedding folders "
          f"(photos {share:.0%}; text samples zstd -3: csv {sample['csv']:.2f}x, json "
          f"{sample['json']:.2f}x, notes {sample['note']:.2f}x; expected whole "
          f"{estimate:.2f}x), built in {time.perf_counter() - t0:.1f} s")
    return Source(root, len(jobs), size, share, estimate)


def random_file(path: Path, size: int, seed: int) -> Path:
    rng = random.Random(seed)
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, PART)
            f.write(rng.randbytes(n))
            left -= n
    return path


# --------------------------------------------------------------------------------------------
# CPU accounting without psutil: /proc/<pid>/stat and /proc/stat.
# --------------------------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime + stime in ticks) for every process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                raw = f.read()
        except OSError:
            continue
        rest = raw[raw.rindex(")") + 2:].split()
        table[int(entry)] = (int(rest[1]), int(rest[11]) + int(rest[12]))
    return table


def tree_cpu(pid: int | None) -> float:
    """CPU seconds of ``pid`` and its live descendants (0 without a pid)."""
    if pid is None:
        return 0.0
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for p, (ppid, _ticks) in table.items():
        children.setdefault(ppid, []).append(p)
    ticks, todo = 0, [pid]
    while todo:
        p = todo.pop()
        if p in table:
            ticks += table[p][1]
        todo.extend(children.get(p, []))
    return ticks / CLK_TCK


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine, all cores summed (idle and iowait excluded)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


@dataclass
class Snap:
    t: float
    own: float
    emu: float
    busy: float


def snap(emu_pid: int | None) -> Snap:
    times = os.times()
    return Snap(time.perf_counter(), times.user + times.system, tree_cpu(emu_pid),
                machine_busy())


@dataclass
class Usage:
    wall: float
    own: float
    """CPU seconds of this process (the client side: vowvault or the SDK)."""
    emu: float
    """CPU seconds of the emulator process."""
    busy: float
    """Busy CPU seconds of the whole machine."""

    @classmethod
    def between(cls, a: Snap, b: Snap) -> Usage:
        return cls(b.t - a.t, b.own - a.own, b.emu - a.emu, b.busy - a.busy)

    def describe(self) -> str:
        w = max(self.wall, 1e-9)
        return (f"cpu: client {self.own:.1f} s ({self.own / w:.2f} cores), emulator "
                f"{self.emu:.1f} s ({self.emu / w:.2f} cores), machine {self.busy / w:.2f} "
                f"of {NCPU} cores busy (other processes {self.other / w:.2f})")

    @property
    def other(self) -> float:
        """CPU seconds of everything else on the machine (kernel threads included)."""
        return max(0.0, self.busy - self.own - self.emu)

    def limit(self, has_emulator: bool) -> str:
        """A guess at what bounds this side, from its CPU use (rules in the legend)."""
        w = max(self.wall, 1e-9)
        emu, own, busy = self.emu / w, self.own / w, self.busy / (NCPU * w)
        if has_emulator and emu >= 0.85:
            return f"emulator ({emu:.2f} cores)"
        if busy >= 0.9:
            shares = {"emulator": emu, "client": own, "other processes": self.other / w}
            return f"CPU ({busy:.0%} of {NCPU}, mostly {max(shares, key=shares.get)})"
        if own >= 0.85:
            return f"client ({own:.2f} cores)"
        return f"waits (machine {busy:.0%} busy)"


# --------------------------------------------------------------------------------------------
# Emulators: the contract suite's modules, GCS moved to a child process.
# --------------------------------------------------------------------------------------------

GCS_CHILD = textwrap.dedent("""\
    import pathlib, sys
    sys.path[:0] = {paths!r}
    import emu_gcs
    emu = emu_gcs.start(pathlib.Path(sys.argv[1]))
    print(emu.port, flush=True)
    try:
        sys.stdin.read()  # until the parent closes it (or dies)
    finally:
        emu.stop()
""")


class GCSChild:
    """``emu_gcs.start`` in a child interpreter: the emulator is pure Python, and in this
    process it would compete for the GIL with the client being measured and hide its CPU
    time in ours."""

    def __init__(self, workdir: Path) -> None:
        import emu_gcs

        self.log = open(workdir / "gcs.log", "wb")  # noqa: SIM115 - closed by stop()
        code = GCS_CHILD.format(paths=[str(ROOT / "src"), str(ROOT / "tests"),
                                       str(ROOT / "tests" / "contract")])
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, str(workdir)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.log, start_new_session=True)
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 60)
        line = self.process.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            self.stop()
            raise RuntimeError("the GCS emulator did not start; see "
                               + (workdir / "gcs.log").read_text(errors="replace")[-2000:])
        self.inner = emu_gcs.GCSEmulator("127.0.0.1", int(line), server=None)
        self.host, self.port, self.url = self.inner.host, self.inner.port, self.inner.url

    def env(self) -> dict[str, str]:
        return self.inner.env()

    def new_target(self) -> str:
        return self.inner.new_target()

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                assert self.process.stdin is not None
                self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()


@dataclass
class Backend:
    name: str
    tmp: Path
    emu: Any = None
    sdk: str = ""
    """What the SDK side does, in words."""

    @property
    def pid(self) -> int | None:
        return self.emu.process.pid if self.emu is not None else None

    def env(self) -> dict[str, str]:
        return self.emu.env() if self.emu is not None else {}

    def new_target(self) -> str:
        if self.emu is None:
            path = self.tmp / "local" / f"target-{uuid.uuid4().hex[:12]}"
            path.mkdir(parents=True)
            return f"file://{path}"
        return self.emu.new_target()

    def stop(self) -> None:
        if self.emu is not None:
            self.emu.stop()
            self.emu = None


def start_backend(name: str, tmp: Path) -> Backend:
    work = tmp / f"emu-{name}"
    work.mkdir()
    if name == "local":
        return Backend(name, tmp)
    if name == "gcs":
        return Backend(name, tmp, GCSChild(work))
    module = importlib.import_module(f"emu_{name}")
    return Backend(name, tmp, module.start(work))


# --------------------------------------------------------------------------------------------
# The three sides.
# --------------------------------------------------------------------------------------------


def split_target(url: str) -> tuple[str, str]:
    """(bucket or container, key prefix with a trailing / or empty)."""
    parts = urlsplit(url)
    prefix = parts.path.strip("/")
    return parts.netloc, f"{prefix}/" if prefix else ""


def empty_target(b: Backend, url: str) -> None:
    """Delete everything under a target (untimed), so the emulator does not fill up."""
    from cloudemu import environment

    from vowvault.storage import open_backend

    if b.emu is None:
        shutil.rmtree(urlsplit(url).path, ignore_errors=True)
        return
    with environment(b.env()):
        store = open_backend(url)
        try:
            store.delete([o.name for o in store.list("")])
        finally:
            store.close()


@dataclass
class Bench:
    args: argparse.Namespace
    tmp: Path
    source: Source
    settings: Any = None
    policies: int = 0

    def setup(self) -> None:
        from vowvault.settings import Settings

        home = self.tmp / "home"
        home.mkdir()
        self.settings = Settings(home=home, database_url=f"sqlite:///{home / 'catalog.db'}",
                                 actor="bench")

    def apply_policy(self, ctx: Any, target: str, source: Path) -> str:
        from vowvault.policies.apply import apply_policy_file
        from vowvault.policies.loader import parse_policy_text

        self.policies += 1
        name = f"bench-{self.policies}"
        text = textwrap.dedent(f"""\
            version: 1
            organizations:
              - {{slug: bench, name: bench, vendor_type: photographer}}
            policies:
              - name: {name}
                organization: bench
                source: {{kind: directory, path: "{source}"}}
                backup_type: full
                schedule: {{cron: "0 2 * * *", timezone: UTC}}
                peak_season: {{multiplier: 1}}
                storage:
                  - {{url: "{target}", tier: HOT, required: true}}
            """)
        apply_policy_file(ctx.catalog, parse_policy_text(text, "bench.yaml", {}),
                          actor="bench")
        return name


@dataclass
class VRun:
    usage: Usage
    pipeline: Usage
    """From the start to the verify stage (snapshot, compress, encrypt, upload)."""
    verify_usage: Usage
    source_bytes: int
    stored_bytes: int
    stages: dict[str, float]
    files: int | None

    @property
    def wall(self) -> float:
        return self.usage.wall

    @property
    def verify(self) -> float:
        return self.stages.get("verify", 0.0)


def vowvault_backup(bench: Bench, b: Backend, source: Path) -> VRun:
    """One full directory backup through the engine, in this process (``run_backup``, what
    ``vowvault backup run --direct`` runs), to a fresh target."""
    from cloudemu import environment

    from vowvault.engine import backup as engine
    from vowvault.engine.context import Context

    target = b.new_target()
    ctx = Context.from_settings(bench.settings)
    marks: dict[str, Snap] = {}
    original = engine.verify_stage

    def timed_verify(job_id: str) -> dict[str, Any]:
        marks["verify"] = snap(b.pid)
        try:
            return original(job_id)
        finally:
            marks["verified"] = snap(b.pid)

    try:
        name = bench.apply_policy(ctx, target, source)
        with environment(b.env()):
            engine.verify_stage = timed_verify  # run_backup looks it up at call time
            try:
                s0 = snap(b.pid)
                result = engine.run_backup(ctx, name)
                s1 = snap(b.pid)
            finally:
                engine.verify_stage = original
    finally:
        ctx.close()
    if result.status != "COMPLETED":
        raise RuntimeError(f"vowvault backup to {target} ended {result.status}: {result.error}")
    start_verify = marks.get("verify", s1)
    end_verify = marks.get("verified", s1)
    run = VRun(Usage.between(s0, s1), Usage.between(s0, start_verify),
               Usage.between(start_verify, end_verify), result.source_bytes,
               result.stored_bytes, dict(result.stage_seconds), result.files)
    empty_target(b, target)
    return run


def backend_save(b: Backend, path: Path) -> Usage:
    """vowvault's storage layer alone: ``open_backend(url).save`` of the file, in the
    1 MiB chunks the engine hands it (it re-cuts them into parts)."""
    from cloudemu import environment

    from vowvault.storage import open_backend

    target = b.new_target()
    with environment(b.env()):
        store = open_backend(target)
        try:
            with open(path, "rb") as f:
                s0 = snap(b.pid)
                store.save("backend-save", iter(lambda: f.read(MIB), b""))
                s1 = snap(b.pid)
        finally:
            store.close()
    empty_target(b, target)
    return Usage.between(s0, s1)


class SDK:
    """Each SDK's own best bulk upload of one file, client built outside the timing."""

    def __init__(self, b: Backend, args: argparse.Namespace) -> None:
        self.b, self.args = b, args
        self.gcs_transfer_manager = False
        self.last_download: Usage | None = None
        if b.name == "s3":
            b.sdk = (f"boto3 upload_fileobj, TransferConfig(multipart_chunksize=8 MiB, "
                     f"max_concurrency={args.s3_concurrency})")
        elif b.name == "gcs":
            self.gcs_transfer_manager = self._probe_transfer_manager()
            b.sdk = ("transfer_manager.upload_chunks_concurrently(chunk_size=8 MiB, "
                     "4 threads)" if self.gcs_transfer_manager else
                     "blob.upload_from_file, resumable, chunk_size=8 MiB "
                     "(transfer_manager.upload_chunks_concurrently: the emulator refuses "
                     "its XML multipart API)")
        elif b.name == "azure":
            b.sdk = (f"upload_blob(max_concurrency={args.azure_concurrency}), "
                     f"max_block_size=8 MiB")
        else:
            b.sdk = "shutil.copyfile + fsync of the file and its directory"

    def _gcs_client(self) -> Any:
        import emu_gcs
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(project=emu_gcs.PROJECT, credentials=AnonymousCredentials(),
                              client_options={"api_endpoint": self.b.emu.url})

    def _probe_transfer_manager(self) -> bool:
        from google.cloud.storage import transfer_manager

        target = self.b.new_target()
        bucket, prefix = split_target(target)
        probe = self.b.tmp / "gcs-probe"
        probe.write_bytes(os.urandom(MIB))
        client = self._gcs_client()
        try:
            transfer_manager.upload_chunks_concurrently(
                str(probe), client.bucket(bucket).blob(prefix + "probe"), chunk_size=PART,
                max_workers=4, worker_type=transfer_manager.THREAD)
            return True
        except Exception:
            return False
        finally:
            client.close()
            probe.unlink()
            empty_target(self.b, target)

    def upload(self, path: Path, size: int, *, download: bool = False) -> Usage:
        """The SDK's bulk upload of ``path``; with ``download``, then its plain download of
        the same object (into /dev/null), kept in ``last_download``."""
        b = self.b
        target = b.new_target()
        bucket, prefix = split_target(target)
        key = prefix + "sdk-bulk"
        try:
            if b.name == "s3":
                up = self._s3(path, bucket, key)
            elif b.name == "gcs":
                up = self._gcs(path, size, bucket, key)
            elif b.name == "azure":
                up = self._azure(path, size, bucket, key)
            else:
                up = self._local(path, urlsplit(target).path)
            if download:
                self.last_download = self._download(bucket, key, urlsplit(target).path)
            return up
        finally:
            empty_target(b, target)

    def _download(self, bucket: str, key: str, directory: str) -> Usage:
        """The SDK's plain download of one object: boto3 download_fileobj (the upload's
        TransferConfig), GCS blob.download_to_file, Azure download_blob(max_concurrency)."""
        with open(os.devnull, "wb") as sink:
            if self.b.name == "s3":
                import boto3
                import emu_s3
                from boto3.s3.transfer import TransferConfig
                from botocore.config import Config

                n = self.args.s3_concurrency
                client = boto3.session.Session(
                    aws_access_key_id=emu_s3.ACCESS_KEY,
                    aws_secret_access_key=emu_s3.SECRET_KEY,
                    region_name=emu_s3.REGION).client(
                    "s3", endpoint_url=self.b.emu.url,
                    config=Config(s3={"addressing_style": "path"},
                                  max_pool_connections=max(10, n)))
                try:
                    s0 = snap(self.b.pid)
                    client.download_fileobj(bucket, key, sink, Config=TransferConfig(
                        multipart_threshold=PART, multipart_chunksize=PART,
                        max_concurrency=n))
                    s1 = snap(self.b.pid)
                finally:
                    client.close()
            elif self.b.name == "gcs":
                client = self._gcs_client()
                try:
                    s0 = snap(self.b.pid)
                    client.bucket(bucket).blob(key).download_to_file(sink)
                    s1 = snap(self.b.pid)
                finally:
                    client.close()
            elif self.b.name == "azure":
                from azure.storage.blob import BlobClient

                conn = self.b.env()["AZURE_STORAGE_CONNECTION_STRING"]
                with BlobClient.from_connection_string(conn, bucket, key) as client:
                    s0 = snap(self.b.pid)
                    client.download_blob(max_concurrency=self.args.azure_concurrency
                                         ).readinto(sink)
                    s1 = snap(self.b.pid)
            else:
                s0 = snap(None)
                with open(Path(directory) / "sdk-bulk", "rb") as f:
                    shutil.copyfileobj(f, sink, PART)
                s1 = snap(None)
        return Usage.between(s0, s1)

    def _s3(self, path: Path, bucket: str, key: str) -> Usage:
        import boto3
        import emu_s3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        concurrency = self.args.s3_concurrency
        client = boto3.session.Session(
            aws_access_key_id=emu_s3.ACCESS_KEY, aws_secret_access_key=emu_s3.SECRET_KEY,
            region_name=emu_s3.REGION).client(
            "s3", endpoint_url=self.b.emu.url,
            config=Config(s3={"addressing_style": "path"},
                          max_pool_connections=max(10, concurrency)))
        config = TransferConfig(multipart_threshold=PART, multipart_chunksize=PART,
                                max_concurrency=concurrency)
        try:
            with open(path, "rb") as f:
                s0 = snap(self.b.pid)
                client.upload_fileobj(f, bucket, key, Config=config)
                s1 = snap(self.b.pid)
        finally:
            client.close()
        return Usage.between(s0, s1)

    def _gcs(self, path: Path, size: int, bucket: str, key: str) -> Usage:
        client = self._gcs_client()
        try:
            blob = client.bucket(bucket).blob(key, chunk_size=PART)
            if self.gcs_transfer_manager:
                from google.cloud.storage import transfer_manager

                s0 = snap(self.b.pid)
                transfer_manager.upload_chunks_concurrently(
                    str(path), blob, chunk_size=PART, max_workers=4,
                    worker_type=transfer_manager.THREAD)
                s1 = snap(self.b.pid)
            else:
                with open(path, "rb") as f:
                    s0 = snap(self.b.pid)
                    blob.upload_from_file(f, size=size)
                    s1 = snap(self.b.pid)
        finally:
            client.close()
        return Usage.between(s0, s1)

    def _azure(self, path: Path, size: int, container: str, key: str) -> Usage:
        from azure.storage.blob import BlobClient

        conn = self.b.env()["AZURE_STORAGE_CONNECTION_STRING"]
        with BlobClient.from_connection_string(conn, container, key,
                                               max_block_size=PART) as client, \
                open(path, "rb") as f:
            s0 = snap(self.b.pid)
            client.upload_blob(f, length=size, overwrite=True,
                               max_concurrency=self.args.azure_concurrency)
            s1 = snap(self.b.pid)
        return Usage.between(s0, s1)

    def _local(self, path: Path, directory: str) -> Usage:
        dst = Path(directory) / "sdk-bulk"
        s0 = snap(None)
        shutil.copyfile(path, dst)
        fd = os.open(dst, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        s1 = snap(None)
        return Usage.between(s0, s1)


# --------------------------------------------------------------------------------------------
# Reporting.
# --------------------------------------------------------------------------------------------


@dataclass
class Results:
    backend: Backend
    fixed: float = 0.0
    vv: list[VRun] = field(default_factory=list)
    save: list[Usage] = field(default_factory=list)
    sdk: list[Usage] = field(default_factory=list)
    sdk_source: list[Usage] = field(default_factory=list)
    sdk_download: list[Usage] = field(default_factory=list)


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: list[float]) -> str:
    return f"{min(values):.1f}-{max(values):.1f}" if len(values) > 1 else "1 run"


def median_usage(usages: list[Usage]) -> Usage:
    return Usage(med([u.wall for u in usages]), med([u.own for u in usages]),
                 med([u.emu for u in usages]), med([u.busy for u in usages]))


def rate(nbytes: int, seconds: float) -> str:
    return f"{nbytes / MIB / seconds:6.1f} MiB/s" if seconds > 0 else "   n/a"


def report(all_results: list[Results], source: Source, stored: int, args: argparse.Namespace
           ) -> None:
    print()
    print(f"source {source.size / MIB:.0f} MiB in {source.files} files; vowvault stores "
          f"{stored / MIB:.1f} MiB ({source.size / stored:.2f}x); SDK bulk uploads "
          f"{stored / MIB:.1f} MiB of random bytes (the same number of bytes); "
          f"{args.runs} runs each, medians")
    print()
    local = next((r for r in all_results if r.backend.name == "local"), None)
    floor = med([x.wall - x.verify for x in local.vv]) if local else None
    print(f"{'backend':<8} {'vowvault':>9} {'(no verify)':>12} {'SDK bulk':>9} "
          f"{'ratio (no verify)':>18} {'backend save':>13} {'save/SDK':>9} "
          f"{'over local':>11}  min-max: vowvault / SDK")
    for r in all_results:
        vw = med([x.wall for x in r.vv])
        vnv = med([x.wall - x.verify for x in r.vv])
        sdk = med([u.wall for u in r.sdk])
        save = med([u.wall for u in r.save])
        over = f"{vnv - floor:+9.1f} s" if floor is not None else "        n/a"
        print(f"{r.backend.name:<8} {vw:>7.1f} s {vnv:>10.1f} s {sdk:>7.1f} s "
              f"{vw / sdk:>10.2f} ({vnv / sdk:.2f}) {save:>11.1f} s {save / sdk:>9.2f} "
              f"{over}  {spread([x.wall for x in r.vv])} / {spread([u.wall for u in r.sdk])}")
    print("ratio = vowvault wall time / SDK wall time for the same stored bytes (in brackets: "
          "vowvault without its verify stage); backend save = vowvault's storage backend "
          "alone storing the SDK's file; over local = vowvault without verify minus the same "
          "on the local disk (what the target adds to the engine's own CPU-bound pipeline)")
    print()
    print(f"{'backend':<8} {'vowvault verify':>16} {'SDK download':>13} {'ratio':>6}  (verify "
          f"reads back every stored byte of the backup and authenticates it; the SDK downloads "
          f"the same number of bytes; target <= {TARGET_VERIFY_DOWNLOAD}x)")
    for r in all_results:
        ver = med([x.verify for x in r.vv])
        down = med([u.wall for u in r.sdk_download])
        ratio = ver / down if down else float("nan")
        print(f"{r.backend.name:<8} {ver:>14.1f} s {down:>11.1f} s {ratio:>6.2f}  "
              f"{'met' if ratio <= TARGET_VERIFY_DOWNLOAD else 'NOT met'}")
    print()
    print("throughput (medians): vowvault in MiB/s of source, with and without verify; "
          "vowvault's upload and the SDK in MiB/s of stored bytes over the wire")
    print(f"{'backend':<8} {'vowvault':>13} {'no verify':>13} {'verify':>7} {'vv wire':>13} "
          f"{'backend save':>13} {'SDK bulk':>13} {'SDK source size':>16}  fixed")
    for r in all_results:
        vw = med([x.wall for x in r.vv])
        vnv = med([x.wall - x.verify for x in r.vv])
        ver = med([x.verify for x in r.vv])
        src = r.sdk_source and rate(source.size, med([u.wall for u in r.sdk_source]))
        print(f"{r.backend.name:<8} {rate(source.size, vw):>13} {rate(source.size, vnv):>13} "
              f"{ver:>5.1f} s {rate(stored, vnv):>13} "
              f"{rate(stored, med([u.wall for u in r.save])):>13} "
              f"{rate(stored, med([u.wall for u in r.sdk])):>13} {src or 'not run':>16}"
              f"  {r.fixed:.2f} s")
    print()
    print("where the CPU goes (medians; cores = CPU seconds / wall seconds; other = the rest "
          f"of the machine: other processes, kernel threads; machine = all {NCPU} cores)")
    print(f"{'backend':<8} {'side':<18} {'wall':>6} {'client':>7} {'emulator':>9} "
          f"{'other':>6} {'machine':>8}  likely limit")
    for r in all_results:
        has_emu = r.backend.name != "local"
        sides = [("vowvault upload", median_usage([x.pipeline for x in r.vv])),
                 ("vowvault verify", median_usage([x.verify_usage for x in r.vv])),
                 ("backend save", median_usage(r.save)),
                 ("SDK bulk", median_usage(r.sdk)),
                 ("SDK download", median_usage(r.sdk_download))]
        if r.sdk_source:
            sides.append(("SDK source size", median_usage(r.sdk_source)))
        for label, u in sides:
            w = max(u.wall, 1e-9)
            print(f"{r.backend.name:<8} {label:<18} {u.wall:>5.1f}s {u.own / w:>7.2f} "
                  f"{(u.emu / w if has_emu else 0):>9.2f} {u.other / w:>6.2f} {u.busy / w:>8.2f}  "
                  f"{u.limit(has_emu)}")
    print("likely limit: 'emulator' when the emulator process used >= 0.85 cores on "
          "average (moto and gcp-storage-emulator are single Python processes, Azurite one "
          "Node event loop: about one core at most); else 'CPU' when the machine was >= 90% "
          "busy (naming the biggest user); else 'client' when this process used >= 0.85 "
          "cores; else 'waits'.")
    print()
    for r in all_results:
        print(f"{r.backend.name:<8} SDK side: {r.backend.sdk}")


def print_vv(b: Backend, i: int, runs: int, v: VRun) -> None:
    st = v.stages
    print(f"{b.name:<6} run {i + 1}/{runs} vowvault {v.wall:6.1f} s (verify {v.verify:.1f} s, "
          f"without {v.wall - v.verify:.1f} s)  {v.source_bytes / MIB:.0f} -> "
          f"{v.stored_bytes / MIB:.1f} MiB  {rate(v.source_bytes, v.wall).strip()} "
          f"({rate(v.source_bytes, v.wall - v.verify).strip()} without verify)  stages "
          + " ".join(f"{k} {st[k]:.1f}" for k in ("snapshot", "compress", "encrypt", "upload",
                                                  "verify", "record") if k in st))
    print(f"{'':<6}   upload phase {v.pipeline.describe()}")
    print(f"{'':<6}   verify phase {v.verify_usage.describe()}")


def print_side(b: Backend, i: int, runs: int, label: str, u: Usage, nbytes: int) -> None:
    print(f"{b.name:<6} run {i + 1}/{runs} {label:<8} {u.wall:6.1f} s  {nbytes / MIB:.1f} MiB "
          f"{rate(nbytes, u.wall).strip()}  {u.describe()}")


# --------------------------------------------------------------------------------------------


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({NCPU} CPUs)"


_STATE = {"interrupted": False, "cleaning": False}


def _interrupt(signum: int, frame: Any) -> None:
    """Ctrl-C / SIGTERM: stop and clean up; once the clean-up runs, wait for it."""
    _STATE["interrupted"] = True
    if _STATE["cleaning"]:
        print("\nstill cleaning up (emulators, temporary files)...", file=sys.stderr)
        return
    raise KeyboardInterrupt


def checkpoint() -> None:
    """Raise an interrupt that arrived where Python could not raise it (a callback)."""
    if _STATE["interrupted"]:
        raise KeyboardInterrupt


def run_backend(bench: Bench, name: str, stored_file: Path, stored: int,
                source_file: Path | None, tiny: Path) -> Results:
    t0 = time.perf_counter()
    b = start_backend(name, bench.tmp)
    try:
        print(f"\n{name}: emulator "
              + (f"pid {b.pid} at {b.emu.url}" if b.emu is not None else "none (local disk)")
              + f", started in {time.perf_counter() - t0:.1f} s")
        sdk = SDK(b, bench.args)
        res = Results(b)
        # Untimed warm-up of both sides (imports, first connections), and the engine's
        # fixed cost: a backup of one 1 KiB file.
        res.fixed = vowvault_backup(bench, b, tiny).wall
        sdk.upload(tiny / "one.txt", (tiny / "one.txt").stat().st_size)
        print(f"{name:<6} fixed overhead: a backup of one 1 KiB file takes {res.fixed:.2f} s "
              f"(catalog, key, 3 small objects, verify)")
        runs = bench.args.runs
        for i in range(runs):
            checkpoint()
            v = vowvault_backup(bench, b, bench.source.path)
            res.vv.append(v)
            print_vv(b, i, runs, v)
            checkpoint()
            u = backend_save(b, stored_file)
            res.save.append(u)
            print_side(b, i, runs, "backend", u, stored)
            checkpoint()
            u = sdk.upload(stored_file, stored, download=True)
            res.sdk.append(u)
            print_side(b, i, runs, "SDK", u, stored)
            res.sdk_download.append(sdk.last_download)
            print_side(b, i, runs, "SDK get", sdk.last_download, stored)
            checkpoint()
            if source_file is not None:
                u = sdk.upload(source_file, bench.source.size)
                res.sdk_source.append(u)
                print_side(b, i, runs, "SDK src", u, bench.source.size)
        checkpoint()
        return res
    finally:
        _STATE["cleaning"] = _STATE["interrupted"]
        b.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mib", type=int, default=512, help="source size in MiB (default 512)")
    p.add_argument("--runs", type=int, default=3, help="runs of each side (default 3)")
    p.add_argument("--backends", default=",".join(BACKENDS),
                   help="comma-separated, of s3,gcs,azure,local (default all)")
    p.add_argument("--s3-concurrency", type=int, default=10,
                   help="boto3 TransferConfig max_concurrency (default 10)")
    p.add_argument("--azure-concurrency", type=int, default=4,
                   help="upload_blob max_concurrency (default 4)")
    p.add_argument("--no-source-size-sdk", dest="source_size_sdk", action="store_false",
                   help="skip the SDK upload of a file of the source's size")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.backends.split(",") if n.strip()]
    unknown = sorted(set(names) - set(BACKENDS))
    if unknown or not names:
        p.error(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    if args.runs < 1 or args.mib < 1:
        p.error("--runs and --mib must be >= 1")

    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)  # a kill cleans up like Ctrl-C
    print(f"start: {load()}")
    tmp = Path(tempfile.mkdtemp(prefix="vv-storage-bench-"))
    try:
        import logging

        logging.getLogger("vowvault").setLevel(logging.WARNING)
        src = tmp / "source"
        src.mkdir()
        source = build_source(src, args.mib)
        tiny = tmp / "tiny"
        tiny.mkdir()
        (tiny / "one.txt").write_bytes(note_text(random.Random(1), 1024))
        bench = Bench(args, tmp, source)
        bench.setup()
        print("vowvault side: run_backup() in this process (the engine that `vowvault backup "
              "run --direct` runs, without the CLI's interpreter start-up), fresh target per "
              "run; SDK clients are built outside the timing, vowvault's inside it")
        local = Backend("local", tmp)
        warm = vowvault_backup(bench, local, source.path)
        stored = warm.stored_bytes
        print(f"warm-up (local target, untimed): {warm.wall:.1f} s; {warm.source_bytes / MIB:.1f}"
              f" MiB -> {stored / MIB:.1f} MiB stored, {warm.source_bytes / stored:.2f}x")
        stored_file = random_file(tmp / "bulk-stored.bin", stored, 1)
        source_file = (random_file(tmp / "bulk-source.bin", source.size, 2)
                       if args.source_size_sdk else None)
        print(f"SDK input: {stored_file.name}, {stored:,} random bytes = what vowvault stored"
              + (f"; {source_file.name}, {source.size:,} bytes = the source's size"
                 if source_file else " (--no-source-size-sdk: not the source's size)"))
        results = [run_backend(bench, name, stored_file, stored, source_file, tiny)
                   for name in names]
        for r in results:
            if any(v.stored_bytes != stored for v in r.vv):
                print(f"note: {r.backend.name} stored "
                      + ", ".join(f"{v.stored_bytes:,}" for v in r.vv)
                      + f" bytes; the SDK file has {stored:,}")
        report(results, source, stored, args)
        print(f"\nend: {load()}")
        return 0
    except Exception:
        if not _STATE["interrupted"]:
            raise
        # The engine turns an interrupt inside a backup into a failed job and its error.
        print("\ninterrupted: cleaning up", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        return 130
    finally:
        _STATE["cleaning"] = True
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
