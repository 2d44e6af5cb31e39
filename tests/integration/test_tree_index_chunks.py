"""An incremental tree backup's index grows with what changed, not with the tree (issue 20,
item 2): the index is cut into chunks by content, and a chunk the parent's index already
holds is a reference to where its bytes are. Real engine, local storage, SQLite catalog;
every backup restored and compared with the tree it was taken of."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest
from trees import tree_state

from vowvault.catalog.models import BackupJob
from vowvault.engine.backup import run_backup
from vowvault.engine.context import Context
from vowvault.engine.restore import restore_backup
from vowvault.engine.verify import verify_backup
from vowvault.errors import IntegrityError, VowvaultError
from vowvault.repository import tree as tree_format


def source_yaml(path: Path) -> str:
    return f"{{kind: directory, path: {path}}}"


def info(ctx: Context, job_id: str) -> dict:
    with ctx.catalog.read() as s:
        return dict(s.get(BackupJob, uuid.UUID(job_id)).source_info or {})


def many_files(root: Path, folders: int, per: int, rng: random.Random) -> None:
    for d in range(folders):
        folder = root / f"wedding-{d:03d}"
        folder.mkdir(parents=True)
        for i in range(per):
            (folder / f"guest-{i:04d}.txt").write_bytes(rng.randbytes(rng.randrange(1, 200)))


def test_an_unchanged_tree_adds_a_reference_not_an_index(ctx: Context, policy,
                                                         tmp_path: Path) -> None:
    src = tmp_path / "src"
    many_files(src, 30, 100, random.Random(1))
    name = policy("lists", source_yaml(src), backup_type="incremental")
    full = run_backup(ctx, name)
    first = info(ctx, full.job_id)
    assert first["index_bytes_written"] > 300_000  # 3,000 entries
    state = tree_state(src)
    same = run_backup(ctx, name)
    again = info(ctx, same.job_id)
    assert again["index_bytes_written"] == 0
    assert again["index_bytes_referenced"] == first["index_bytes_written"]
    assert full.job_id in again["references"]
    third = run_backup(ctx, name)  # references point at the bytes, never along a chain
    assert info(ctx, third.job_id)["references"] == [full.job_id]
    for job in (same, third):
        restore_backup(ctx, job.job_id, to_dir=tmp_path / f"out-{job.job_id[:8]}")
        assert tree_state(tmp_path / f"out-{job.job_id[:8]}") == state
        assert verify_backup(ctx, job.job_id).intact


def test_a_change_in_one_folder_writes_about_a_chunk(ctx: Context, policy,
                                                     tmp_path: Path) -> None:
    src = tmp_path / "src"
    many_files(src, 30, 100, random.Random(2))
    name = policy("lists", source_yaml(src), backup_type="incremental")
    full = info(ctx, run_backup(ctx, name).job_id)
    (src / "wedding-017" / "guest-0042.txt").write_text("table 9, vegan\n")
    (src / "wedding-017" / "late-rsvp.txt").write_text("plus one\n")
    state = tree_state(src)
    inc = run_backup(ctx, name)
    written = info(ctx, inc.job_id)["index_bytes_written"]
    # The changed folder's entries around the change, not the tree's 3,000.
    assert 0 < written < full["index_bytes_written"] / 5
    restore_backup(ctx, inc.job_id, to_dir=tmp_path / "out")
    assert tree_state(tmp_path / "out") == state


@pytest.fixture()
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of a few lines, so that small trees exercise cuts, references and merges."""
    monkeypatch.setattr(tree_format, "CHUNK_AVERAGE", 4)
    monkeypatch.setattr(tree_format, "CHUNK_MIN", 2)
    monkeypatch.setattr(tree_format, "CHUNK_MAX", 16)


