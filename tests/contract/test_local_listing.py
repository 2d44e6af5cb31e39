"""The local backend lists only under the prefix asked for, at any depth, and never
follows a symlink out of its root."""

from __future__ import annotations

import os
from pathlib import Path

from vowvault.storage import open_backend


def test_listing_walks_only_the_prefix(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = open_backend(f"file://{root}")
    store.save("org/pol/bk1/data", [b"d"])
    store.save("org/pol/bk1/index", [b"i"])
    store.save("org/pol/bk2/data", [b"x"])
    # Elsewhere under the root: a tree too deep for any recursive walk, an unreadable
    # directory, and a symlink out of the root. None of it is visited.
    deep = root / "other"
    deep.mkdir(parents=True)
    depth = 1500
    fd = os.open(deep, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
    finally:
        os.close(fd)
    (root / "org" / "locked").mkdir()
    (root / "org" / "locked").chmod(0)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not an object")
    (root / "org" / "pol" / "bk1" / "escape").symlink_to(outside)
    try:
        assert [o.name for o in store.list("org/pol/bk1/")] == ["org/pol/bk1/data",
                                                                "org/pol/bk1/index"]
        assert [o.name for o in store.list("org/pol/bk")] == [
            "org/pol/bk1/data", "org/pol/bk1/index", "org/pol/bk2/data"]
        names = [o.name for o in store.list("")]  # the whole root: deep, iteratively
    finally:
        (root / "org" / "locked").chmod(0o700)
        remove_chain(deep, depth)
    assert "org/pol/bk1/escape/secret" not in names
    assert set(names) >= {"org/pol/bk1/data", "org/pol/bk2/data"}


def remove_chain(top: Path, depth: int) -> None:
    """Remove ``top/d/d/.../d`` bottom up (too deep for a recursive rmtree)."""
    fds = [os.open(top, os.O_RDONLY | os.O_DIRECTORY)]
    for _ in range(depth - 1):
        fds.append(os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
    while fds:
        fd = fds.pop()
        os.rmdir("d", dir_fd=fd)
        os.close(fd)
