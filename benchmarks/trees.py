"""File-tree backups against restic and the tar pipeline (issue 20).

    .venv/bin/python benchmarks/trees.py [--mib 1024] [--runs 3] [--photo-share 0.7]
        [--change 0.02] [--keep]

Builds (once, in a temporary directory) ``--mib`` MiB of wedding folders in two season
folders of about half the tree each: photos (incompressible, 1.5-6 MiB, ``--photo-share`` of
the bytes) beside guest lists, event logs and notes of 4-120 KiB (about 5,000 files per GiB).
Then alternates ``--runs`` rounds, each on a fresh vowvault home and a fresh restic
repository (version 2, compression auto), the order of the two tools swapped every round:

1. full backup: ``vowvault backup run --direct`` (an incremental policy: its first backup is
   full; verification included), ``restic backup``, and
   ``tar -c | zstd -3 -T2 | openssl enc -aes-256-ctr > file``;
2. no change: the same two commands again on the unchanged tree (time, bytes added);
3. ``--change`` of the files rewritten in place (new bytes, same kind and size), then both;
4. one season folder renamed (about half the tree), then both: time and bytes added;
5. restore of the newest backup: ``vowvault backup restore ID --to-dir`` and
   ``restic restore latest --target`` (each into a new directory, all removed at the end).

With ``--index-files 100000`` it measures what each run adds for a tree of that many small
files (full, unchanged, 1 % changed). With ``--sizes 256,512,1024,2048`` it measures how
cost grows: a full backup of a tree of each size by both tools, with the per-GiB slope and
peak RSS (memory flat in size).

Prints medians, the ratios against the targets of issue 20 (full <= 0.6x restic and <= 1.2x
the tar pipeline, incremental and no-change <= 0.8x restic, restore <= 0.7x restic), bytes
added per run, peak RSS and CPU of each side, the busy CPU of the rest of the machine while
each ran, and vowvault's stage seconds. restic (0.14) comes from the Debian registry when
missing. About 3 minutes and 8 GB of temporary disk for 1 GiB and 3 runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backup_pg import Measured, measured
from benchproc import (
    install_references,
    kill_current,
    least_squares,
    load,
    start_warm,
    stop_warm,
)
from storage_throughput import GENERATORS, photo_jobs, write_file

ROOT = Path(__file__).resolve().parent.parent
VOWVAULT = str(ROOT / ".venv" / "bin" / "vowvault")
MIB = 1 << 20
POLICY = "bench-tree"
RESTIC_PASSWORD = "bench"  # noqa: S105 - a fixed benchmark passphrase
OPENSSL_PASS = "pass:bench"  # noqa: S105 - a fixed benchmark passphrase
TARGETS = {"full vs restic": 0.6, "full vs tar pipeline": 1.2, "incremental vs restic": 0.8,
           "no change vs restic": 0.8, "restore vs restic": 0.7}
SEASONS = ("2027-spring", "2027-summer")

POLICY_FILE = """\
version: 1
organizations:
  - {{slug: bench, name: Benchmark, vendor_type: photographer}}
policies:
  - name: {policy}
    organization: bench
    description: benchmarks/trees.py
    source: {{kind: directory, path: "{source}"}}
    backup_type: incremental
    schedule: {{cron: "0 3 * * *", timezone: UTC}}
    peak_season: {{multiplier: 1}}
    retention: {{days: 7}}
    storage:
      - {{url: "file://{store}", tier: HOT}}
