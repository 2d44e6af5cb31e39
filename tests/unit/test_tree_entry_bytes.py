"""An index entry's line is the same bytes however it is made: chunks of an index are
compared and referenced by their bytes (docs/FORMAT.md, "Index references"), so the fast
encoding must equal the reference one (dataclasses.asdict, declaration order) for any
entry, and read back to the same entry."""

from __future__ import annotations

import base64
import json
import os
import random
from dataclasses import asdict

from vowvault.repository.tree import Entry

NAMES = ["a", "album/IMG_0001.jpg", "Café Lumière/婚礼.txt", "caf\udce9.jpg", "x\ny", ""]
OPTIONAL = {"size": int, "sha256": str, "target": str, "backup": str, "offset": int,
            "ctime_ns": int, "inode": int, "blake3": str}


def reference_line(e: Entry) -> bytes:
    data = {k: v for k, v in asdict(e).items() if v is not None}
    for key in ("path", "target"):
        value = data.get(key)
        if value is not None:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                data[f"{key}_b64"] = base64.b64encode(os.fsencode(value)).decode()
                del data[key]
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def test_entry_lines_are_the_reference_bytes_and_read_back() -> None:
    rng = random.Random(20261203)
    for _ in range(5000):
        kw: dict = {"path": rng.choice(NAMES), "type": rng.choice(["file", "dir", "symlink"]),
                    "mode": rng.randrange(0o7777), "uid": rng.randrange(70000),
                    "gid": rng.randrange(70000), "mtime_ns": rng.getrandbits(62)}
        for name, kind in OPTIONAL.items():
            if rng.random() < 0.5:
                if kind is int:
                    kw[name] = rng.getrandbits(rng.choice([1, 20, 63]))
                elif name == "target":  # a name: any bytes
                    kw[name] = rng.choice(NAMES[1:])
                else:  # ids and digests
                    kw[name] = rng.randbytes(rng.choice([16, 32])).hex()
        entry = Entry(**kw)
        line = entry.to_line()
        assert line == reference_line(entry)
        assert Entry.from_line(line) == entry
