"""Every row of the exit-code table in docs/OPERATIONS.md, made to happen for real through
the CLI: one line on stderr (no traceback) and the documented code."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from cliutil import VOWVAULT, write_policy

ROOT = Path(__file__).resolve().parents[2]


def documented_codes() -> list[int]:
    text = (ROOT / "docs" / "OPERATIONS.md").read_text()
    table = text.split("### Exit codes", 1)[1].split("\n\n")[2]
    return [int(m) for m in re.findall(r"^\| (\d+) \|", table, re.M)]


def one_line(proc: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert fragment in lines[0], lines[0]


@pytest.fixture
def photos(cli, tmp_path: Path) -> dict[str, object]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "IMG_1.jpg").write_bytes(os.urandom(200_000))
    storage = tmp_path / "storage"
    cli("policies", "apply", str(write_policy(tmp_path / "p.yaml",
                                              f"{{kind: directory, path: {src}}}", storage)))
    first = cli("backup", "run", "photos", "--direct")
    return {"src": src, "storage": storage, "id": first.stdout.split()[1], "tmp": tmp_path}


def test_the_table_lists_exactly_the_codes_tested_here() -> None:
    tested = sorted({0, 1, 2, 3, 4, 5, 130, 143})
    assert documented_codes() == tested


def test_0_success(cli, photos) -> None:
    proc = cli("backup", "run", "photos", "--direct")
    assert proc.returncode == 0 and proc.stderr == ""
    assert cli("backup", "verify", photos["id"]).returncode == 0


def test_1_a_target_not_there(cli, photos) -> None:
    storage: Path = photos["storage"]  # type: ignore[assignment]
    storage.rename(storage.with_name("unmounted"))
    one_line(cli("backup", "run", "photos", "--direct", check=False), 1,
             "its repository marker is missing")


@pytest.mark.parametrize("args, fragment", [
    (("policies", "validate", "{tmp}/bad.yaml"), "bad.yaml:"),
    (("backup", "show", "00000000-0000-0000-0000-000000000000"), "no backup"),
    (("backup", "restore", "{id}", "--to-dir", "{src}"), "is not empty"),
    (("policies", "list", "--at", "next saturday"), "--at 'next saturday'"),
    (("backup", "run", "photos", "--direct", "--via-deployment"), "give one of them"),
])
def test_2_bad_input(cli, photos, args: tuple[str, ...], fragment: str) -> None:
    (photos["tmp"] / "bad.yaml").write_text("version: [1\n")  # type: ignore[operator]
    args = tuple(a.format(**photos) for a in args)
    one_line(cli(*args, check=False), 2, fragment)


def test_3_a_flipped_byte(cli, photos) -> None:
    storage: Path = photos["storage"]  # type: ignore[assignment]
    (data,) = [p for p in storage.rglob("data") if p.is_file()]
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    data.write_bytes(bytes(blob))
    proc = cli("backup", "verify", photos["id"], check=False)
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr and "damaged" in proc.stdout.lower() + proc.stderr


def test_4_the_catalog_gone(cli, cli_env, photos) -> None:
    (Path(cli_env["VOWVAULT_HOME"]) / "catalog.db").unlink()
    one_line(cli("backup", "list", check=False), 4, "catalog")


def test_5_completed_with_warnings(cli, cli_env, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to hand a file to another user")
    src = tmp_path / "warn-src"
    src.mkdir()
    (src / "ok.txt").write_text("fine")
    (src / "locked.txt").write_text("not for us")
    os.chown(src / "locked.txt", 65534, 65534)
    os.chmod(src / "locked.txt", 0o600)
    policy = write_policy(tmp_path / "w.yaml", f"{{kind: directory, path: {src}, "
                                               f"on_unreadable: warn}}", tmp_path / "st")
    cli("policies", "apply", str(policy))
    proc = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--",
                           VOWVAULT, "backup", "run", "photos", "--direct"],
                          capture_output=True, text=True, env=cli_env, timeout=120)
    assert proc.returncode == 5, proc.stderr
    assert "locked.txt: Permission denied" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"),
                                             (signal.SIGTERM, 143, "terminated")])
def test_130_and_143_a_signal_mid_backup(cli, cli_env, photos, sig: int, code: int,
                                         word: str) -> None:
    # A large sparse file: seconds of reading and compressing, no disk to speak of.
    with open(photos["src"] / "big.raw", "wb") as f:  # type: ignore[operator]
        f.truncate(3 << 30)
    proc = subprocess.Popen([VOWVAULT, "backup", "run", "photos", "--direct"], env=cli_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    db = Path(cli_env["VOWVAULT_HOME"]) / "catalog.db"
    deadline = time.monotonic() + 120
    while True:
        with sqlite3.connect(db) as conn:
            running = conn.execute("SELECT count(*) FROM backup_jobs WHERE status = 'IN_PROGRESS'"
                                   ).fetchone()[0]
        if running:
            break
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, (out, err)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and word in lines[0] and "Traceback" not in err, err
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM backup_jobs WHERE status = 'IN_PROGRESS'"
                            ).fetchone()[0] == 0


