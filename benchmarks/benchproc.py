"""What every benchmark here shares to run reference commands: the process groups it
started (so a Ctrl-C or SIGTERM stops them all), a bash pipeline, the machine's load, the
reference tools installed from the Debian registry."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess

CURRENT: dict[int, subprocess.Popen[bytes]] = {}
"""Processes started in a session of their own and not yet waited for, by pid."""


def kill_current(grace: float = 10.0) -> None:
    """Stop the process groups this script started and that still run (SIGTERM, then
    SIGKILL after ``grace`` seconds)."""
    for proc in list(CURRENT.values()):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    CURRENT.clear()


def shell(script: str) -> list[str]:
    return ["bash", "-c", "set -euo pipefail; " + script]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} ({os.cpu_count()} CPUs)"


def install_references(tools: dict[str, str]) -> None:
    """The reference tools from the Debian registry, when missing (one line each)."""
    missing = sorted({pkg for tool, pkg in tools.items() if shutil.which(tool) is None})
    if not missing:
        return
    print(f"installing {' '.join(missing)} (apt) ...", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env, check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def machine_cpu() -> tuple[float, float]:
    """(busy, iowait) CPU seconds of the whole machine since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / tick, v[4] / tick


def server_cpu() -> float:
    """CPU seconds of every PostgreSQL server process since it started, including the
    backends the postmasters have reaped (their children's time): the difference over a run
    is the server's share of it."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        if comm != "postgres" and not comm.startswith("postgres:"):
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / tick


def least_squares(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line through the points."""
    import statistics

    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return b, my - b * mx


def start_warm(vowvault: str, env: dict[str, str]) -> str:
    """`vowvault warm` for ``env`` (not timed): that environment's later vowvault commands
    fork from it. Its one-line answer."""
    done = subprocess.run([vowvault, "warm", "--idle", "7200"], env=env, capture_output=True,
                          text=True, check=True, stdin=subprocess.DEVNULL)
    return " ".join(done.stdout.split())


def stop_warm(vowvault: str, env: dict[str, str]) -> None:
    subprocess.run([vowvault, "warm", "--stop"], env=env, capture_output=True, check=False,
                   stdin=subprocess.DEVNULL)
