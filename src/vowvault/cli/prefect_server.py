"""A Prefect server for the single-machine setup, started and found by the CLI.

Prefect's ephemeral server (what a flow uses when no PREFECT_API_URL is set) runs no
scheduler, so scheduled runs need a real one. ``vowvault serve`` starts ``prefect server
start`` on loopback when no API is configured, records its address under VOWVAULT_HOME, and
other commands (``deploy``, ``backup run``) then talk to it instead of starting an ephemeral
server on the same database (which SQLite would not enjoy)."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from vowvault.errors import ConfigError, VowvaultError
from vowvault.settings import load_settings


def _marker() -> Path:
    return load_settings().home / "prefect" / "api-url"


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as r:  # noqa: S310
            return bool(r.status == 200)
    except OSError:
        return False


def answers(api_url: str, timeout: float = 5.0) -> str | None:
    """None if something answers at ``api_url`` (any HTTP status: an API that wants
    credentials answers too), else why not."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout):  # noqa: S310
            return None
    except urllib.error.HTTPError:
        return None
    except urllib.error.URLError as exc:
        return str(exc.reason)
    except OSError as exc:  # a timeout, a connection reset
        return str(exc) or type(exc).__name__


def use_running_server() -> str | None:
    """Point this process at the API: PREFECT_API_URL if set (``VowvaultError`` if nothing
    answers there), else the server `vowvault serve` started, if it answers. None means
    Prefect's ephemeral mode."""
    if os.environ.get("PREFECT_API_URL"):
        url = os.environ["PREFECT_API_URL"]
        if urllib.parse.urlsplit(url).scheme not in ("http", "https") or "://" not in url:
            raise ConfigError(f"PREFECT_API_URL {_without_userinfo(url)!r} is not an http(s) "
                              f"URL: give the API's address (http://127.0.0.1:4200/api), or "
                              f"unset it")
        why = answers(url)
        if why is not None:
            raise VowvaultError(f"the Prefect API at {_without_userinfo(url)} does not answer "
                                f"({why}): start it, or fix PREFECT_API_URL (unset, vowvault "
                                f"starts a local server of its own)")
        return url
    marker = _marker()
    if marker.exists():
        url = marker.read_text().strip()
        if healthy(url):
            os.environ["PREFECT_API_URL"] = url
            return url
    return None


def _without_userinfo(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()


def _port(preferred: int = 4200) -> int:
    """``preferred`` if free, else (or with 0) any free port."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent(parent: int) -> None:
    """In the child, before exec: stop when the process that started us ends, however it
    ends (SIGKILL included): Linux's parent-death signal."""
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def start_local_server(timeout: float = 120.0, *,
                       remember: bool = True) -> subprocess.Popen[bytes]:
    """``prefect server start`` on loopback with VOWVAULT_HOME's Prefect database. It ends
    with the command that started it, even a killed one. ``remember``: other commands use
    it while it runs (``vowvault serve``); otherwise it is this command's alone, on a port
    of its own."""
    port = _port() if remember else _port(0)
    url = f"http://127.0.0.1:{port}/api"
    home = load_settings().home / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / "server.log", "ab")  # noqa: SIM115 - owned by the child
    # The UI asks the API at PREFECT_SERVER_API_PORT, not at --port: keep them the same.
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_API_PORT": str(port),
           "PREFECT_SERVER_API_HOST": "127.0.0.1"}
    env.pop("PREFECT_API_URL", None)
    parent = os.getpid()
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host",
                             "127.0.0.1", "--port", str(port)], stdout=log,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True,
                            preexec_fn=lambda: _die_with_parent(parent))
    deadline = time.monotonic() + timeout
    while not healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise ConfigError(f"the local Prefect server did not start; see {home}/server.log")
        time.sleep(0.5)
    if remember:
        _marker().write_text(url)
    os.environ["PREFECT_API_URL"] = url
    return proc


@contextlib.contextmanager
def prefect_api() -> Iterator[str]:
    """The Prefect API to use for the length of a command: the configured one or the one
    `vowvault serve` runs, else a server of this command's own, stopped however the command
    ends (SIGKILL included: the server's parent-death signal)."""
    url = use_running_server()
    if url is not None:
        yield url
        return
    server = start_local_server(remember=False)
    try:
        yield os.environ["PREFECT_API_URL"]
    finally:
        stop_local_server(server, remember=False, flush_logs=True)


def stop_local_server(proc: subprocess.Popen[bytes], *, remember: bool = True,
                      flush_logs: bool = False) -> None:
    """Stop the server; ``flush_logs``: first send this process's run logs to it (Prefect
    ships them in batches, and would otherwise retry against a server that is gone)."""
    if flush_logs:
        from prefect.logging.handlers import APILogWorker

        try:
            APILogWorker.drain_all(timeout=10)
        except Exception as exc:  # logs are a nicety; stopping the server is not
            logging.getLogger("vowvault").debug("run logs not flushed: %s", exc)
    if remember:
        _marker().unlink(missing_ok=True)
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


class _NoTracebackForExpected(logging.Filter):
    """Prefect logs a task's exception with its traceback; for vowvault's own errors (bad
    input, a source or target down) the one-line message is the whole story."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], VowvaultError):
            record.msg = f"{record.getMessage().splitlines()[0]}: {record.exc_info[1]}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_expected_errors() -> None:
    """Prefect's own loggers print vowvault's errors as one line, without a traceback."""
    from prefect.logging.configuration import setup_logging

    setup_logging()
    flt = _NoTracebackForExpected()
    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(flt)


def run_logs_off_console() -> None:
    """Prefect's and vowvault's INFO lines go to the run (the Prefect UI shows them), not
    to this console, where the command prints its own summary; warnings and errors still
    show, and ``-v`` shows everything."""
    quiet_expected_errors()
    if os.environ.get("VOWVAULT_VERBOSE") == "1":
        return
    from prefect.logging.handlers import APILogHandler

    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs", "vowvault"):
        for handler in logging.getLogger(name).handlers:  # the console handler is the root's
            if not isinstance(handler, APILogHandler):
                handler.setLevel(logging.WARNING)
