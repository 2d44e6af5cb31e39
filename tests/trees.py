"""Building file trees for tests and capturing what a restore must reproduce."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any


def tree_state(root: Path) -> dict[str, Any]:
    """Everything a restore must reproduce: type, mode, mtime, content hash, link target."""
    state: dict[str, Any] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = path.relative_to(root).as_posix()
            entry: dict[str, Any] = {"mode": st.st_mode, "mtime_ns": st.st_mtime_ns}
            if path.is_symlink():
                entry["link"] = os.readlink(path)
            elif path.is_file():
                entry["sha"] = hashlib.sha256(path.read_bytes()).hexdigest()
                entry["size"] = st.st_size
            state[rel] = entry
    return state


def make_tree(root: Path) -> None:
    """Photos, guest lists, symlinks, odd permissions and names, empty and large files."""
    (root / "gallery" / "raw").mkdir(parents=True)
    (root / "gallery" / "raw" / "IMG_0001.jpg").write_bytes(os.urandom(3_000_000))
    (root / "gallery" / "guests.json").write_text('{"guests": ["Ada", "Grace"]}\n' * 1000)
    (root / "gallery" / "latest").symlink_to("raw/IMG_0001.jpg")
    (root / "dangling").symlink_to("does/not/exist")
    (root / "empty.txt").touch()
    (root / "private.txt").write_text("seating plan\n")
    os.chmod(root / "private.txt", 0o600)
    (root / "locked").mkdir()
    (root / "locked" / "notes.md").write_text("# vows\n")
    os.chmod(root / "locked", 0o700)
    (root / "Café Lumière — 婚礼.txt").write_text("unicode name\n")
    with open(root / "big.bin", "wb") as f:  # larger than many frames, sparse on disk
        f.seek(20 * 1024 * 1024)
        f.write(b"end")
    os.mkfifo(root / "pipe")
    os.utime(root / "private.txt", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))


def backup_files(storage: Path) -> list[Path]:
    """The files a local target holds besides its repository marker (written once, on the
    target's first use, and kept) and the audit head (rewritten after each backup)."""
    from vowvault.repository import anchor, marker

    return [p for p in storage.rglob("*") if p.is_file()
            and p.name not in (marker.NAME, anchor.NAME)]
