"""Moves, renames and copies inside a policy's tree are not new data (issue 20, item 3): an
incremental references the parent's bytes for a file found elsewhere in the parent (the same
inode, size, mtime and ctime; or the same size, mtime and SHA-256), and a file that only
looks like one (same size and mtime, other bytes) is stored. Real engine, local storage,
SQLite catalog; every backup of a chain restored and compared with the tree it was taken
of."""

from __future__ import annotations

import os
import random
import shutil
import uuid
from pathlib import Path

import pytest
from trees import tree_state

from vowvault.catalog.models import BackupJob
from vowvault.engine.backup import run_backup
from vowvault.engine.context import Context
from vowvault.engine.restore import restore_backup
from vowvault.engine.verify import verify_backup


def source_yaml(path: Path) -> str:
    return f"{{kind: directory, path: {path}}}"


def info(ctx: Context, job_id: str) -> dict:
    with ctx.catalog.read() as s:
        job = s.get(BackupJob, uuid.UUID(job_id))
        return dict(job.source_info or {})


def restores_to(ctx: Context, job_id: str, state: dict, out: Path) -> None:
    restore_backup(ctx, job_id, to_dir=out)
    assert tree_state(out) == state


def album(root: Path, n: int = 6, size: int = 300_000) -> None:
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"IMG_{i:04d}.jpg").write_bytes(os.urandom(size + i))


def test_a_renamed_folder_is_referenced_not_read_or_stored(ctx: Context, policy,
                                                           tmp_path: Path) -> None:
    src = tmp_path / "src"
    album(src / "2027-06-12 Smith")
    (src / "notes.txt").write_text("first dance at 21:00\n")
    name = policy("photos", source_yaml(src), backup_type="incremental")
    full = run_backup(ctx, name)
    (src / "2027-06-12 Smith").rename(src / "2027-06-12 Smith & Jones")  # a folder renamed
    (src / "moved").mkdir()
    (src / "notes.txt").rename(src / "moved" / "notes.txt")  # a file moved (ctime changes)
    state = tree_state(src)
    inc = run_backup(ctx, name)
    assert inc.backup_type == "INCREMENTAL"
    assert inc.source_bytes == 0  # nothing stored again
    i = info(ctx, inc.job_id)
    assert i["files_moved"] == 7 and i["files_unchanged"] == 0
    assert i["bytes_referenced"] == sum(300_000 + k for k in range(6)) + 21
    assert set(i["references"]) == {full.job_id}
    restores_to(ctx, inc.job_id, state, tmp_path / "out")
    assert verify_backup(ctx, inc.job_id).intact


def test_a_copy_with_its_times_is_referenced_and_a_look_alike_is_stored(
        ctx: Context, policy, tmp_path: Path) -> None:
    src = tmp_path / "src"
    album(src / "album", n=2)
    name = policy("photos", source_yaml(src), backup_type="incremental")
    run_backup(ctx, name)
    original = src / "album" / "IMG_0000.jpg"
    shutil.copy2(original, src / "album" / "IMG_0000 (copy).jpg")  # new inode, same times
    # Same size and mtime as IMG_0001.jpg, other bytes: must be read, compared and stored.
    look_alike = src / "album" / "IMG_0001 (edited).jpg"
    look_alike.write_bytes(os.urandom(300_001))
    st = (src / "album" / "IMG_0001.jpg").stat()
    os.utime(look_alike, ns=(st.st_atime_ns, st.st_mtime_ns))
    state = tree_state(src)
    inc = run_backup(ctx, name)
    i = info(ctx, inc.job_id)
    assert inc.source_bytes == 300_001  # only the look-alike
    assert i["files_moved"] == 1 and i["files_unchanged"] == 2
    restores_to(ctx, inc.job_id, state, tmp_path / "out")
    out = tmp_path / "out" / "album"
    assert (out / "IMG_0001 (edited).jpg").read_bytes() == look_alike.read_bytes()
    assert (out / "IMG_0000 (copy).jpg").read_bytes() == original.read_bytes()


def test_a_reused_inode_with_the_old_size_and_mtime_is_stored(ctx: Context, policy,
                                                              tmp_path: Path) -> None:
    """A file deleted and another written in its place (often the same inode number) with
    the same size and an mtime set back to the old one: only a ctime or the bytes tell
    them apart, and the bytes are what is kept."""
    src = tmp_path / "src"
    src.mkdir()
    first = src / "guests.csv"
    first.write_bytes(b"Ada,table 1\n" * 5000)
    name = policy("lists", source_yaml(src), backup_type="incremental")
    run_backup(ctx, name)
    st = first.stat()
    first.unlink()
    second = src / "guests-final.csv"
    second.write_bytes(b"Bob,table 2\n" * 5000)  # the same size
    os.utime(second, ns=(st.st_atime_ns, st.st_mtime_ns))
    state = tree_state(src)
    inc = run_backup(ctx, name)
    assert inc.source_bytes == 60_000
    assert info(ctx, inc.job_id)["files_moved"] == 0
    restores_to(ctx, inc.job_id, state, tmp_path / "out")