@pytest.mark.parametrize("seed", [3, 11, 29])
def test_random_changes_over_a_chain_restore_every_backup(ctx: Context, policy, tmp_path: Path,
                                                          small_chunks: None, seed: int) -> None:
    """Generated: rounds of new, edited, deleted and renamed files and folders (the order of
    entries shifts, chunks are cut anew); each backup of the chain restores to exactly the
    tree it was taken of, verifies intact, and refers only to backups of the chain."""
    rng = random.Random(seed)
    src = tmp_path / "src"
    many_files(src, 6, 12, rng)
    name = policy("lists", source_yaml(src), backup_type="incremental")
    taken = [(run_backup(ctx, name).job_id, tree_state(src))]
    for round_ in range(6):
        for step in range(rng.randrange(0, 6)):
            files = sorted(p for p in src.rglob("*") if p.is_file())
            dirs = sorted(p for p in src.rglob("*") if p.is_dir())
            op = rng.choice(["new", "edit", "delete", "mvfile", "mvdir", "newdir"])
            if op == "new" or not files:
                (rng.choice(dirs or [src]) / f"n{round_}-{step}.txt").write_bytes(
                    rng.randbytes(rng.randrange(1, 300)))
            elif op == "edit":
                rng.choice(files).write_bytes(rng.randbytes(rng.randrange(1, 300)))
            elif op == "delete":
                rng.choice(files).unlink()
            elif op == "mvfile":
                f = rng.choice(files)
                f.rename(rng.choice(dirs or [src]) / f"m{round_}-{step}-{f.name}")
            elif op == "mvdir" and dirs:
                d = rng.choice(dirs)
                d.rename(d.parent / f"{d.name}-{round_}{step}")
            else:
                many_files(src / f"batch-{round_}-{step}", 1, rng.randrange(1, 20), rng)
        job = run_backup(ctx, name)
        refs = info(ctx, job.job_id)["references"]
        assert set(refs) <= {j for j, _ in taken}
        taken.append((job.job_id, tree_state(src)))
    for job_id, state in taken:
        out = tmp_path / f"out-{job_id[:8]}"
        restore_backup(ctx, job_id, to_dir=out)
        assert tree_state(out) == state
        assert verify_backup(ctx, job_id).intact


def test_a_damaged_index_it_refers_to_is_caught(ctx: Context, policy, tmp_path: Path) -> None:
    src = tmp_path / "src"
    many_files(src, 5, 40, random.Random(4))
    name = policy("lists", source_yaml(src), backup_type="incremental")
    full = run_backup(ctx, name)
    inc = run_backup(ctx, name)
    assert info(ctx, inc.job_id)["index_bytes_written"] == 0
    index = next(p for p in (tmp_path / "storage").rglob("index") if full.job_id in str(p))
    blob = bytearray(index.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    index.write_bytes(bytes(blob))
    report = verify_backup(ctx, inc.job_id, raise_on_problem=False)
    assert not report.intact
    with pytest.raises(VowvaultError):
        restore_backup(ctx, inc.job_id, to_dir=tmp_path / "out")
    assert not (tmp_path / "out" / "wedding-000").exists()


# -- the reader's checks, on index bytes made here ------------------------------------------


class _Ranges:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self, offset: int, length: int):
        yield self.data[offset:offset + length]


class _Reader:
    """A backup's index and nothing else (pure logic: what TreeReader does with it)."""

    def __init__(self, backup_id: str, index: bytes) -> None:
        self.backup_id, self.index = backup_id, index

    def stream(self, kind: str):
        yield self.index

    def ranges(self, kind: str) -> _Ranges:
        return _Ranges(self.index)


def _line(path: str, backup: str | None = None) -> bytes:
    e = tree_format.Entry(path=path, type="file", mode=0o100644, uid=0, gid=0, mtime_ns=1,
                          size=1, sha256="0" * 64, backup=backup, offset=0)
    return e.to_line()


def _digest(data: bytes) -> str:
    import blake3

    return blake3.blake3(data).hexdigest()


def test_the_reader_checks_what_a_reference_points_at() -> None:
    held = _line("a", "H") + _line("b")  # "b" names no backup: it is H's own
    holder = _Reader("H", b"x" * 7 + held)
    good = tree_format.ref_line(tree_format.Held("H", 7, len(held)), _digest(held))
    entries = list(tree_format.TreeReader(_Reader("N", good), {"H": holder}).entries())
    assert [(e.path, e.backup) for e in entries] == [("a", "H"), ("b", "H")]
    # A wrong digest, a range one byte off, an unknown holder, a reference inside a
    # reference: each is an integrity error, never other entries.
    for bad, refs in [
        (tree_format.ref_line(tree_format.Held("H", 7, len(held)), _digest(b"other")),
         {"H": holder}),
        (tree_format.ref_line(tree_format.Held("H", 6, len(held)), _digest(held)),
         {"H": holder}),
        (good, {}),
        (tree_format.ref_line(tree_format.Held("H", 0, len(good)), _digest(good)),
         {"H": _Reader("H", good)}),
    ]:
        with pytest.raises(IntegrityError):
            list(tree_format.TreeReader(_Reader("N", bad), refs).entries())
    # Checking a backup's own data passes references over without reading them.
    assert list(tree_format.TreeReader(_Reader("N", good), {}, expand=False).entries()) == []


