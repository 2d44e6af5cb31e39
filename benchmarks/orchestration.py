"""What Prefect adds to a backup: the same backup `--direct` and as a deployment's flow run
on a running Prefect server with a process worker already polling.

    .venv/bin/python benchmarks/orchestration.py [--runs 5] [--mib 20] [--prefect-db postgres]
        [--poll-seconds 1] [--keep]

In a throw-away VOWVAULT_HOME: one file-tree policy (``--mib`` MiB of random files) to a
local directory, a `prefect server start` of its own (its database on the local PostgreSQL,
as in production, or SQLite), `vowvault deploy --work-pool`, and one `prefect worker start`
polling every ``--poll-seconds``. One untimed run first (it starts the launcher's warm
process), then ``--runs`` rounds, each in turn:

- `vowvault backup run POLICY --direct` (wall time and peak RSS of the process);
- a flow run of the deployment through the worker, forked by deployments/launcher.py;
- the same with `VOWVAULT_LAUNCHER=off` (Prefect's own `python -m prefect.engine`);
- `vowvault backup run POLICY` (the flow in the CLI's own process, on the running server).

For each flow run, from its state history: the poll latency (Scheduled to Pending: the
worker's query interval, reported apart), the start (Pending to Running: the flow-run
process until the flow's first step), Prefect's start-to-end (Running to Completed: what
Prefect reports as the run's duration) and the whole (Pending to Completed). Ratios and
differences are against `--direct` in the same round.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import benchproc  # noqa: E402

OFFLINE = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}
PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/vv_bench_prefect"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:  # noqa: S310
            return bool(r.status == 200)
    except OSError:
        return False


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    benchproc.CURRENT[proc.pid] = proc
    return proc


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, float, float]:
    """Wall seconds, peak RSS (MiB), CPU seconds of one command (which must succeed), and
    the CPU seconds the rest of the machine used meanwhile."""
    busy0 = benchproc.machine_cpu()[0]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    cpu = usage.ru_utime + usage.ru_stime
    outside = benchproc.machine_cpu()[0] - busy0 - cpu
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{' '.join(argv)} failed:\n{out.decode(errors='replace')[-2000:]}")
    return wall, usage.ru_maxrss / 1024, cpu, outside


async def _flow_run(api: str, deployment: str, job_variables: dict[str, Any] | None
                    ) -> dict[str, float]:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    busy0 = benchproc.machine_cpu()[0]
    with temporary_settings({PREFECT_API_URL: api}):
        async with get_client() as client:
            d = await client.read_deployment_by_name(deployment)
            run = await client.create_flow_run_from_deployment(
                d.id, parameters={"policy": "photos"}, job_variables=job_variables)
            deadline = time.monotonic() + 300
            while True:
                fr = await client.read_flow_run(run.id)
                if fr.state and fr.state.is_final():
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"flow run {run.id} did not finish in 300 s")
                await asyncio.sleep(0.1)
            if not fr.state.is_completed():
                raise SystemExit(f"flow run {run.id} ended {fr.state.name}: "
                                 f"{fr.state.message}")
            states = {s.name: s.timestamp for s in await client.read_flow_run_states(run.id)}
    machine = benchproc.machine_cpu()[0] - busy0

    def gap(a: str, b: str) -> float:
        return (states[b] - states[a]).total_seconds()

    return {"poll": gap("Scheduled", "Pending"), "start": gap("Pending", "Running"),
            "prefect": gap("Running", "Completed"), "whole": gap("Pending", "Completed"),
            "machine_cpu": machine}


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mib", type=int, default=20)
    ap.add_argument("--prefect-db", choices=("postgres", "sqlite"), default="postgres")
    ap.add_argument("--poll-seconds", type=float, default=1.0)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    tmp = Path(tempfile.mkdtemp(prefix="vv-orch-"))
    src = tmp / "src"
    src.mkdir()
    for i in range(args.mib):
        (src / f"photo-{i:03d}.jpg").write_bytes(os.urandom(1 << 20))
    policy = tmp / "policy.yaml"
    policy.write_text(textwrap.dedent(f"""\
        version: 1
        organizations: [{{slug: lumiere, name: Lumiere, vendor_type: photographer}}]
        policies:
          - name: photos
            organization: lumiere
            source: {{kind: directory, path: {src}}}
            priority: normal
            schedule: {{cron: "0 2 * * *", timezone: Europe/London}}
            storage: [{{url: "file://{tmp}/storage"}}]
        """))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "VOWVAULT_"))}
    server_env = {**base, **OFFLINE, "PREFECT_HOME": str(tmp / "prefect-server")}
    if args.prefect_db == "postgres":
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc",
                        "DROP DATABASE IF EXISTS vv_bench_prefect"], check=True)
        subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc",
                        "CREATE DATABASE vv_bench_prefect"], check=True)
        server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = PG
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    try:
        server = _start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                         "--port", str(port)], server_env, tmp / "server.log")
        deadline = time.monotonic() + 180
        while not _healthy(api):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the Prefect server did not start: {tmp}/server.log")
            time.sleep(0.5)
        env = {**base, **OFFLINE, "PREFECT_API_URL": api, "PREFECT_HOME": str(tmp / "ph"),
               "VOWVAULT_HOME": str(tmp / "home")}
        vv = str(BIN / "vowvault")
        subprocess.run([vv, "policies", "apply", str(policy)], env=env, check=True,
                       capture_output=True)
        subprocess.run([vv, "deploy", "--work-pool", "bench"], env=env, check=True,
                       capture_output=True)
        worker_env = {**env, "PREFECT_WORKER_QUERY_SECONDS": str(args.poll_seconds)}
        _start([str(BIN / "prefect"), "worker", "start", "--pool", "bench"], worker_env,
               tmp / "worker.log")
        deployment_env = {"VOWVAULT_HOME": env["VOWVAULT_HOME"]}
        off = {"env": {**deployment_env, "VOWVAULT_LAUNCHER": "off"}}
        first = asyncio.run(_flow_run(api, "backup/photos", None))
        print(f"first flow run (starts the warm process): start {first['start']:.2f} s, "
              f"whole {first['whole']:.2f} s", flush=True)
        time.sleep(5)  # the warm process imports before it serves
        rows: dict[str, list[float]] = {k: [] for k in (
            "direct", "direct_rss", "direct_cpu", "direct_outside", "cli_flow",
            "cli_flow_rss", "cli_flow_cpu", "cli_flow_outside")}
        forked: list[dict[str, float]] = []
        fresh: list[dict[str, float]] = []
        for i in range(args.runs):
            d, d_rss, d_cpu, d_out = _timed([vv, "backup", "run", "photos", "--direct"], env)
            f = asyncio.run(_flow_run(api, "backup/photos", None))
            p = asyncio.run(_flow_run(api, "backup/photos", off))
            c, c_rss, c_cpu, c_out = _timed([vv, "backup", "run", "photos"], env)
            rows["direct"].append(d)
            rows["direct_rss"].append(d_rss)
            rows["cli_flow"].append(c)
            rows["cli_flow_rss"].append(c_rss)
            rows["direct_cpu"].append(d_cpu)
            rows["direct_outside"].append(d_out)
            rows["cli_flow_cpu"].append(c_cpu)
            rows["cli_flow_outside"].append(c_out)
            forked.append(f)
            fresh.append(p)
            print(f"round {i + 1}: direct {d:.2f} s | forked run: poll {f['poll']:.2f} start "
                  f"{f['start']:.2f} prefect {f['prefect']:.2f} whole {f['whole']:.2f} | "
                  f"fresh engine: start {p['start']:.2f} prefect {p['prefect']:.2f} whole "
                  f"{p['whole']:.2f} | CLI flow {c:.2f} s", flush=True)
        direct = _median(rows["direct"])
        print(f"\nmedians of {args.runs} rounds (Prefect server on {args.prefect_db}, worker "
              f"polling every {args.poll_seconds:g} s; {args.mib} MiB tree):")
        print(f"  --direct                      {direct:6.2f} s   peak RSS "
              f"{_median(rows['direct_rss']):.0f} MiB, CPU {_median(rows['direct_cpu']):.2f} s "
              f"(outside it {_median(rows['direct_outside']):.2f} s: server, worker, the rest)")
        for name, runs in (("flow run, forked (launcher)", forked),
                           ("flow run, fresh engine", fresh)):
            m = {k: _median([r[k] for r in runs]) for k in ("poll", "start", "prefect",
                                                           "whole", "machine_cpu")}
            print(f"  {name:29} start-to-end {m['prefect']:5.2f} s ({m['prefect'] - direct:+.2f}"
                  f" s vs --direct); pending-to-end {m['whole']:5.2f} s "
                  f"({m['whole'] - direct:+.2f} s, {m['whole'] / direct:.2f}x); of which "
                  f"process start {m['start']:.2f} s; poll latency {m['poll']:.2f} s apart; "
                  f"machine CPU from trigger to end {m['machine_cpu']:.2f} s")
        c = _median(rows["cli_flow"])
        print(f"  CLI flow on the running server {c:5.2f} s ({c - direct:+.2f} s, "
              f"{c / direct:.2f}x)   peak RSS {_median(rows['cli_flow_rss']):.0f} MiB, CPU "
              f"{_median(rows['cli_flow_cpu']):.2f} s (outside it "
              f"{_median(rows['cli_flow_outside']):.2f} s)")
        print(f"  {_warm_rss()}")
    finally:
        benchproc.kill_current()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        if args.prefect_db == "postgres":
            subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc",
                            "DROP DATABASE IF EXISTS vv_bench_prefect"], check=False)


def _warm_rss() -> str:
    """The launcher's warm processes' resident memory (their forks share it)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            cmd = status.read_bytes().split(b"\0")
            if b"deployments.launcher" in cmd and b"--warm" in cmd:
                text = (status.parent / "status").read_text()
                rss = next(line for line in text.splitlines() if line.startswith("VmRSS"))
                found.append(int(rss.split()[1]) / 1024)
        except (OSError, StopIteration):
            continue
    if not found:
        return "no warm process found"
    return "warm process RSS " + ", ".join(f"{r:.0f} MiB" for r in found) + \
        " (shared by its forks until written)"


if __name__ == "__main__":
    main()
