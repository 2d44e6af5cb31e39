"""Real Prefect processes for tests: a `prefect server start`, workers, and stopping them the
way an operator does (NOTES.md: an idle worker wants a second SIGINT)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

BIN = Path(sys.executable).parent
OFFLINE = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthy(api_url: str) -> bool:
    """``/health`` answers without credentials, also on a server with an auth string."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:  # noqa: S310
            return r.status == 200
    except OSError:
        return False


def wait_healthy(api_url: str, proc: subprocess.Popen[bytes], log: Callable[[], str],
                 timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not healthy(api_url):
        assert proc.poll() is None, f"the Prefect server exited:\n{log()[-3000:]}"
        assert time.monotonic() < deadline, f"the Prefect server is not healthy:\n{log()[-3000:]}"
        time.sleep(0.5)


def start_server(home: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``prefect server start`` on loopback with its own PREFECT_HOME, healthy."""
    log = home / "log"
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)],
                            env={**env, **OFFLINE, "PREFECT_HOME": str(home)},
                            stdout=log.open("wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    wait_healthy(f"http://127.0.0.1:{port}/api", proc, log.read_text)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT to the process group, twice if need be, then SIGKILL."""
    for _ in range(2):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                continue
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
