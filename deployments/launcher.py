"""The flow-run command of vowvault's process work pools: Prefect's engine, forked warm.

A process worker starts every flow run as a new ``python -m prefect.engine``, which spends
about two seconds importing Prefect and vowvault before the run's first step. Deployments
made by ``vowvault deploy --work-pool`` name this module as their command instead. It is
a small client (standard library only) that asks a *warm process* to fork the run:

- The warm process is started by the first run (and by the first run of every other
  environment: one per environment fingerprint, at most ``MAX_WARM``), imports Prefect's
  engine and vowvault's flows once, then waits on a Unix socket in a private directory
  (``$XDG_RUNTIME_DIR/vowvault`` or ``/tmp/vowvault-<uid>``, mode 0700, owner checked;
  both ends check the other's uid with SO_PEERCRED). It never starts a thread or opens a
  connection, so forking it is safe.
- A run is forked only when its environment is exactly the one the warm process imported
  with, apart from Prefect's per-run variables (``PREFECT__*``), with the same working
  directory and interpreter, and no imported file changed since (size and mtime of every
  loaded module): else the client runs ``python -m prefect.engine`` itself, as Prefect
  would have, so a fork never differs from a fresh start in what it reads.
- The forked run gets the client's stdin, stdout and stderr (the worker's log stream), its
  environment and working directory, and runs ``prefect.engine`` as ``__main__``, ending
  through the interpreter's normal shutdown (threads joined, logs flushed). The client
  forwards SIGTERM, SIGINT and SIGHUP to it and exits with its exit status (a run killed by
  a signal kills the client with the same signal), so the worker sees what it would have
  seen. If the client dies (SIGKILL), the run is killed: it holds the read end of a pipe
  the client holds open.
- The warm process ends when the worker that started the first run ends, after
  ``VOWVAULT_LAUNCHER_IDLE`` seconds without a run (default 900), or when its code
  changed; runs in progress finish first. ``VOWVAULT_LAUNCHER=off`` in the worker's
  environment turns it all off.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

MAX_WARM = 4
SOCKET_DIR_MAX = 80  # bytes: the directory, then "/<fingerprint>.sock"
RUNTIME_PREFIX = "PREFECT__"  # Prefect's per-run variables, read only while a run runs
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_HEADER = struct.Struct("!I")


# ---------------------------------------------------------------------------- both ends

def fingerprint(env: dict[str, str], cwd: str, executable: str) -> str:
    """What a warm process must share with a run it forks: everything but PREFECT__*."""
    kept = sorted((k, v) for k, v in env.items() if not k.startswith(RUNTIME_PREFIX))
    blob = json.dumps([executable, cwd, kept]).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def runtime_dir() -> Path | None:
    """The private directory of the sockets; None when it is not safely ours."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(base) / "vowvault" if base else Path(f"/tmp/vowvault-{os.getuid()}")  # noqa: S108
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        st = path.lstat()
    except OSError:
        return None
    import stat

    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    if len(os.fsencode(path)) > SOCKET_DIR_MAX:  # a socket's path has at most 107 bytes
        return None
    return path


def _peer_is_us(sock: socket.socket) -> bool:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid == os.getuid()


