"""Faults made for real against the real CLI: signals, kills, a full disk.

- SIGTERM stops a backup like Ctrl-C: stages stopped, objects removed, the job FAILED
  "terminated", one line, exit 143; Ctrl-C likewise with exit 130;
- a CLI in Prefect mode killed with SIGTERM or SIGKILL takes its temporary Prefect server
  with it;
- a restore killed half-way through a file leaves no truncated file under a real name, a
  marker at the top of the target, and a recovery the reaper marks FAILED;
- a restore into a filling tmpfs fails in one line, marked, recorded FAILED;
- a forced or emergency restore replaces the target: what the backup does not hold goes.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from cliutil import VOWVAULT, write_policy
from trees import backup_files, tree_state

MiB = 1 << 20


def make_source(root: Path, mib: int, files: int = 1) -> None:
    root.mkdir(parents=True)
    for i in range(files):
        with open(root / f"film-{i}.mp4", "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(MiB))


def db(env: dict[str, str]) -> sqlite3.Connection:
    return sqlite3.connect(Path(env["VOWVAULT_HOME"]) / "catalog.db")


def wait_for(predicate, timeout: float = 60, what: str = "it") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} never happened")
        time.sleep(0.02)


def uploading(storage: Path) -> bool:
    """A backup's data object is being written (not just the target's marker)."""
    return any(p.name.startswith(".tmp-data.") for p in storage.rglob(".tmp-*"))


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def photos(cli, cli_env, tmp_path: Path) -> dict[str, Path]:
    src, storage = tmp_path / "src", tmp_path / "storage"
    make_source(src, 160)
    cli("policies", "apply", str(write_policy(tmp_path / "p.yaml",
                                              f"{{kind: directory, path: {src}}}", storage)))
    return {"src": src, "storage": storage}


@pytest.mark.parametrize(("sig", "code", "words"), [(signal.SIGTERM, 143, "terminated"),
                                                    (signal.SIGINT, 130, "interrupted")])
def test_a_signal_stops_a_backup_cleanly(cli_env, photos, sig: int, code: int,
                                         words: str) -> None:
    proc = subprocess.Popen([VOWVAULT, "backup", "run", "photos", "--direct"], env=cli_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: uploading(photos["storage"]), what="the upload")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, (out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in err
    with db(cli_env) as conn:
        status, message = conn.execute("SELECT status, error_message FROM backup_jobs"
                                        ).fetchone()
    assert status == "FAILED" and words in message
    assert backup_files(photos["storage"]) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_cli_in_prefect_mode_takes_its_prefect_server_with_it(cli, cli_env, photos,
                                                                sig: int) -> None:
    env = {k: v for k, v in cli_env.items() if not k.startswith("PREFECT_")}
    proc = subprocess.Popen([VOWVAULT, "backup", "run", "photos"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    servers: list[int] = []

    def cmdline(pid: int) -> bytes:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:  # a short-lived child gone between the listing and the read
            return b""

    def server_started() -> bool:
        servers[:] = [c for c in children(proc.pid) if b"server" in cmdline(c)]
        return bool(servers)

    wait_for(server_started, 120, "the temporary Prefect server")
    wait_for(lambda: uploading(photos["storage"]), 180, "the upload")
    proc.send_signal(sig)
    proc.communicate(timeout=120)
    wait_for(lambda: not any(alive(s) for s in servers), 30, "the server's end")
    if sig == signal.SIGTERM:
        assert proc.returncode == 143
        with db(cli_env) as conn:
            status, message = conn.execute("SELECT status, error_message FROM backup_jobs"
                                           ).fetchone()
        assert status == "FAILED" and "terminated" in message
    else:
        assert "reaped 1" in cli("backup", "reap").stdout  # its pid is gone: at once
    assert backup_files(photos["storage"]) == []


@pytest.fixture
def backed_up(cli, cli_env, tmp_path: Path) -> dict[str, object]:
    src, storage = tmp_path / "src", tmp_path / "storage"
    make_source(src, 48, files=3)
    (src / "notes.txt").write_text("first dance\n")
    cli("policies", "apply", str(write_policy(tmp_path / "p.yaml",
                                              f"{{kind: directory, path: {src}}}", storage)))
    backup_id = cli("backup", "run", "photos", "--direct").stdout.split()[1]
    return {"src": src, "id": backup_id}


def _size(path: Path) -> int:
    """0 for a file renamed into place (or removed) between the listing and the look."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def test_a_killed_restore_leaves_no_truncated_file_and_is_reaped(cli, cli_env, tmp_path: Path,
                                                                 backed_up) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen([VOWVAULT, "backup", "restore", str(backed_up["id"]), "--to-dir",
                             str(out)],
                            env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def mid_file() -> bool:
        return any(p.name.startswith(".vowvault-tmp") and _size(p) > 8 * MiB
                   for p in out.glob(".*")) if out.exists() else False

    wait_for(mid_file, what="a file half written")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / ".vowvault-incomplete").exists()
    src_files = {p.name: p.stat().st_size for p in Path(str(backed_up["src"])).iterdir()}
    for p in out.iterdir():  # whatever has its real name is whole
        if not p.name.startswith("."):
            assert p.stat().st_size == src_files[p.name], p.name
    with db(cli_env) as conn:
        assert conn.execute("SELECT status FROM recovery_jobs").fetchone() == ("IN_PROGRESS",)
    assert "reaped 1" in cli("backup", "reap").stdout
    with db(cli_env) as conn:
        status, message = conn.execute("SELECT status, error_message FROM recovery_jobs"
                                       ).fetchone()
    assert status == "FAILED" and "incomplete" in message
    # Done again, over what the killed one left: complete, and the marker gone.
    cli("backup", "restore", str(backed_up["id"]), "--to-dir", str(out), "--force")
    assert tree_state(out) == tree_state(Path(str(backed_up["src"])))


def test_a_full_disk_during_a_restore_is_one_line_and_marked(cli, cli_env, tmp_path: Path,
                                                            backed_up) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(small)], check=True)
    try:
        proc = cli("backup", "restore", str(backed_up["id"]), "--to-dir", str(small / "out"),
                   check=False)
        assert proc.returncode == 1, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "No space left on device" in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
        left = sorted(p.name for p in (small / "out").iterdir())
        assert left == [".vowvault-incomplete"]  # nothing that looks restored
        assert "No space left" in (small / "out" / ".vowvault-incomplete").read_text()
        with db(cli_env) as conn:
            assert conn.execute("SELECT status FROM recovery_jobs").fetchone() == ("FAILED",)
    finally:
        subprocess.run(["umount", str(small)], check=False)


@pytest.mark.parametrize("how", ["force", "emergency"])
def test_a_replacing_restore_replaces_the_target(cli, tmp_path: Path, backed_up,
                                                 how: str) -> None:
    out = tmp_path / "out"
    (out / "old" / "deep").mkdir(parents=True)
    (out / "stale.txt").write_text("not in the backup\n")
    (out / "old" / "deep" / "x.bin").write_bytes(b"x")
    (out / "notes.txt").write_text("an older version\n")
    backup_id = str(backed_up["id"])
    args = ["--force"] if how == "force" else [
        "--emergency", "--role", "emergency_contact", "--confirm", backup_id]
    cli("backup", "restore", backup_id, "--to-dir", str(out), *args)
    assert tree_state(out) == tree_state(Path(str(backed_up["src"])))
