"""Nothing deleted that is still needed, nothing called restorable that is not: the faults
of the copies-and-verification issue as an operator meets them, through the CLI (the other
cases, in-process: tests/integration/test_copy_health.py).

- a target that is briefly unavailable (a NAS not mounted: the directory is there and
  empty) is unavailable, never corrupted, gets no new marker, and holds retention back;
- a flipped byte in one of two copies: restore uses the intact copy (and says so), verify
  says which copy is damaged, retention keeps everything, repair rewrites it.
"""

from __future__ import annotations

import os
import sqlite3
import textwrap
from pathlib import Path

from trees import tree_state

POLICY = """\
version: 1
organizations:
  - {{slug: lumiere, name: Lumiere, vendor_type: photographer}}
policies:
  - name: photos
    organization: lumiere
    source: {{kind: directory, path: {src}}}
    backup_type: {backup_type}
    schedule: {{cron: "0 2 * * *", timezone: UTC}}
    peak_season: {{multiplier: 1}}
    retention: {{days: 365, min_verified: 3}}
    storage:
{storage}
"""


def write_policy(tmp: Path, src: Path, targets: list[Path], backup_type: str = "full") -> Path:
    storage = "\n".join(f'      - {{url: "file://{t}"}}' for t in targets)
    path = tmp / "p.yaml"
    path.write_text(POLICY.format(src=src, backup_type=backup_type, storage=storage))
    return path


def make_src(root: Path) -> None:
    (root / "album").mkdir(parents=True)
    for i in range(4):
        (root / "album" / f"IMG_{i}.jpg").write_bytes(os.urandom(1_500_000))
    (root / "guests.json").write_text('{"guest": "Ada", "table": 1}\n' * 3000)


def data_of(target: Path, backup_id: str) -> Path:
    (found,) = [p for p in target.rglob("data") if p.parent.name == backup_id]
    return found


def flip(path: Path, at: int) -> None:
    blob = bytearray(path.read_bytes())
    blob[at] ^= 0x40
    path.write_bytes(bytes(blob))


def db(cli_env: dict[str, str]) -> sqlite3.Connection:
    return sqlite3.connect(Path(cli_env["VOWVAULT_HOME"]) / "catalog.db")


def status(cli_env: dict[str, str], backup_id: str) -> str:
    with db(cli_env) as conn:
        return conn.execute("SELECT status FROM backup_jobs WHERE id = ?",
                            (backup_id.replace("-", ""),)).fetchone()[0]


def health(cli_env: dict[str, str], backup_id: str) -> dict[str, str]:
    with db(cli_env) as conn:
        rows = conn.execute("SELECT storage_url, health FROM backup_storage WHERE "
                            "backup_job_id = ? AND object_kind = 'DATA'",
                            (backup_id.replace("-", ""),)).fetchall()
    return {url.rsplit("/", 1)[-1]: h for url, h in rows}


def backup(cli) -> str:
    return cli("backup", "run", "photos", "--direct").stdout.split()[1]


def test_an_unmounted_target_is_unavailable_not_corrupted(cli, cli_env, tmp_path: Path) -> None:
    src, nas = tmp_path / "src", tmp_path / "nas"
    make_src(src)
    cli("policies", "apply", str(write_policy(tmp_path, src, [nas])))
    ids = [backup(cli) for _ in range(2)]
    nas.rename(tmp_path / "nas-away")
    nas.mkdir()  # the mount point, empty: the NAS is not mounted

    verify = cli("backup", "verify", ids[0], check=False)
    assert verify.returncode == 1, verify.stdout + verify.stderr
    assert "UNREACHABLE" in verify.stdout and "marker is missing" in verify.stdout
    assert all(status(cli_env, i) == "COMPLETED" for i in ids)
    restore = cli("backup", "restore", ids[0], "--to-dir", str(tmp_path / "out"), check=False)
    assert restore.returncode == 1 and "unavailable" in restore.stderr
    new = cli("backup", "run", "photos", "--direct", check=False)
    assert new.returncode == 1 and "marker is missing" in new.stderr
    assert list(nas.iterdir()) == []  # no new marker over an empty mount point
    planned = cli("retention", "--dry-run").stdout
    assert "delete 0" in planned and "nothing is deleted while a target is unavailable" in \
        planned
    cli("retention", "--force")
    assert all(status(cli_env, i) == "COMPLETED" for i in ids)

    nas.rmdir()
    (tmp_path / "nas-away").rename(nas)  # mounted again
    assert "intact on 1 of 1 copies" in cli("backup", "verify", ids[0]).stdout
    cli("backup", "restore", ids[0], "--to-dir", str(tmp_path / "out"))
    assert tree_state(tmp_path / "out") == tree_state(src)
    cli("retention", "--force")
    assert all(status(cli_env, i) == "COMPLETED" for i in ids)  # 365 days: all kept


def test_a_flipped_byte_in_one_copy(cli, cli_env, tmp_path: Path) -> None:
    src, a, b = tmp_path / "src", tmp_path / "a", tmp_path / "b"
    make_src(src)
    cli("policies", "apply", str(write_policy(tmp_path, src, [a, b])))
    ids = [backup(cli) for _ in range(2)]
    flip(data_of(a, ids[0]), 4096)  # the primary's data, inside its first frame

    out = tmp_path / "out"
    restored = cli("backup", "restore", ids[0], "--to-dir", str(out))
    assert tree_state(out) == tree_state(src)
    assert f"file://{b}" in restored.stdout and "could not serve" in restored.stderr
    assert health(cli_env, ids[0])["a"] == "DAMAGED"  # what the restore found is recorded

    verify = cli("backup", "verify", ids[0], check=False)
    assert verify.returncode == 3
    assert f"file://{a}: DAMAGED" in verify.stdout and f"file://{b}: intact" in verify.stdout
    assert "restorable from the other copies" in verify.stderr and "repair" in verify.stderr
    assert status(cli_env, ids[0]) == "COMPLETED"
    cli("retention", "--force")
    assert all(status(cli_env, i) == "COMPLETED" for i in ids)

    repaired = cli("backup", "repair", ids[0]).stdout
    assert f"file://{a}: REPAIRED" in repaired
    assert "intact on 2 of 2 copies" in cli("backup", "verify", ids[0]).stdout
    assert health(cli_env, ids[0]) == {"a": "INTACT", "b": "INTACT"}


def test_policy_verification_settings_are_checked(cli, tmp_path: Path) -> None:
    src = tmp_path / "src"
    make_src(src)
    bad = write_policy(tmp_path, src, [tmp_path / "a"]).read_text().replace(
        "    retention:", "    verification: {max_age_days: 10, scrub_cycle_days: 20}\n"
                         "    retention:")
    (tmp_path / "bad.yaml").write_text(textwrap.dedent(bad))
    proc = cli("policies", "validate", str(tmp_path / "bad.yaml"), check=False)
    assert proc.returncode == 2 and "scrub_cycle_days 20 exceeds max_age_days 10" in \
        proc.stderr