"""


def build_tree(root: Path, mib: int, photo_share: float, seed: int = 20_270_612) -> list[
        tuple[str, str, int]]:
    """The tree; (path, kind, size) of every text file (what a change rewrites)."""
    rng = random.Random(seed)
    total = mib * MIB
    weddings = max(2, mib // 16)
    per = total // weddings
    jobs: list[tuple[str, str, int, int]] = []
    for w in range(weddings):
        base = root / SEASONS[w * 2 // weddings] / f"wedding-{w:03d}"
        (base / "photos").mkdir(parents=True)
        (base / "notes").mkdir()
        jobs += photo_jobs(base / "photos", w, int(per * photo_share), rng)
        text = per - int(per * photo_share)
        k = 0
        while text > 0:
            size = min(text, rng.randrange(4096, 120 * 1024))
            kind = rng.choices(("csv", "json", "note"), (0.5, 0.44, 0.06))[0]
            sub = "notes" if kind == "note" else ""
            name = f"{kind}-{k:04d}.{'txt' if kind == 'note' else kind}"
            jobs.append((str(base / sub / name), kind, size, rng.getrandbits(32)))
            text -= size
            k += 1
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        size = sum(pool.map(write_file, jobs, chunksize=16))
    print(f"source: {len(jobs)} files, {size / MIB:.0f} MiB in {weddings} wedding folders "
          f"under {len(SEASONS)} season folders (photos {photo_share:.0%} of the bytes)",
          flush=True)
    return [(p, kind, s) for p, kind, s, _ in jobs if kind != "photo"]


def change(texts: list[tuple[str, str, int]], share: float, rng: random.Random,
           source: Path) -> int:
    """Rewrite ``share`` of the tree's files in place (text files: new bytes, same size);
    the bytes rewritten."""
    count = max(1, round(share * sum(1 for p in source.rglob("*") if p.is_file())))
    done = 0
    for path, kind, size in rng.sample(texts, min(count, len(texts))):
        live = _live(path, source)
        with open(live, "r+b") as f:
            f.write(GENERATORS[kind](rng, size))
        done += size
    return done


def _live(path: str, source: Path) -> Path:
    """Where a file of the built tree is now (its season folder may be renamed)."""
    p = Path(path)
    if p.exists():
        return p
    rel = p.relative_to(source)
    renamed = source / f"{rel.parts[0]}.renamed" / Path(*rel.parts[1:])
    return renamed if renamed.exists() else p


def size(n: float) -> str:
    return f"{n / MIB:.1f} MiB" if n >= MIB else f"{n / 1024:.1f} KiB"


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@dataclass
class Side:
    m: Measured
    added: int = 0
    stages: dict[str, float] | None = None

    def line(self) -> str:
        extra = (" stages " + " ".join(f"{k} {v:.1f}" for k, v in self.stages.items())
                 if self.stages else "")
        return (f"{self.m.wall:6.2f} s  cpu {self.m.cpu:5.1f} s  rss "
                f"{max(self.m.maxrss_kib, self.m.own_kib) / 1024:4.0f} MiB  added "
                f"{size(self.added):>10}  outside {self.m.outside:.1f} s{extra}")


WARM = False
"""--warm: each round's vowvault commands fork from a `vowvault warm` process."""


