"""Warm processes: a command forked from a process that has already imported everything.

A cold ``vowvault`` command spends most of a second importing SQLAlchemy, the catalog's
models, pydantic, Typer and the data plane before its first step, and a flow run of a
process work pool spends about two importing Prefect. A *warm process* imports them once
and forks each command from that state; a small client (this module: the standard library
only) asks it to. Two kinds share the mechanics here:

- ``flow``: the flow-run command of ``vowvault deploy --work-pool`` deployments
  (``deployments/launcher.py``), started by the first run, watching its worker;
- ``cli``: the ``vowvault`` command itself (``vowvault.cli.entry`` the client,
  ``vowvault.cli.warmcli`` the warm process), started by ``vowvault warm`` (or by a command
  run with ``VOWVAULT_WARM=auto``).

What makes a fork safe, whichever the kind:

- The warm process lives in a private directory (``$XDG_RUNTIME_DIR/vowvault`` or
  ``/tmp/vowvault-<uid>``, mode 0700, owner checked, never a link); both ends check the
  other's uid with SO_PEERCRED. It never starts a thread or opens a connection, so forking
  it is safe, and it imports nothing that prints or reads a terminal (the CLI's consoles
  are made in the fork).
- A command is forked only when its environment is exactly the one the warm process
  imported with (apart from the variables its kind lists as per-run: Prefect's
  ``PREFECT__*``; the shell's ``PWD``, ``OLDPWD`` and ``_``), with the same interpreter (and
  for flow runs the same working directory), the same process context (identity, umask,
  resource limits, priority, control groups: what the fork inherits from the warm process),
  and no imported file changed since (size and mtime of every loaded module): else the
  client runs the command itself, as it would have without a warm process, so a fork never
  differs from a fresh start in what it reads or how it runs.
- The fork gets the client's stdin, stdout and stderr, its environment and working
  directory; it ends as a fresh process would (threads joined, exit handlers run, streams
  flushed; a flow run through the interpreter's whole shutdown). The client forwards
  SIGTERM, SIGINT and SIGHUP to it and exits with its exit status (a command killed by a
  signal kills the client with the same signal). If the client dies (SIGKILL), the fork is
  killed: it holds the read end of a pipe the client holds open.
- A warm process ends after ``VOWVAULT_WARM_IDLE`` seconds without a command (default 900;
  ``VOWVAULT_LAUNCHER_IDLE`` for flow runs), on SIGTERM, when the process it watches ends,
  or when its code changed; commands in progress finish first.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

MAX_WARM = 4
SOCKET_DIR_MAX = 80  # bytes: the directory, then "/<fingerprint>.sock"
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
FLOW_RUNTIME_PREFIX = "PREFECT__"  # Prefect's per-run variables, read only while a run runs
CLI_PER_COMMAND = frozenset({"PWD", "OLDPWD", "_"})  # the shell's own, per command
_HEADER = struct.Struct("!I")


# ---------------------------------------------------------------------------- both ends

def fingerprint(kind: str, env: dict[str, str], cwd: str | None, executable: str) -> str:
    """What a warm process of ``kind`` must share with a command it forks: the
    environment (but its per-command variables), the interpreter, for flow runs the working
    directory, and this process's own context (``process_context``)."""
    kept = sorted((k, v) for k, v in env.items() if not per_command(kind, k))
    blob = json.dumps([kind, executable, cwd, kept, process_context()]).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def process_context() -> list[Any]:
    """What a fork inherits from the warm process rather than from its client, and so must
    be the same for both: the identity (uids, gids, supplementary groups), the umask (the
    mode of every file a restore creates), the resource limits (open files, file size,
    memory), the scheduling priority and the control groups (CPU and memory quotas, a
    systemd unit's)."""
    import resource

    mask = os.umask(0o077)
    os.umask(mask)
    limits = [(name, resource.getrlimit(getattr(resource, name)))
              for name in sorted(n for n in dir(resource) if n.startswith("RLIMIT_"))]
    try:
        with open("/proc/self/cgroup") as f:
            cgroups = f.read()
    except OSError:
        cgroups = ""
    return [os.getresuid(), os.getresgid(), sorted(os.getgroups()), mask, limits,
            os.getpriority(os.PRIO_PROCESS, 0), cgroups]


def per_command(kind: str, name: str) -> bool:
    """Whether ``name`` may differ between the warm process and a command it forks."""
    if kind == "flow":
        return name.startswith(FLOW_RUNTIME_PREFIX)
    return name in CLI_PER_COMMAND


