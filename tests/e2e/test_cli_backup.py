"""`vowvault backup run`, `verify`, `restore` as a user runs them, and every fault the
pipeline issue names: one line on stderr, a non-zero exit, the job in the right status,
nothing left that looks restorable when it is not."""

from __future__ import annotations

import os
import sqlite3
import struct
import subprocess
from pathlib import Path

import pytest
from cliutil import write_policy
from trees import backup_files

FRAME_HEADER = 32


@pytest.fixture
def setup(cli, tmp_path: Path):
    """A photo store, a policy and one good backup."""
    src = tmp_path / "src"
    (src / "raw").mkdir(parents=True)
    (src / "raw" / "IMG_1.jpg").write_bytes(os.urandom(3_500_000))
    (src / "guests.json").write_text('{"guest": "Ada", "table": 1}\n' * 5000)
    storage = tmp_path / "storage"
    cli("policies", "apply", str(write_policy(tmp_path / "p.yaml",
                                              f"{{kind: directory, path: {src}}}", storage)))
    out = cli("backup", "run", "photos", "--direct").stdout
    backup_id = out.split()[1]
    return {"src": src, "storage": storage, "id": backup_id, "tmp": tmp_path}


def catalog(cli_env: dict[str, str]) -> sqlite3.Connection:
    return sqlite3.connect(Path(cli_env["VOWVAULT_HOME"]) / "catalog.db")


def status_of(cli_env: dict[str, str], backup_id: str) -> str:
    with catalog(cli_env) as db:
        return db.execute("SELECT status FROM backup_jobs WHERE id = ?",
                          (backup_id.replace("-", ""),)).fetchone()[0]


def object_path(storage: Path, kind: str) -> Path:
    (found,) = [p for p in storage.rglob(kind) if p.is_file()]
    return found


def records(blob: bytes) -> list[tuple[int, int]]:
    out, pos = [], FRAME_HEADER
    while pos < len(blob):
        (n,) = struct.unpack_from(">I", blob, pos)
        out.append((pos, 4 + n))
        pos += 4 + n
    return out