class Round:
    def __init__(self, tmp: Path, n: int, source: Path) -> None:
        self.dir = tmp / f"round-{n}"
        self.dir.mkdir()
        self.n = n
        self.restored = tmp / "restored"
        self.source = source
        self.home, self.store = self.dir / "vv-home", self.dir / "vv-store"
        self.repo = self.dir / "restic"
        self.env = dict(os.environ, VOWVAULT_HOME=str(self.home), VOWVAULT_ACTOR="benchmark",
                        RESTIC_PASSWORD=RESTIC_PASSWORD,
                        RESTIC_CACHE_DIR=str(self.dir / "restic-cache"))
        self.env.pop("VOWVAULT_DATABASE_URL", None)
        policy = self.dir / "policies.yaml"
        policy.write_text(POLICY_FILE.format(policy=POLICY, source=source, store=self.store))
        subprocess.run([VOWVAULT, "policies", "apply", str(policy)], env=self.env, check=True,
                       capture_output=True)
        subprocess.run(["restic", "init", "-q", "--repository-version", "2", "-r",
                        str(self.repo)], env=self.env, check=True, capture_output=True)
        self.last_job = ""
        if WARM:  # this round's vowvault commands fork from its own warm process
            start_warm(VOWVAULT, self.env)

    def done(self) -> None:
        if WARM:
            stop_warm(VOWVAULT, self.env)
        shutil.rmtree(self.dir, ignore_errors=True)

    def vowvault(self) -> Side:
        before = tree_bytes(self.store) if self.store.exists() else 0
        m = measured([VOWVAULT, "backup", "run", POLICY, "--direct"], env=self.env)
        found = re.search(r"backup ([0-9a-f-]{36}) of", " ".join(m.stdout.split()))
        if not found:
            raise RuntimeError(f"cannot find the backup id in: {m.stdout}")
        self.last_job = found.group(1)
        show = subprocess.run([VOWVAULT, "backup", "show", self.last_job, "--json"],
                              env=self.env, check=True, capture_output=True, text=True)
        job = json.loads(show.stdout)
        job = job.get("backup", job)
        stages = {k: float(v) for k, v in (job.get("stage_durations") or job.get("stages")
                                            or {}).items()}
        return Side(m, tree_bytes(self.store) - before, stages)

    def restic(self) -> Side:
        before = tree_bytes(self.repo)
        m = measured(["restic", "-q", "-r", str(self.repo), "backup", str(self.source)],
                     env=self.env)
        return Side(m, tree_bytes(self.repo) - before)

    def tar(self) -> Side:
        out = self.dir / "tree.tar.zst.enc"
        m = measured(["bash", "-c", f"set -euo pipefail; tar -cf - -C {self.source} . | "
                      f"zstd -3 -T2 -q | openssl enc -aes-256-ctr -pbkdf2 -pass "
                      f"{OPENSSL_PASS} > {out}"], env=self.env)
        added = out.stat().st_size
        out.unlink()
        return Side(m, added)

    # Restored trees are removed only at the end of the benchmark: on ext4 without a
    # journal (these machines) creating files soon after thousands were deleted costs the
    # kernel a scan past every recently deleted inode, whichever tool creates them.

    def restore_vowvault(self) -> Side:
        target = self.restored / f"vowvault-{self.n}"
        m = measured([VOWVAULT, "backup", "restore", self.last_job, "--to-dir", str(target)],
                     env=self.env)
        return Side(m)

    def restore_restic(self) -> Side:
        target = self.restored / f"restic-{self.n}"
        m = measured(["restic", "-q", "-r", str(self.repo), "restore", "latest", "--target",
                      str(target)], env=self.env)
        return Side(m)


STEPS = ("full", "no change", "incremental", "rename", "restore")


def one_round(tmp: Path, n: int, source: Path, texts: list[tuple[str, str, int]],
              share: float, results: dict[str, dict[str, list[Side]]]) -> None:
    r = Round(tmp, n, source)
    order = ("vowvault", "restic") if n % 2 == 0 else ("restic", "vowvault")
    rng = random.Random(n)

    def both(step: str, restore: bool = False) -> None:
        for tool in order:
            if restore:
                side = r.restore_vowvault() if tool == "vowvault" else r.restore_restic()
            else:
                side = r.vowvault() if tool == "vowvault" else r.restic()
            results[step].setdefault(tool, []).append(side)
            print(f"  round {n + 1} {step:<12} {tool:<9} {side.line()}", flush=True)

    both("full")
    side = r.tar()
    results["full"].setdefault("tar pipeline", []).append(side)
    print(f"  round {n + 1} {'full':<12} {'tar':<9} {side.line()}", flush=True)
    both("no change")
    changed = change(texts, share, rng, source)
    print(f"  round {n + 1} changed {changed / MIB:.1f} MiB in place", flush=True)
    both("incremental")
    season = source / SEASONS[1]
    moved = tree_bytes(season)
    season.rename(source / f"{SEASONS[1]}.renamed")
    print(f"  round {n + 1} renamed {SEASONS[1]} ({moved / MIB:.0f} MiB)", flush=True)
    try:
        both("rename")
        both("restore", restore=True)
    finally:
        (source / f"{SEASONS[1]}.renamed").rename(season)
    r.done()


def med(sides: list[Side], what: str = "wall") -> float:
    if what == "added":
        return statistics.median(s.added for s in sides)
    if what == "cpu":
        return statistics.median(s.m.cpu for s in sides)
    if what == "rss":
        return statistics.median(max(s.m.maxrss_kib, s.m.own_kib) / 1024 for s in sides)
    return statistics.median(s.m.wall for s in sides)