def runtime_dir(create: bool = True) -> Path | None:
    """The private directory of the sockets; None when it is not safely ours (or, without
    ``create``, not there)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = Path(base) / "vowvault" if base else Path(f"/tmp/vowvault-{os.getuid()}")  # noqa: S108
    try:
        if create:
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

def connect(path: Path) -> socket.socket | None:
    """A connection to the warm process listening at ``path``, if it is ours."""
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


def live_warm(where: Path) -> int:
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


def start_warm(where: Path, fp: str, argv: list[str], env: dict[str, str], cwd: str) -> None:
    """Start a warm process (``argv``), detached (double fork: never a zombie of this
    process), logging to ``<fingerprint>.log``."""
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
                os.execve(sys.executable, argv, env)  # noqa: S606
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def run_forked(sock: socket.socket, request: dict[str, Any]) -> int | None:
    """Send the command (``env``, ``cwd``, for the CLI ``argv``) with our stdin, stdout
    and stderr; forward signals; the command's wait status (None: refused)."""
    watch_r, watch_w = os.pipe()
    try:
        _send(sock, request, [0, 1, 2, watch_r])
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
        # The warm process is gone: wait for the command itself, its status unknown.
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


def exit_like(status: int) -> None:
    """End this process as the forked command ended: the same exit code, or the same
    signal."""
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

def loaded_files() -> dict[str, tuple[int, int]]:
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


def stale(stamps: dict[str, tuple[int, int]]) -> bool:
    for path, stamp in stamps.items():
        try:
            st = os.stat(path)
        except OSError:
            return True
        if (st.st_size, st.st_mtime_ns) != stamp:
            return True
    return False


def import_packages(packages: tuple[str, ...]) -> None:
    """Import every module of these vowvault packages (what a warm process preloads); a
    module whose optional SDK is not installed is left for the command to import (or not)."""
    import importlib
    import pkgutil

    for package in packages:
        mod = importlib.import_module(f"vowvault.{package}")
        for info in pkgutil.iter_modules(mod.__path__, prefix=f"vowvault.{package}."):
            try:
                importlib.import_module(info.name)
            except ImportError:
                continue


def serve(fp: str, fingerprint_now: str, warm_up: Callable[[], None], watch: int | None,
          idle: float, describe: Callable[[dict[str, Any]], str]) -> dict[str, Any]:
    """The warm process: forks commands until idle, SIGTERM, the watched process gone, or
    its code changed. In a fork this function returns the command's request; in the warm
    process it never returns (it exits)."""
    import fcntl
    import selectors

    me = os.getpid()
    if fingerprint_now != fp:
        sys.exit("the environment is not the one named: not starting")
    where = runtime_dir()
    if where is None:
        sys.exit("no private runtime directory: not starting")
    lock = open(where / f"{fp}.lock", "a+")  # noqa: SIM115 - held for life
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        sys.exit(0)  # another warm process of this environment is starting or running
    lock.truncate(0)  # ours now: it names us
    lock.write(f"{me}\n")
    lock.flush()
    started = time.monotonic()
    warm_up()
    stamps = loaded_files()
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
    stop_r, stop_w = os.pipe()  # SIGTERM: stop accepting, let what runs finish
    os.set_blocking(stop_w, False)
    signal.set_wakeup_fd(stop_w)
    signal.signal(signal.SIGTERM, lambda *_: None)
    sel.register(stop_r, selectors.EVENT_READ, "stop")
    watched: int | None = None
    accepting = True
    watched_gone = False
    if watch is not None:
        try:
            watched = os.pidfd_open(watch)
            sel.register(watched, selectors.EVENT_READ, "watched")
        except OSError:  # already gone
            watched_gone = True
    runs: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, client)
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

    if watched_gone:
        stop_accepting("the process it watches had ended")
    while accepting or runs:
        timeout = max(0.0, last + idle - time.monotonic()) if not runs else None
        events = sel.select(timeout)
        if not events and not runs:
            stop_accepting(f"idle for {idle:.0f} s")
            continue
        for key, _mask in events:
            if key.data == "stop":
                with contextlib.suppress(BlockingIOError):
                    os.read(stop_r, 64)
                stop_accepting("asked to stop (SIGTERM)")
            elif key.data == "watched" and watched is not None:
                sel.unregister(watched)
                os.close(watched)
                watched = None
                stop_accepting("the process it watches ended")
            elif key.data == "accept" and accepting:
                conn, _ = listener.accept()
                last = time.monotonic()
                request = _take(conn)
                if request is None:
                    continue
                if stale(stamps):
                    _refuse(conn, request, "code changed")
                    stop_accepting("its code changed")
                    continue
                pid = os.fork()
                if pid == 0:  # the command: shed the warm process, then go back up and run
                    signal.set_wakeup_fd(-1)
                    sel.close()
                    for fd in (stop_r, stop_w):
                        os.close(fd)
                    if accepting:
                        listener.close()
                    for pidfd, (_pid, client) in runs.items():
                        os.close(pidfd)
                        client.close()
                    if watched is not None:
                        os.close(watched)
                    conn.close()
                    lock.close()
                    return request
                for fd in request["fds"]:
                    os.close(fd)
                print(f"forked {describe(request)} as pid {pid}", flush=True)
                pidfd = os.pidfd_open(pid)
                runs[pidfd] = (pid, conn)
                sel.register(pidfd, selectors.EVENT_READ, "run")
                with contextlib.suppress(OSError):  # a client gone: its command sees it
                    _send(conn, {"pid": pid})
            elif key.data == "run":  # a command ended
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
    """A command's request with its four descriptors, or None (dropped)."""
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
    if len(fds) != 4 or not isinstance(message.get("env"), dict) \
            or not isinstance(message.get("cwd"), str):
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