def one_line_error(proc: subprocess.CompletedProcess[str], code: int, fragment: str) -> None:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("vowvault: error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


def test_backup_list_verify_restore(cli, setup) -> None:
    listed = cli("backup", "list", "--policy", "photos").stdout
    assert setup["id"] in listed and "FULL" in listed and "COMPLETED" in listed
    assert "HOT" in listed
    assert "intact on 1 of 1 copies" in cli("backup", "verify", setup["id"][:8]).stdout
    out = setup["tmp"] / "restored"
    restored = cli("backup", "restore", setup["id"], "--to-dir", str(out)).stdout
    assert "BLAKE3 of each checked" in restored
    assert (out / "guests.json").read_bytes() == (setup["src"] / "guests.json").read_bytes()
    shown = cli("backup", "show", setup["id"]).stdout
    assert "VERIFIED" in shown and "manifest" in shown


TAMPERINGS = {
    "flipped byte": lambda blob: blob[:5000] + bytes([blob[5000] ^ 1]) + blob[5001:],
    "truncated": lambda blob: blob[:len(blob) - 700],
    "frames swapped": lambda blob: _swap(blob, 0, 1),
}


def _swap(blob: bytes, i: int, j: int) -> bytes:
    recs = records(blob)
    (a, la), (b, lb) = recs[i], recs[j]
    return blob[:a] + blob[b:b + lb] + blob[a + la:b] + blob[a:a + la] + blob[b + lb:]


@pytest.mark.parametrize("how", sorted(TAMPERINGS))
def test_tampered_data_is_corrupted_not_restorable(cli, cli_env, setup, how: str) -> None:
    data = object_path(setup["storage"], "data")
    data.write_bytes(TAMPERINGS[how](data.read_bytes()))
    out = setup["tmp"] / "restored"
    restore = cli("backup", "restore", setup["id"], "--to-dir", str(out), check=False)
    one_line_error(restore, 3, "data object")
    # Nothing half-restored is left behind, only the marker saying so.
    assert [p.name for p in out.iterdir()] == [".vowvault-incomplete"]
    verify = cli("backup", "verify", setup["id"], check=False)
    one_line_error(verify, 3, f"backup {setup['id']} is corrupted")
    assert status_of(cli_env, setup["id"]) == "CORRUPTED"
    refused = cli("backup", "restore", setup["id"], "--to-dir", str(out), check=False)
    one_line_error(refused, 1, "is CORRUPTED")


def test_missing_manifest(cli, cli_env, setup) -> None:
    object_path(setup["storage"], "manifest").unlink()
    proc = cli("backup", "verify", setup["id"], check=False)
    one_line_error(proc, 3, "manifest is missing")
    assert status_of(cli_env, setup["id"]) == "CORRUPTED"


def test_wrong_key(cli, cli_env, setup) -> None:
    (key,) = (Path(cli_env["VOWVAULT_HOME"]) / "keys").rglob("kek-v1.key")
    key.write_bytes(os.urandom(32))
    for args in (("backup", "verify", setup["id"]),
                 ("backup", "restore", setup["id"], "--to-dir", str(setup["tmp"] / "r"))):
        proc = cli(*args, check=False)
        one_line_error(proc, 3, "does not open the data key")
    assert status_of(cli_env, setup["id"]) == "COMPLETED"  # the data is fine; the key is not


def test_missing_directory(cli, cli_env, tmp_path: Path) -> None:
    cli("policies", "apply", str(write_policy(tmp_path / "p.yaml",
                                              f"{{kind: directory, path: {tmp_path}/nope}}",
                                              tmp_path / "storage")))
    proc = cli("backup", "run", "photos", "--direct", check=False)
    one_line_error(proc, 1, f"directory {tmp_path}/nope does not exist")
    with catalog(cli_env) as db:
        assert db.execute("SELECT status FROM backup_jobs").fetchall() == [("FAILED",)]
    assert not backup_files(tmp_path / "storage")


def test_unreachable_database(cli, cli_env, tmp_path: Path) -> None:
    cli("policies", "apply", str(write_policy(
        tmp_path / "p.yaml", "{kind: postgres, dsn: 'postgresql://postgres@127.0.0.1:1/venue'}",
        tmp_path / "storage")))
    proc = cli("backup", "run", "photos", "--direct", check=False)
    one_line_error(proc, 1, "cannot connect to postgresql://postgres@127.0.0.1:1/venue")


def test_disk_full_on_the_target(cli, cli_env, tmp_path: Path) -> None:
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        src = tmp_path / "src"
        src.mkdir()
        (src / "video.mp4").write_bytes(os.urandom(6_000_000))
        cli("policies", "apply", str(write_policy(tmp_path / "p.yaml",
                                                  f"{{kind: directory, path: {src}}}", mnt)))
        proc = cli("backup", "run", "photos", "--direct", check=False)
        one_line_error(proc, 1, f"file://{mnt} is full")
        with catalog(cli_env) as db:
            assert db.execute("SELECT status FROM backup_jobs").fetchall() == [("FAILED",)]
        assert backup_files(mnt) == []
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_unreadable_file_is_reported_never_skipped(cli, cli_env, tmp_path: Path) -> None:
    """A file root cannot read: owned by another user, mode 0600, and vowvault run without
    the capabilities that let root ignore permissions."""
    if os.geteuid() != 0:
        pytest.skip("needs root to hand the file to another user")
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_text("fine")
    (src / "secret.txt").write_text("not for root")
    os.chown(src / "secret.txt", 65534, 65534)
    os.chmod(src / "secret.txt", 0o600)
    storage = tmp_path / "storage"
    cli("policies", "apply", str(write_policy(tmp_path / "p.yaml",
                                              f"{{kind: directory, path: {src}}}", storage)))
    vowvault = Path(__import__("sys").executable).with_name("vowvault")
    proc = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--",
                           str(vowvault), "backup", "run", "photos", "--direct"],
                          capture_output=True, text=True, env=cli_env, timeout=120)
    one_line_error(proc, 1, "secret.txt: Permission denied")
    with catalog(cli_env) as db:
        assert db.execute("SELECT status FROM backup_jobs").fetchall() == [("FAILED",)]
    assert not backup_files(storage)


def test_emergency_recovery_is_for_emergency_roles_confirmed_and_recorded(
        cli, cli_env, setup) -> None:
    target = setup["tmp"] / "production"
    target.mkdir()
    (target / "live.txt").write_text("what production holds now")
    base = ("backup", "restore", setup["id"], "--to-dir", str(target), "--emergency")
    one_line_error(cli(*base, check=False), 2, "needs --role")
    one_line_error(cli(*base, "--role", "member", "--confirm", setup["id"], check=False), 2,
                   "needs the role admin, owner or emergency_contact, not 'member'")
    one_line_error(cli(*base, "--role", "admin", check=False), 2,
                   f"confirm with --confirm {setup['id']}")
    assert (target / "live.txt").exists()  # nothing touched so far
    done = cli(*base, "--role", "emergency_contact", "--confirm", setup["id"])
    assert "restored backup" in done.stdout
    assert "CRITICAL" in done.stderr and "EMERGENCY recovery" in done.stderr
    assert (target / "guests.json").exists()
    with catalog(cli_env) as db:
        rows = db.execute("SELECT recovery_type, is_emergency_recovery, requester_role, status "
                          "FROM recovery_jobs").fetchall()
        audit = [r[0] for r in db.execute("SELECT action FROM audit_log")]
    assert rows == [("EMERGENCY", 1, "emergency_contact", "COMPLETED")]
    assert audit.count("restore.emergency") == 2  # started, completed


def test_user_mistakes_at_restore_and_drill_are_exit_2(cli, setup) -> None:
    """A non-empty target without --force, a file in the way, an unknown policy: each is
    the user's to fix (exit 2, one line), not a failure."""
    full = setup["tmp"] / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    one_line_error(cli("backup", "restore", setup["id"], "--to-dir", str(full), check=False), 2,
                   "is not empty")
    assert (full / "keep.txt").read_text() == "mine"
    one_line_error(cli("drill", "no-such-policy", check=False), 2,
                   "no policy named 'no-such-policy'")
