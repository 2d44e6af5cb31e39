"""`vowvault warm`: commands forked from a warm process end exactly as cold ones do (output,
errors, exit codes, the terminal, signals), and only when nothing they read can differ.
Real processes throughout: the console script, the warm process, a pty."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cliutil import VOWVAULT, write_policy


def _forks(runtime: Path) -> list[str]:
    lines: list[str] = []
    for log in runtime.glob("vowvault/*.log"):
        lines += [ln for ln in log.read_text().splitlines() if ln.startswith("forked ")]
    return lines


def _until(predicate, seconds: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def warm_env(cli_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment with its own runtime directory (short: a socket's path is at most
    107 bytes) and a warm process started by `vowvault warm`; stopped at the end."""
    runtime = Path(tempfile.mkdtemp(prefix="vvw", dir="/tmp"))
    env = {**cli_env, "XDG_RUNTIME_DIR": str(runtime)}
    env.pop("VOWVAULT_WARM", None)
    started = subprocess.run([VOWVAULT, "warm", "--idle", "120"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    assert "ready in" in started.stdout
    try:
        yield env
    finally:
        subprocess.run([VOWVAULT, "warm", "--stop"], env=env, capture_output=True, timeout=60)
        _until(lambda: not list(runtime.glob("vowvault/*.sock")), 30, "the warm process to stop")
        shutil.rmtree(runtime, ignore_errors=True)


def _run(env: dict[str, str], *args: str, cold: bool = False,
         **kw: object) -> subprocess.CompletedProcess[str]:
    e = {**env, "VOWVAULT_WARM": "off"} if cold else env
    return subprocess.run([VOWVAULT, *args], env=e, capture_output=True, text=True,
                          timeout=120, **kw)  # type: ignore[call-overload]


def test_forked_commands_end_as_cold_ones_do(warm_env: dict[str, str], tmp_path: Path) -> None:
    """The same output, errors and exit codes, command by command, over a session that
    writes the catalog and storage through forks (and reads them back cold)."""
    runtime = Path(warm_env["XDG_RUNTIME_DIR"])
    src = tmp_path / "src"
    (src / "album").mkdir(parents=True)
    for i in range(5):
        (src / "album" / f"IMG_{i}.jpg").write_bytes(os.urandom(50_000 + i))
    policy = write_policy(tmp_path / "p.yaml", f"{{kind: directory, path: {src}}}",
                          tmp_path / "storage")
    applied = _run(warm_env, "policies", "apply", str(policy))
    assert applied.returncode == 0, applied.stderr
    ran = _run(warm_env, "backup", "run", "photos", "--direct")
    assert ran.returncode == 0, ran.stderr
    backup_id = ran.stdout.split()[1]
    restored = _run(warm_env, "backup", "restore", backup_id, "--to-dir", str(tmp_path / "r"))
    assert restored.returncode == 0, restored.stderr
    assert (tmp_path / "r" / "album" / "IMG_3.jpg").read_bytes() == \
        (src / "album" / "IMG_3.jpg").read_bytes()
    assert len(_forks(runtime)) == 3

    commands = [
        ("backup", "list"), ("backup", "list", "--json"), ("backup", "show", backup_id[:8]),
        ("backup", "show", "deadbeef00"), ("backup", "lst"), ("policies", "list"),
        ("policies", "apply", str(tmp_path / "missing.yaml")), ("-v", "backup", "list"),
        ("backup", "verify", backup_id), ("backup", "restore", backup_id, "--to-dir",
                                          str(tmp_path / "r")),  # not empty: refused
        ("catalog", "current"), ("backup", "show"), ("orgs", "list"),
    ]
    for args in commands:
        before = len(_forks(runtime))
        warm = _run(warm_env, *args)
        cold = _run(warm_env, *args, cold=True)
        assert len(_forks(runtime)) == before + 1, args  # the first was forked, the second not
        assert (warm.returncode, warm.stderr) == (cold.returncode, cold.stderr), args
        if "verify" not in args:  # verify prints its own duration
            assert warm.stdout == cold.stdout, args
    listed = json.loads(_run(warm_env, "backup", "list", "--json").stdout)
    assert [b["id"] for b in listed] == [backup_id]
    # Only the command's words are logged, never its arguments (a DSN, a path)
    assert not any(str(tmp_path) in line or backup_id in line for line in _forks(runtime))


def test_another_environment_or_a_passphrase_command_starts_cold(
        warm_env: dict[str, str]) -> None:
    runtime = Path(warm_env["XDG_RUNTIME_DIR"])
    before = len(_forks(runtime))
    for extra in ({"VOWVAULT_ACTOR": "someone-else"}, {"TZ": "Europe/Paris"},
                  {"VOWVAULT_WARM": "off"}):
        done = _run({**warm_env, **extra}, "backup", "list")
        assert done.returncode == 0, done.stderr
    # What a fork would inherit from the warm process instead of its caller: the umask,
    # a resource limit, the scheduling priority
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    mask = os.umask(0o022)
    os.umask(mask)
    other = 0o077 if mask != 0o077 else 0o027
    for change in (lambda: os.umask(other),
                   lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (max(64, soft // 2), hard)),
                   lambda: os.nice(1)):
        done = _run(warm_env, "backup", "list", preexec_fn=change)
        assert done.returncode == 0, done.stderr
    # keys commands may ask for a passphrase on /dev/tty, which a fork has not got
    assert _run(warm_env, "keys", "list").returncode in (0, 1)
    assert len(_forks(runtime)) == before
    # The shell's own per-command variables do not matter
    assert _run({**warm_env, "OLDPWD": "/", "_": "/usr/bin/env"}, "backup", "list",
                cwd="/").returncode == 0
    assert len(_forks(runtime)) == before + 1


def test_a_fork_sees_the_terminal_as_a_cold_command_does(warm_env: dict[str, str],
                                                          tmp_path: Path) -> None:
    """Colours and width come from the command's own terminal, not the warm process's
    log file: the bytes written to a pty are the same forked and cold."""
    env = {k: v for k, v in warm_env.items() if k not in ("NO_COLOR", "COLUMNS")}
    env["TERM"] = "xterm-256color"
    policy = write_policy(tmp_path / "p.yaml", f"{{kind: directory, path: {tmp_path}}}",
                          tmp_path / "storage")
    assert _run(warm_env, "policies", "apply", str(policy), cold=True).returncode == 0

    def on_pty(extra: dict[str, str]) -> bytes:
        leader, follower = pty.openpty()
        proc = subprocess.Popen([VOWVAULT, "policies", "list"], env={**env, **extra},
                                stdin=follower, stdout=follower, stderr=follower)
        os.close(follower)
        out = b""
        while True:
            ready, _, _ = select.select([leader], [], [], 60)
            if not ready:
                break
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the other side closed
                break
            if not chunk:
                break
            out += chunk
        os.close(leader)
        assert proc.wait(60) == 0, out
        return out

    runtime = Path(warm_env["XDG_RUNTIME_DIR"])
    assert _run(env, "warm", "--idle", "60").returncode == 0  # this environment's own
    try:
        before = len(_forks(runtime))
        forked = on_pty({})
        assert len(_forks(runtime)) == before + 1
        cold = on_pty({"VOWVAULT_WARM": "off"})
    finally:
        _run(env, "warm", "--stop")
    assert b"\x1b[" in cold  # a terminal: styled
    assert forked == cold


def test_signals_reach_the_fork_and_it_dies_with_its_client(warm_env: dict[str, str],
                                                            tmp_path: Path) -> None:
    """Ctrl-C to the client interrupts the forked command (exit 130, its message); a
    client killed outright takes its fork with it."""
    fifo = tmp_path / "policy.fifo"
    os.mkfifo(fifo)  # reading it blocks until a writer comes: a command that waits
    runtime = Path(warm_env["XDG_RUNTIME_DIR"])
    before = len(_forks(runtime))
    proc = subprocess.Popen([VOWVAULT, "policies", "apply", str(fifo)], env=warm_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _until(lambda: len(_forks(runtime)) == before + 1, 30, "the fork")
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted (Ctrl-C)" in err

    proc = subprocess.Popen([VOWVAULT, "policies", "apply", str(fifo)], env=warm_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _until(lambda: len(_forks(runtime)) == before + 2, 30, "the second fork")
    pid = int(_forks(runtime)[-1].rsplit(" ", 1)[1])
    os.kill(pid, 0)  # the fork runs
    proc.kill()
    proc.wait(30)

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    _until(gone, 30, "the fork to die with its client")


def test_stop_ends_it_and_commands_start_cold_again(warm_env: dict[str, str]) -> None:
    runtime = Path(warm_env["XDG_RUNTIME_DIR"])
    again = _run(warm_env, "warm")
    assert "a warm process runs for this environment" in again.stdout  # one per environment
    stopped = _run(warm_env, "warm", "--stop")
    assert stopped.returncode == 0 and "stops" in stopped.stdout
    _until(lambda: not list(runtime.glob("vowvault/*.sock")), 30, "the socket to go")
    before = len(_forks(runtime))
    assert _run(warm_env, "backup", "list").returncode == 0
    assert len(_forks(runtime)) == before
    assert "no warm process runs" in _run(warm_env, "warm", "--stop").stdout