def report(results: dict[str, dict[str, list[Side]]], runs: int) -> bool:
    print(f"\nmedians of {runs} rounds          vowvault    restic   ratio  (cpu s vv/restic; "
          f"rss MiB vv/restic; bytes added vv/restic)")
    ratios: dict[str, float] = {}
    for step in STEPS:
        vv, rs = results[step]["vowvault"], results[step]["restic"]
        ratio = med(vv) / med(rs)
        ratios[f"{step} vs restic"] = ratio
        print(f"{step:<28} {med(vv):8.2f} {med(rs):9.2f} {ratio:7.2f}  ({med(vv, 'cpu'):.1f}/"
              f"{med(rs, 'cpu'):.1f}; {med(vv, 'rss'):.0f}/{med(rs, 'rss'):.0f}; "
              f"{size(med(vv, 'added'))}/{size(med(rs, 'added'))})")
    tar = results["full"]["tar pipeline"]
    ratios["full vs tar pipeline"] = med(results["full"]["vowvault"]) / med(tar)
    print(f"{'full vs tar pipeline':<28} {med(results['full']['vowvault']):8.2f} "
          f"{med(tar):9.2f} {ratios['full vs tar pipeline']:7.2f}  (tar | zstd -3 -T2 | "
          f"openssl enc; cpu {med(tar, 'cpu'):.1f} s, {med(tar, 'added') / MIB:.0f} MiB)")
    vv_stages = [s.stages or {} for s in results["full"]["vowvault"]]
    if vv_stages and vv_stages[0]:
        keys = list(vv_stages[0])
        print("vowvault full, stages (s):   " + " ".join(
            f"{k} {statistics.median(st.get(k, 0.0) for st in vv_stages):.1f}" for k in keys))
    ok = True
    verdicts = []
    for name, target in TARGETS.items():
        met = ratios[name] <= target
        ok &= met
        verdicts.append(f"{name} <= {target}x: {'met' if met else 'NOT met'} "
                        f"({ratios[name]:.2f})")
    print("targets  " + "; ".join(verdicts))
    return ok