def adopt(request: dict[str, Any]) -> None:
    """In the fork: take the client's descriptors, environment and directory, and die
    with the client."""
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

    threading.Thread(target=client_alive, daemon=True, name="warm-client").start()
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])


# ------------------------------------------------------------------- the vowvault CLI

def cli_mode() -> str:
    """``VOWVAULT_WARM``: ``on`` (the default: use a warm process if one runs), ``auto``
    (also start one when none runs) or ``off``."""
    mode = os.environ.get("VOWVAULT_WARM", "on").lower()
    if mode in ("off", "0", "false", "no"):
        return "off"
    return "auto" if mode == "auto" else "on"


_AT_START: dict[str, str] | None = None  # the command's environment before it changed any


def remember_command_env(env: dict[str, str]) -> None:
    """The environment this command was started with (a fork: the client's)."""
    global _AT_START
    _AT_START = dict(env)


def command_env() -> dict[str, str]:
    """The environment this command was started with (a command may add to its own)."""
    return dict(os.environ) if _AT_START is None else dict(_AT_START)


def cli_fingerprint(env: dict[str, str] | None = None) -> str:
    return fingerprint("cli", command_env() if env is None else env, None, sys.executable)


COLD_COMMANDS = frozenset({"keys"})
"""Commands never forked: they can ask for a passphrase on the terminal (``/dev/tty``),
which a fork, in a session of its own, has not got."""


def command_words(args: list[str]) -> list[str]:
    """The command's words (``backup restore``), past the root's flags (which take no
    value); never an argument or an option's value."""
    i = 0
    while i < len(args) and args[i].startswith("-"):
        i += 1
    words: list[str] = []
    for arg in args[i:]:
        if arg.startswith("-") or len(words) == 2:
            break
        words.append(arg)
    return words


def cli_forward(args: list[str]) -> None:
    """Run ``vowvault ARGS`` in this environment's warm process, if there is one, and end
    as it ended; else return (the caller runs the command itself)."""
    remember_command_env(dict(os.environ))  # before the command adds to it (-v does)
    mode = cli_mode()
    if mode == "off" or not sys.platform.startswith("linux"):
        return
    if COLD_COMMANDS.intersection(command_words(args)[:1]):
        return
    where = runtime_dir(create=mode == "auto")
    if where is None:
        return
    if mode != "auto" and not any(n.endswith(".sock") for n in os.listdir(where)):
        return  # no warm process at all: nothing more to compute
    env = command_env()
    fp = cli_fingerprint(env)
    sock = connect(where / f"{fp}.sock") if (where / f"{fp}.sock").exists() else None
    if sock is None:
        if mode == "auto" and live_warm(where) < MAX_WARM:
            start_cli_warm(where, fp, env, watch=None)
        return
    try:
        cwd = os.getcwd()
    except OSError:  # the directory was removed: the command says so itself
        sock.close()
        return
    code = run_forked(sock, {"env": env, "cwd": cwd, "argv0": sys.argv[0], "argv": args})
    if code is not None:
        exit_like(code)


def start_cli_warm(where: Path, fp: str, env: dict[str, str], watch: int | None = None,
                   idle: float | None = None) -> None:
    argv = [sys.executable, "-m", "vowvault.cli.warmcli", "--cli", fp]
    if watch is not None:
        argv += ["--watch", str(watch)]
    if idle is not None:
        argv += ["--idle", str(idle)]
    start_warm(where, fp, argv, env, "/")


def cli_warm_pid(where: Path, fp: str) -> int | None:
    """The pid of this environment's warm CLI process, if one runs."""
    import fcntl

    try:
        with open(where / f"{fp}.lock") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError:  # held: alive
                return int(f.read().strip() or 0) or None
            return None
    except (OSError, ValueError):
        return None
