"""Every file comes back as it was (issue 15, finding 1), through the real CLI: names that
are not UTF-8, 255 bytes long, or hold newlines and control characters; a symlink whose
target is not UTF-8; hard links (three names of one file, in different directories); a
directory 2,000 levels deep (a path far beyond PATH_MAX); and an unreadable file, with
``on_unreadable: fail`` (one line, exit 1, the name shown escaped) and ``warn``."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cliutil import write_policy

from vowvault.sources.treewriter import remove_tree

DEPTH = 2000
ODD = [b"caf\xe9.jpg", "\u00e9".encode() * 127 + b"x", b"line\nbreak.txt",
       b"tab\tand\x01control", b"\xff\xfe", "Café Lumière — 婚礼.txt".encode()]


def _state(root: Path) -> dict[bytes, tuple]:
    """Everything a restore must reproduce, read by descriptors (any depth, any name):
    path -> (type, mode, mtime, size, sha256 or link target, hard-link group)."""
    state: dict[bytes, tuple] = {}
    inodes: dict[int, list[bytes]] = {}
    stack = [(b"", os.open(root, os.O_RDONLY | os.O_DIRECTORY))]
    while stack:
        rel, fd = stack.pop()
        try:
            for name in sorted(os.listdir(fd)):
                raw = os.fsencode(name)
                path = rel + b"/" + raw if rel else raw
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                content: object = None
                if stat.S_ISREG(st.st_mode):
                    f = os.open(name, os.O_RDONLY, dir_fd=fd)
                    with os.fdopen(f, "rb") as fh:
                        content = hashlib.sha256(fh.read()).hexdigest()
                    inodes.setdefault(st.st_ino, []).append(path)
                elif stat.S_ISLNK(st.st_mode):
                    content = os.fsencode(os.readlink(name, dir_fd=fd))
                state[path] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode),
                               st.st_mtime_ns, st.st_size if content else 0, content,
                               st.st_ino)
                if stat.S_ISDIR(st.st_mode):
                    stack.append((path, os.open(name, os.O_RDONLY | os.O_DIRECTORY,
                                                dir_fd=fd)))
        finally:
            os.close(fd)
    groups = {ino: tuple(sorted(paths)) for ino, paths in inodes.items()}
    return {p: (*v[:5], groups.get(v[5], ())) for p, v in state.items()}


def _make(src: Path) -> None:
    src.mkdir()
    for raw in ODD:
        with open(os.fsencode(src) + b"/" + raw, "wb") as f:
            f.write(b"photo " + raw)
    os.symlink(b"target-\xe9", os.fsencode(src) + b"/link\xe9")
    (src / "album").mkdir()
    (src / "album" / "IMG_1.jpg").write_bytes(os.urandom(50_000))
    (src / "shared").mkdir()
    os.link(src / "album" / "IMG_1.jpg", src / "shared" / "IMG_1.jpg")
    os.link(src / "album" / "IMG_1.jpg", src / "also-IMG_1.jpg")
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(DEPTH):
            os.mkdir("d", dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        leaf = os.open("bottom.txt", os.O_WRONLY | os.O_CREAT, 0o640, dir_fd=fd)
        os.write(leaf, b"at the bottom")
        os.close(leaf)
    finally:
        os.close(fd)


@pytest.fixture
def deep(tmp_path: Path) -> Iterator[Path]:
    """tmp_path, with every tree under it removed by descriptors afterwards (pytest's own
    clean-up recurses and would fail on them later)."""
    yield tmp_path
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in os.listdir(fd):
            if os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode & stat.S_IFDIR:
                remove_tree(fd, name)
    finally:
        os.close(fd)


def test_odd_names_hard_links_and_a_deep_tree_round_trip_exactly(cli, deep: Path) -> None:
    src = deep / "src"
    _make(src)
    cli("policies", "apply", str(write_policy(deep / "p.yaml",
                                              f"{{kind: directory, path: {src}}}",
                                              deep / "storage")))
    job = cli("backup", "run", "photos", "--direct").stdout.split()[1]
    out = deep / "out"
    cli("backup", "restore", job, "--to-dir", str(out))
    before, after = _state(src), _state(out)
    assert len(before) == len(ODD) + 1 + 5 + DEPTH + 1
    assert set(after) == set(before)
    for path in before:  # same type, mode, times, content; hard links still one file
        assert after[path][:5] == before[path][:5], path
        assert len(after[path][5]) == len(before[path][5]), path
    assert after[b"album/IMG_1.jpg"][5] == (b"album/IMG_1.jpg", b"also-IMG_1.jpg",
                                            b"shared/IMG_1.jpg")


@pytest.mark.parametrize("setting", ["fail", "warn"])
def test_an_unreadable_file_with_an_odd_name(cli, cli_env, deep: Path, setting: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to hand the file to another user")
    src = deep / "src"
    src.mkdir()
    (src / "ok.txt").write_text("fine")
    secret = os.fsencode(src) + b"/secret-\xe9\n.txt"
    with open(secret, "wb") as f:
        f.write(b"not for root")
    os.chown(secret, 65534, 65534)
    os.chmod(secret, 0o600)
    policy = write_policy(deep / "p.yaml", f"{{kind: directory, path: {src}, "
                                           f"on_unreadable: {setting}}}", deep / "storage")
    cli("policies", "apply", str(policy))
    vowvault = Path(sys.executable).with_name("vowvault")
    proc = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--",
                           str(vowvault), "backup", "run", "photos", "--direct"],
                          capture_output=True, text=True, env=cli_env, timeout=120)
    if setting == "fail":
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr
        assert "secret-\\xe9\\n.txt: Permission denied" in lines[0]
        assert "on_unreadable: warn" in lines[0]
    else:
        assert proc.returncode == 5, proc.stderr  # completed, with warnings
        assert "secret-\\xe9\\n.txt: Permission denied" in proc.stderr
        out = deep / "out"
        cli("backup", "restore", proc.stdout.split()[1], "--to-dir", str(out))
        assert sorted(os.listdir(out)) == ["ok.txt"]