def _interrupt(signum: int, frame: Any) -> None:
    kill_current()
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mib", type=int, default=1024, help="tree size (default 1024)")
    p.add_argument("--runs", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--photo-share", type=float, default=0.7,
                   help="share of the bytes in incompressible photos (default 0.7)")
    p.add_argument("--change", type=float, default=0.02,
                   help="share of the files rewritten before the incremental (default 0.02)")
    p.add_argument("--sizes", metavar="MIB,MIB,...",
                   help="instead of the rounds: how cost grows, a full backup (vowvault "
                        "and restic) of a tree of each size, with the per-GiB slope")
    p.add_argument("--index-files", type=int, metavar="N",
                   help="instead of the rounds: what each run adds for a tree of N small "
                        "files (full, no change, 1%% of the files changed), both tools")
    p.add_argument("--warm", action="store_true",
                   help="vowvault's commands forked from `vowvault warm` (one per round), "
                        "not cold")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = p.parse_args(argv)
    global WARM
    WARM = args.warm
    signal.signal(signal.SIGTERM, _interrupt)
    install_references({"restic": "restic", "zstd": "zstd", "openssl": "openssl"})
    for tool in ("restic", "zstd", "openssl", "tar"):
        if shutil.which(tool) is None:
            print(f"trees.py: {tool} is missing (apt-get install {tool})", file=sys.stderr)
            return 2
    tmp = Path(tempfile.mkdtemp(prefix="vv-trees-"))
    print(f"{load()}; restic {_version(['restic', 'version'])}; temporary {tmp}; vowvault "
          f"{'forked from vowvault warm' if WARM else 'cold'}", flush=True)
    try:
        if args.sizes:
            return growth(tmp, [int(x) for x in args.sizes.split(",")], args)
        if args.index_files:
            return index_growth(tmp, args.index_files)
        source = tmp / "source"
        texts = build_tree(source, args.mib, args.photo_share)
        results: dict[str, dict[str, list[Side]]] = {s: {} for s in STEPS}
        t0 = time.perf_counter()
        for n in range(args.runs):
            one_round(tmp, n, source, texts, args.change, results)
        ok = report(results, args.runs)
        print(f"end: {load()}; {time.perf_counter() - t0:.0f} s of rounds")
        return 0 if ok else 1
    except KeyboardInterrupt:
        kill_current()
        return 130
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def growth(tmp: Path, sizes: list[int], args: argparse.Namespace) -> int:
    """Full backups of trees of each size (the same generator): time, CPU and peak RSS of
    both tools, ``--runs`` each, and the least-squares slope in seconds per GiB."""
    rows: list[tuple[int, float, float, float, float]] = []
    for mib in sizes:
        source = tmp / f"source-{mib}"
        build_tree(source, mib, args.photo_share)
        vv: list[Side] = []
        rs: list[Side] = []
        for n in range(args.runs):
            r = Round(tmp, n + 1000 * mib, source)
            for tool in (("vowvault", "restic") if n % 2 == 0 else ("restic", "vowvault")):
                (vv if tool == "vowvault" else rs).append(r.vowvault() if tool == "vowvault"
                                                          else r.restic())
            r.done()
        rows.append((mib, med(vv), med(rs), med(vv, "rss"), med(rs, "rss")))
        print(f"  {mib:6d} MiB  vowvault {med(vv):6.2f} s (cpu {med(vv, 'cpu'):.1f} s, rss "
              f"{med(vv, 'rss'):.0f} MiB)  restic {med(rs):6.2f} s (cpu {med(rs, 'cpu'):.1f} s, "
              f"rss {med(rs, 'rss'):.0f} MiB)", flush=True)
        shutil.rmtree(source, ignore_errors=True)

    print(f"\nfull backup of a tree, medians of {args.runs} (photos {args.photo_share:.0%})")
    print("  size MiB   vowvault s   restic s   ratio   vv rss MiB   restic rss MiB")
    for mib, v, r_, vr, rr in rows:
        print(f"  {mib:8d} {v:12.2f} {r_:10.2f} {v / r_:7.2f} {vr:12.0f} {rr:16.0f}")
    for name, col in (("vowvault", 1), ("restic", 2)):
        b, a = least_squares([r[0] / 1024 for r in rows], [row[col] for row in rows])
        print(f"  {name:<9} {b:.2f} s per GiB + {a:.2f} s fixed "
              f"({1024 / b if b else 0:.0f} MiB/s marginal)")
    rss = [row[3] for row in rows]
    print(f"  vowvault peak RSS {min(rss):.0f}-{max(rss):.0f} MiB over "
          f"{sizes[0]}-{sizes[-1]} MiB of tree")
    return 0


def index_growth(tmp: Path, files: int) -> int:
    """A tree of ``files`` small files in folders of 100: the bytes each run adds to each
    repository, and its time: full, unchanged (twice), then 1 % of the files rewritten
    (spread over the tree), then unchanged again."""
    rng = random.Random(files)
    source = tmp / "many"
    paths = []
    for d in range(max(1, files // 100)):
        folder = source / f"wedding-{d:05d}"
        folder.mkdir(parents=True)
        for i in range(min(100, files - d * 100)):
            path = folder / f"rsvp-{i:03d}.json"
            path.write_bytes(rng.randbytes(rng.randrange(200, 2000)))
            paths.append(path)
    print(f"source: {len(paths)} files in {len(paths) // 100} folders", flush=True)
    r = Round(tmp, 0, source)
    steps = [("full", None), ("no change", None), ("no change again", None),
             ("1% changed", 0.01), ("no change after", None)]
    print(f"  {'run':<18} {'vowvault s':>10} {'added':>12} {'restic s':>9} {'added':>12}")
    for label, share in steps:
        if share:
            for path in rng.sample(paths, int(len(paths) * share)):
                path.write_bytes(rng.randbytes(rng.randrange(200, 2000)))
        v, rs = r.vowvault(), r.restic()
        print(f"  {label:<18} {v.m.wall:10.2f} {size(v.added):>12} {rs.m.wall:9.2f} "
              f"{size(rs.added):>12}", flush=True)
    r.done()
    return 0


def _version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
    except OSError:
        return "?"
    return " ".join(out.split()[1:2]) or "?"


if __name__ == "__main__":
    sys.exit(main())