def _send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    payload = json.dumps(message).encode()
    header = _HEADER.pack(len(payload))
    if fds:
        socket.send_fds(sock, [header], fds)
    else:
        sock.sendall(header)
    sock.sendall(payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("the other end closed")
        data += chunk
    return data


def _recv(sock: socket.socket, maxfds: int = 0) -> tuple[dict[str, Any], list[int]]:
    if maxfds:
        head, fds, _flags, _addr = socket.recv_fds(sock, _HEADER.size, maxfds)
        if not head:
            raise EOFError("the other end closed")
        head += _recv_exact(sock, _HEADER.size - len(head))
    else:
        head, fds = _recv_exact(sock, _HEADER.size), []
    (size,) = _HEADER.unpack(head)
    return json.loads(_recv_exact(sock, size)), list(fds)


# ------------------------------------------------------------------------------- client

def main() -> None:
    """The flow-run command: fork the run in a warm process, or be the engine."""
    if os.environ.get("VOWVAULT_LAUNCHER", "on").lower() in ("off", "0", "false", "no") \
            or not sys.platform.startswith("linux"):
        _exec_engine()
    env = dict(os.environ)
    cwd = os.getcwd()
    fp = fingerprint(env, cwd, sys.executable)
    where = runtime_dir()
    if where is None:
        _exec_engine()
    sock = _connect(where / f"{fp}.sock")
    if sock is None:
        if _live_warm(where) < MAX_WARM:
            _start_warm(where, fp, env, cwd)
        _exec_engine()
    code = _run_forked(sock, env, cwd)
    if code is None:  # the warm process refused (its code changed, or it is draining)
        _exec_engine()
    _exit_like(code)


def _exec_engine() -> None:
    """Exactly what a process worker runs without this module."""
    os.execv(sys.executable, [sys.executable, "-m", "prefect.engine"])  # noqa: S606


def _connect(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(5)
        sock.connect(str(path))
        if not _peer_is_us(sock):
            sock.close()
            return None
        return sock
    except OSError:
        sock.close()
        return None


def _live_warm(where: Path) -> int:
    """How many warm processes run (each holds its lock); what dead ones left is removed."""
    import fcntl

    live = 0
    for lock in where.glob("*.lock"):
        try:
            with open(lock, "a") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    live += 1
                    continue
                lock.with_suffix(".sock").unlink(missing_ok=True)
                lock.unlink(missing_ok=True)
        except OSError:
            continue
    return live


def _start_warm(where: Path, fp: str, env: dict[str, str], cwd: str) -> None:
    """Start the warm process of this environment, detached (double fork: never a zombie
    of this run), logging to ``<fingerprint>.log``; it watches the worker (our parent)."""
    warm_env = {k: v for k, v in env.items() if not k.startswith(RUNTIME_PREFIX)}
    argv = [sys.executable, "-m", "deployments.launcher", "--warm", fp,
            "--watch", str(os.getppid())]
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            if os.fork() == 0:
                log = os.open(where / f"{fp}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                              0o600)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(log, 1)
                os.dup2(log, 2)
                os.chdir(cwd)
                os.execve(sys.executable, argv, warm_env)  # noqa: S606
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _run_forked(sock: socket.socket, env: dict[str, str], cwd: str) -> int | None:
    """Send the run; forward signals; the run's wait status (None: refused)."""
    watch_r, watch_w = os.pipe()
    try:
        _send(sock, {"env": env, "cwd": cwd}, [0, 1, 2, watch_r])
        os.close(watch_r)
        sock.settimeout(30)
        reply, _ = _recv(sock)
    except (OSError, EOFError, ValueError):
        os.close(watch_w)
        return None
    if "pid" not in reply:
        os.close(watch_w)
        return None
    pid = int(reply["pid"])

    def forward(signum: int, _frame: Any) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for sig in FORWARDED:
        signal.signal(sig, forward)
    sock.settimeout(None)
    try:
        done, _ = _recv(sock)
        return int(done["status"])
    except (OSError, EOFError, ValueError, KeyError):
        # The warm process is gone: wait for the run itself, its status unknown.
        _wait_gone(pid)
        return 1 << 8
    finally:
        os.close(watch_w)


def _wait_gone(pid: int) -> None:
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)


def _exit_like(status: int) -> None:
    """End this process as the run ended: the same exit code, or the same signal."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        sys.stdout.flush()
        if sig not in (signal.SIGKILL, signal.SIGSTOP):
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        time.sleep(1)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


# ---------------------------------------------------------------------- warm process

def _loaded_files() -> dict[str, tuple[int, int]]:
    out = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path:
            try:
                st = os.stat(path)
            except OSError:
                continue
            out[path] = (st.st_size, st.st_mtime_ns)
    return out


def _stale(stamps: dict[str, tuple[int, int]]) -> bool:
    for path, stamp in stamps.items():
        try:
            st = os.stat(path)
        except OSError:
            return True
        if (st.st_size, st.st_mtime_ns) != stamp:
            return True
    return False


def _warm_up() -> None:
    """Import what a run imports, in the engine's order (Prefect first, as
    ``python -m prefect.engine`` does), starting nothing."""
    import importlib
    import pkgutil

    for name in ("prefect", "prefect.engine", "prefect.flow_engine", "prefect._internal.metrics",
                 "prefect.deployments.steps.core", "prefect.concurrency.sync",
                 "prefect.artifacts", "prefect.futures", "prefect.task_runners"):
        importlib.import_module(name)
    for name in ("flows.backup", "flows.maintenance", "flows.dr_drill"):
        importlib.import_module(name)
    for package in ("engine", "repository", "sources", "codec", "storage"):
        mod = importlib.import_module(f"vowvault.{package}")
        for info in pkgutil.iter_modules(mod.__path__, prefix=f"vowvault.{package}."):
            try:
                importlib.import_module(info.name)
            except ImportError:  # an optional SDK not installed: the run imports it (or not)
                continue


def warm(fp: str, watch: int) -> dict[str, Any]:
    """The warm process: forks runs until idle, the worker gone, or its code changed. In a
    forked run this function returns the run's request; in the warm process it never
    returns (it exits)."""
    import fcntl
    import selectors

    me = os.getpid()
    env = dict(os.environ)
    if fingerprint(env, os.getcwd(), sys.executable) != fp:
        sys.exit("the environment is not the one named: not starting")
    where = runtime_dir()
    if where is None:
        sys.exit("no private runtime directory: not starting")
    idle = float(os.environ.get("VOWVAULT_LAUNCHER_IDLE", "900"))
    lock = open(where / f"{fp}.lock", "w")  # noqa: SIM115 - held for life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        sys.exit(0)  # another warm process of this environment is starting or running
    started = time.monotonic()
    _warm_up()
    stamps = _loaded_files()
    import gc

    gc.collect()
    gc.freeze()  # what was imported is never collected: forks do not copy it to scan it
    path = where / f"{fp}.sock"
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    inode = path.stat().st_ino
    print(f"warm in {time.monotonic() - started:.1f} s; serving {path}", flush=True)

    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    worker: int | None
    try:
        worker = os.pidfd_open(watch)
        sel.register(worker, selectors.EVENT_READ, "worker")
    except OSError:  # the worker is already gone
        worker = None
    runs: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, client)
    accepting = worker is not None
    last = time.monotonic()

    def stop_accepting(why: str) -> None:
        nonlocal accepting
        if accepting:
            accepting = False
            sel.unregister(listener)
            listener.close()
            try:
                if path.stat().st_ino == inode:
                    path.unlink()
            except OSError:
                pass
            print(f"not forking any more: {why}", flush=True)

    while accepting or runs:
        timeout = max(0.0, last + idle - time.monotonic()) if not runs else None
        events = sel.select(timeout)
        if not events and not runs:
            stop_accepting(f"idle for {idle:.0f} s")
            continue
        for key, _mask in events:
            if key.data == "worker" and worker is not None:
                sel.unregister(worker)
                os.close(worker)
                worker = None
                stop_accepting("the worker ended")
            elif key.data == "accept" and accepting:
                conn, _ = listener.accept()
                last = time.monotonic()
                request = _take(conn)
                if request is None:
                    continue
                if _stale(stamps):
                    _refuse(conn, request, "code changed")
                    stop_accepting("its code changed")
                    continue
                pid = os.fork()
                if pid == 0:  # the run: shed the warm process, then go back up and run
                    sel.close()
                    if accepting:
                        listener.close()
                    for pidfd, (_pid, client) in runs.items():
                        os.close(pidfd)
                        client.close()
                    if worker is not None:
                        os.close(worker)
                    conn.close()
                    lock.close()
                    return request
                for fd in request["fds"]:
                    os.close(fd)
                run_id = request["env"].get("PREFECT__FLOW_RUN_ID", "?")
                print(f"forked flow run {run_id} as pid {pid}", flush=True)
                pidfd = os.pidfd_open(pid)
                runs[pidfd] = (pid, conn)
                sel.register(pidfd, selectors.EVENT_READ, "run")
                with contextlib.suppress(OSError):  # a client gone: its run sees it
                    _send(conn, {"pid": pid})
            elif key.data == "run":  # a run ended
                pidfd = key.fileobj
                assert isinstance(pidfd, int)
                sel.unregister(pidfd)
                pid, conn = runs.pop(pidfd)
                os.close(pidfd)
                _, status = os.waitpid(pid, 0)
                with contextlib.suppress(OSError):
                    _send(conn, {"status": status})
                conn.close()
                last = time.monotonic()
    assert os.getpid() == me
    with contextlib.suppress(OSError):  # held: no one else can be using them
        (where / f"{fp}.lock").unlink()
        (where / f"{fp}.log").unlink()  # a warm process that failed keeps its log
    sys.exit(0)


def _take(conn: socket.socket) -> dict[str, Any] | None:
    """A run's request with its four descriptors, or None (dropped)."""
    try:
        conn.settimeout(10)
        if not _peer_is_us(conn):
            conn.close()
            return None
        message, fds = _recv(conn, maxfds=4)
        conn.settimeout(None)
    except (OSError, EOFError, ValueError):
        conn.close()
        return None
    if len(fds) != 4 or not isinstance(message.get("env"), dict):
        for fd in fds:
            os.close(fd)
        conn.close()
        return None
    message["fds"] = fds
    return message


def _refuse(conn: socket.socket, request: dict[str, Any], why: str) -> None:
    for fd in request["fds"]:
        os.close(fd)
    with contextlib.suppress(OSError):
        _send(conn, {"refused": why})
    conn.close()


def become_run(request: dict[str, Any]) -> None:
    """In the forked child: take the client's descriptors, environment and directory, and
    run Prefect's engine as ``python -m prefect.engine`` would."""
    import runpy
    import threading

    stdin, stdout, stderr, watch = request["fds"]
    os.set_inheritable(watch, False)
    for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
        os.close(fd)
    for sig in FORWARDED:
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.setsid()  # not in the warm process's session: a signal to it is not one to us

    def client_alive() -> None:  # EOF: the client died without a word (SIGKILL)
        while os.read(watch, 1):
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=client_alive, daemon=True, name="launcher-client").start()
    os.environ.clear()
    os.environ.update(request["env"])
    import flows

    flows.offline_defaults()  # what importing flows set in a fresh engine's environment
    os.chdir(request["cwd"])
    engine = sys.modules["prefect.engine"]
    sys.argv = [str(engine.__file__)]
    del sys.modules["prefect.engine"]  # run it as __main__, as `-m` does
    try:
        runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
    finally:
        sys.modules.setdefault("prefect.engine", engine)


def _cli(argv: list[str]) -> None:
    if argv[:1] == ["--warm"] and len(argv) == 4 and argv[2] == "--watch":
        request = warm(argv[1], int(argv[3]))
        become_run(request)  # only a forked run gets here
        return
    if argv:
        sys.exit(f"usage: python -m deployments.launcher [--warm FINGERPRINT --watch PID] "
                 f"(got {' '.join(argv)})")
    main()


if __name__ == "__main__":
    _cli(sys.argv[1:])