def test_chunks_are_cut_alike_by_writer_and_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """Generated: an index written against a parent's chunk table reads back as the same
    lines, and the chunk table read back from it names exactly the places its bytes are."""
    import io

    monkeypatch.setattr(tree_format, "CHUNK_AVERAGE", 4)
    monkeypatch.setattr(tree_format, "CHUNK_MIN", 2)
    monkeypatch.setattr(tree_format, "CHUNK_MAX", 9)
    rng = random.Random(8)
    lines = [_line(f"f{i:04d}", "P") for i in range(300)]
    out = io.BytesIO()
    w = tree_format.IndexWriter(out)
    for ln in lines:
        w.add(ln)
    w.close()
    parent = _Reader("P", out.getvalue())
    table = tree_format.TreeReader(parent).chunk_table()
    for _round in range(20):
        new = list(lines)
        for _ in range(rng.randrange(0, 6)):
            i = rng.randrange(len(new))
            if rng.random() < 0.5:
                new.pop(i)
            else:
                new.insert(i, _line(f"x{rng.random()}", "N"))
        out = io.BytesIO()
        w = tree_format.IndexWriter(out, table)
        for ln in new:
            w.add(ln)
        w.close()
        child = tree_format.TreeReader(_Reader("N", out.getvalue()), {"P": parent})
        assert [ln for ln, _ in child.lines()] == new
        assert w.holders <= {"P"}
        for digest, where in child.chunk_table().items():
            src = parent.index if where.backup == "P" else out.getvalue()
            assert _digest(src[where.offset:where.offset + where.length]) == digest


def test_scrub_does_not_bring_back_a_backup_whose_index_holder_is_damaged(
        ctx: Context, policy, tmp_path: Path) -> None:
    """Scrub reads a backup's own objects only: a dependant of a damaged backup stays
    CORRUPTED until that one is restorable again (found by review)."""
    from vowvault.domain import BackupStatus
    from vowvault.engine import scrub

    src = tmp_path / "src"
    many_files(src, 5, 40, random.Random(4))
    name = policy("lists", source_yaml(src), backup_type="incremental")
    full = run_backup(ctx, name)
    inc = run_backup(ctx, name)
    index = next(p for p in (tmp_path / "storage").rglob("index") if full.job_id in str(p))
    blob = bytearray(index.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    index.write_bytes(bytes(blob))
    verify_backup(ctx, full.job_id, raise_on_problem=False)
    plans = scrub.plan(ctx)
    for p in plans:
        p.todo = [c for c in p.copies if c.backup_id == inc.job_id]
    scrub.run(ctx, plans)
    with ctx.catalog.read() as s:
        assert s.get(BackupJob, uuid.UUID(inc.job_id)).status == BackupStatus.CORRUPTED
    with pytest.raises(VowvaultError):
        restore_backup(ctx, inc.job_id, to_dir=tmp_path / "out")


def test_references_are_bounded_and_exact_to_the_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    """Merged references cover at most RUN_MAX bytes and readers refuse a range larger than
    REF_MAX (memory stays bounded); an index whose last line has no newline is referenced
    to its exact bytes (found by review)."""
    import io

    monkeypatch.setattr(tree_format, "CHUNK_AVERAGE", 4)
    monkeypatch.setattr(tree_format, "CHUNK_MIN", 2)
    monkeypatch.setattr(tree_format, "CHUNK_MAX", 9)
    monkeypatch.setattr(tree_format, "RUN_MAX", 2000)
    lines = [_line(f"f{i:04d}", "P") for i in range(200)]
    parent = _Reader("P", b"".join(lines)[:-1])  # no newline at the very end
    table = tree_format.TreeReader(parent).chunk_table()
    for digest, where in table.items():
        assert _digest(parent.index[where.offset:where.offset + where.length]) == digest
    out = io.BytesIO()
    w = tree_format.IndexWriter(out, table)
    for ln in lines[:-1]:  # all but the last line: every chunk is referenced
        w.add(ln)
    w.close()
    refs = [ln for ln in out.getvalue().splitlines() if tree_format.is_ref(ln + b"\n")]
    assert len(refs) > 1
    biggest = max(h.length for h in table.values())
    for ref in refs:
        held = tree_format._parse_ref(ref)[0]
        assert held.length <= max(2000, biggest)
    child = tree_format.TreeReader(_Reader("N", out.getvalue()), {"P": parent})
    assert [ln for ln, _ in child.lines()] == lines[:-1]
    huge = tree_format.ref_line(tree_format.Held("P", 0, tree_format.REF_MAX + 1), "0" * 64)
    with pytest.raises(IntegrityError, match="oversized"):
        list(tree_format.TreeReader(_Reader("N", huge), {"P": parent}).entries())
