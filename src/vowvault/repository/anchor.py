"""The audit anchor: the catalog's audit head, kept on every storage target.

A small object beside the repository marker, rewritten after each backup with the newest
audit row's id and hash and a MAC under the audit key. Whoever can rewrite the catalog but
not the storage cannot make the anchor agree with a chain whose newest rows were deleted
or rewritten (``engine.auditkey``). The data plane only stores and reads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from vowvault.errors import ObjectNotFound
from vowvault.storage import StorageBackend

NAME = "vowvault-audit-head.json"


@dataclass(frozen=True)
class Anchor:
    row_id: int
    row_hash: str
    written_at: str
    mac: str

    def to_bytes(self) -> bytes:
        return json.dumps({"vowvault": "audit-head", "row_id": self.row_id,
                           "row_hash": self.row_hash, "written_at": self.written_at,
                           "mac": self.mac}, sort_keys=True).encode()


def read_anchor(backend: StorageBackend) -> Anchor | None:
    """The target's anchor; None when it has none or it is unreadable."""
    try:
        doc = json.loads(backend.load(NAME))
        return Anchor(int(doc["row_id"]), str(doc["row_hash"]), str(doc["written_at"]),
                      str(doc["mac"]))
    except ObjectNotFound:
        return None
    except (ValueError, KeyError, TypeError):
        return None


def write_anchor(backend: StorageBackend, anchor: Anchor) -> None:
    """Keep the newer of the anchor there and ``anchor``."""
    current = read_anchor(backend)
    if current is None or current.row_id < anchor.row_id:
        backend.save(NAME, [anchor.to_bytes()])