def test_a_moved_file_refers_to_the_backup_that_holds_its_bytes(ctx: Context, policy,
                                                                tmp_path: Path) -> None:
    """Moved twice over a chain: the third backup refers straight to the full, and keeps
    the full referenced (retention and verify follow references)."""
    src = tmp_path / "src"
    album(src / "a", n=1)
    name = policy("photos", source_yaml(src), backup_type="incremental")
    full = run_backup(ctx, name)
    (src / "a").rename(src / "b")
    second = run_backup(ctx, name)
    (src / "b" / "IMG_0000.jpg").rename(src / "b" / "cover.jpg")
    state = tree_state(src)
    third = run_backup(ctx, name)
    assert (second.source_bytes, third.source_bytes) == (0, 0)
    assert set(info(ctx, third.job_id)["references"]) == {full.job_id}
    restores_to(ctx, third.job_id, state, tmp_path / "out")


@pytest.mark.parametrize("seed", [1, 7, 20261203])
def test_random_moves_copies_and_edits_restore_every_backup_of_the_chain(
        ctx: Context, policy, tmp_path: Path, seed: int) -> None:
    """Generated: rounds of random renames of files and folders, copies with and without
    their times, in-place edits, same-size rewrites with the mtime put back, deletions and
    new files; each backup restores to exactly the tree it was taken of, and a round of
    backup stores exactly the files whose bytes, size and mtime the previous one did not
    hold anywhere."""
    rng = random.Random(seed)
    src = tmp_path / "src"
    for d in range(4):
        album(src / f"album-{d}", n=3, size=20_000 + d * 1000)
    name = policy("photos", source_yaml(src), backup_type="incremental")
    taken = [(run_backup(ctx, name).job_id, tree_state(src))]

    def files() -> list[Path]:
        return sorted(p for p in src.rglob("*") if p.is_file())

    def dirs() -> list[Path]:
        return sorted(p for p in src.rglob("*") if p.is_dir())

    for round_ in range(6):
        for step in range(5):
            op = rng.choice(["mvdir", "mvfile", "copy2", "copy", "edit", "lookalike",
                             "delete", "new"])
            fs, ds = files(), dirs()
            tag = f"{round_}-{step}"
            if op == "mvdir" and ds:
                d = rng.choice(ds)
                d.rename(d.parent / f"{d.name}.{tag}")
            elif op == "mvfile" and fs:
                f = rng.choice(fs)
                f.rename(rng.choice(ds or [src]) / f"moved-{tag}-{f.name}")
            elif op in ("copy2", "copy") and fs:
                f = rng.choice(fs)
                target = rng.choice(ds or [src]) / f"copy-{tag}-{f.name}"
                (shutil.copy2 if op == "copy2" else shutil.copyfile)(f, target)
            elif op == "edit" and fs:
                f = rng.choice(fs)
                with open(f, "ab") as out:
                    out.write(b"edited")
            elif op == "lookalike" and fs:
                f = rng.choice(fs)
                st = f.stat()
                data = bytearray(f.read_bytes())
                if data:
                    data[rng.randrange(len(data))] ^= 0xFF  # one byte, same size
                f.write_bytes(bytes(data))
                os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
            elif op == "delete" and len(fs) > 2:
                rng.choice(fs).unlink()
            else:
                (src / f"new-{tag}.txt").write_bytes(os.urandom(rng.randrange(1, 5000)))
        result = run_backup(ctx, name)
        state, before = tree_state(src), taken[-1][1]
        held = {(e["sha"], e["size"], e["mtime_ns"]) for e in before.values() if "sha" in e}
        new = sum(e["size"] for e in state.values()
                  if "sha" in e and (e["sha"], e["size"], e["mtime_ns"]) not in held)
        assert result.source_bytes == new, (round_, result.source_bytes, new)
        taken.append((result.job_id, state))
    for job_id, state in taken:
        restores_to(ctx, job_id, state, tmp_path / f"out-{job_id[:8]}")


def test_a_file_replaced_under_its_name_with_its_size_and_mtime_is_read(
        ctx: Context, policy, tmp_path: Path) -> None:
    """An editor's save (a new file renamed over the old one) that keeps the size and puts
    the mtime back: another inode at the same path is never taken for the old file; its
    bytes are read and stored."""
    src = tmp_path / "src"
    src.mkdir()
    plan = src / "seating.txt"
    plan.write_bytes(b"table 1: Ada, Grace\n" * 100)
    name = policy("plans", source_yaml(src), backup_type="incremental")
    run_backup(ctx, name)
    st = plan.stat()
    tmp = src / ".seating.txt.swp"
    tmp.write_bytes(b"table 1: Ada, Alan!\n" * 100)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    tmp.rename(plan)
    state = tree_state(src)
    inc = run_backup(ctx, name)
    assert inc.source_bytes == 2000
    restores_to(ctx, inc.job_id, state, tmp_path / "out")


def test_a_moved_file_is_taken_without_reading_only_under_its_own_name(tmp_path: Path) -> None:
    """The no-read match needs the name too: inode numbers are not stable on every file
    system (FAT, exFAT, sshfs number files anew at each mount)."""
    from vowvault.repository.tree import Entry
    from vowvault.sources.directory import _Elsewhere

    held = Entry(path="2027/IMG_0001.CR3", type="file", mode=0o644, uid=0, gid=0,
                 mtime_ns=10, ctime_ns=20, inode=77, size=5, sha256="a" * 64, backup="P",
                 offset=0)
    where = _Elsewhere(iter([held]))
    try:
        from types import SimpleNamespace

        st = SimpleNamespace(st_ino=77, st_size=5, st_mtime_ns=10, st_ctime_ns=20)
        assert where.same_file(st, "IMG_0001.CR3") is not None
        assert where.same_file(st, "IMG_0002.CR3") is None
    finally:
        where.close()


def test_a_chain_over_the_change_of_content_digest_restores_and_matches_by_either(
        ctx: Context, policy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full taken when files were recorded by SHA-256 (before 2026-12-03), then
    incrementals by BLAKE3: unchanged files keep the parent's SHA-256, a copied file is
    matched by hashing it with SHA-256 (the parent's digest), new files get BLAKE3; every
    backup restores and verifies."""
    from vowvault.repository import tree
    from vowvault.sources import directory

    src = tmp_path / "src"
    album(src / "album", n=3)
    name = policy("photos", source_yaml(src), backup_type="incremental")
    monkeypatch.setattr(directory, "CONTENT_DIGEST", "sha256")
    full = run_backup(ctx, name)
    monkeypatch.setattr(directory, "CONTENT_DIGEST", tree.CONTENT_DIGEST)
    state_full = tree_state(src)
    shutil.copy2(src / "album" / "IMG_0001.jpg", src / "IMG_0001 copy.jpg")
    (src / "new.txt").write_text("seating plan v2\n")
    state_inc = tree_state(src)
    inc = run_backup(ctx, name)
    i = info(ctx, inc.job_id)
    assert i["files_moved"] == 1 and i["files_unchanged"] == 3
    assert inc.source_bytes == len("seating plan v2\n")
    restores_to(ctx, full.job_id, state_full, tmp_path / "out-full")
    restores_to(ctx, inc.job_id, state_inc, tmp_path / "out-inc")
    assert verify_backup(ctx, inc.job_id).intact
    done = restore_backup(ctx, inc.job_id, to_dir=tmp_path / "out-again")
    assert done.validation["checksum_per_file"] == "BLAKE3 or SHA-256"


@pytest.mark.parametrize("algorithm", ["sha256", "blake3"])
def test_content_that_differs_from_its_recorded_digest_is_refused(algorithm: str) -> None:
    from vowvault.errors import IntegrityError
    from vowvault.repository import tree

    data = os.urandom(70_000)
    h = tree.content_hasher(algorithm)
    h.update(data)
    entry = tree.Entry(path="a.jpg", type="file", mode=0o644, uid=0, gid=0, mtime_ns=1,
                       size=len(data))
    entry.record_digest(algorithm, h.hexdigest())
    assert b"".join(tree._checked(entry, iter([data[:100], data[100:]]))) == data
    damaged = bytearray(data)
    damaged[random.randrange(len(data))] ^= 0x01
    with pytest.raises(IntegrityError, match=tree.digest_name(algorithm)):
        b"".join(tree._checked(entry, iter([bytes(damaged)])))
    entry.record_digest(algorithm, h.hexdigest())
    entry.sha256 = entry.blake3 = None
    with pytest.raises(IntegrityError, match="no recorded checksum"):
        b"".join(tree._checked(entry, iter([data])))
